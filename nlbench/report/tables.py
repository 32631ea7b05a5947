"""Step 3 of the report: the paper's Tables 3 and 4 (ours beside the published numbers, as markdown,
LaTeX and CSV) and the summary tables of every run outside them."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources

from .cells import Cell, Index, config_diff, expected_runs, split_versions
from .output import Section, Writer, missing_md, row_label
from .records import (DATASET_NAMES, HEADLINE, NOISE_KIND_ORDER, RULE_WORDS, SCORING_RULES, Run, method_name,
                      method_sort_key, num, scale_description)


def cell_text(c: Cell | None, *, paper: tuple | None, bold: bool, tex: bool = False, show_paper: bool) -> str:
    """``mean (lo–hi, n=k)``: the mean over runs, its 95% Student's t interval, the run count (``n=k of
    K*`` when the cell is short of the protocol); ``[x]`` the paper's value."""
    dash = "--" if tex else "—"
    if c is None or (c.n == 0 and c.n_diverged == 0):
        ours = dash
    elif c.n == 0:
        ours = f"diverged ({c.n_diverged})"
    else:
        ours = f"{c.mean:.2f}"
        if bold:
            ours = f"\\textbf{{{ours}}}" if tex else f"**{ours}**"
        h = c.ci
        inner = (f"{c.mean - h:.2f}{'--' if tex else '–'}{c.mean + h:.2f}, " if h is not None else "") + f"n={c.n}"
        if c.short:
            inner += (f" of {c.asked}" if c.asked is not None and c.n < c.asked else "") + \
                     (f", {len(c.draws)} draw" if len(c.draws) < c.min_draws else "")
        ours += f" ({inner})" + (("$^{*}$" if tex else "*") if c.short else "")
        if c.n_diverged:
            ours += f"$^{{\\dagger{c.n_diverged}}}$" if tex else f" †{c.n_diverged}"
        if c.n_collapsed:
            ours += f"$^{{\\ddagger{c.n_collapsed}}}$" if tex else f" ‡{c.n_collapsed}"
    if show_paper:
        ours += f" [{paper[0]:.2f}]" if paper else (" [--]" if tex else " [—]")
    return ours


#: a cell whose mean is within this many points of chance (100 / K) is chance-level: never bold as the best
CHANCE_MARGIN = 5.0


def chance_level(c: Cell) -> bool:
    """The cell's mean is within :data:`CHANCE_MARGIN` points of guessing (100 / K for K classes), or every
    one of its runs collapsed: such a cell is never shown as the best of its column."""
    if c.mean is None:
        return False
    k = next((r.num_classes for r in c.runs if r.num_classes), None)
    return (k is not None and c.mean <= 100.0 / k + CHANCE_MARGIN) or (c.n > 0 and c.n_collapsed >= c.n)


def scale_words(scale: str, runs: list[Run]) -> str:
    """``scale=cpu`` with the scale's one-line description (from the records' config) when it has one,
    then what the runs of that scale actually trained (:func:`protocol_words`): a scale's description is
    written for CIFAR, and the dataset config decides the rest (digits at ``scale=paper`` is an MLP)."""
    at = [r for r in runs if r.scale == scale]
    desc = scale_description(scale, at)
    protocol = protocol_words(at)
    return f"scale={scale}" + (f" ({desc})" if desc else "") + (f"; as run: {protocol}" if protocol else "")


def protocol_words(runs: list[Run]) -> str:
    """What the runs trained, from their records: backbone (options), epochs, training images (and the share
    held out as a noisy validation split), augmentation; distinct protocols joined by ' | ' (in order of first appearance)."""
    seen: dict[str, None] = {}   # ordered set
    for r in runs:
        e, d = r.effective, r.rec.get("data") or {}
        if not e.get("backbone"):
            continue
        opts = ", ".join(f"{k} {v}" for k, v in sorted((e.get("backbone_options") or {}).items()))
        parts = [e["backbone"] + (f" ({opts})" if opts else "")]
        epochs = (e.get("train") or {}).get("epochs")
        if epochs:
            parts.append(f"{epochs} epochs")
        if d.get("num_train"):   # the split's size varies by a sample with the seed: its fraction is the protocol
            vs = r.rec.get("val_split") or {}
            n, frac = d["num_train"] + (vs.get("num_val") or 0), vs.get("fraction")
            parts.append(f"{n:,} training images" + (f" ({frac:.0%} held out: noisy validation)" if frac else ""))
        aug = e.get("augment") or {}
        crop, flip = aug.get("crop_pad"), aug.get("flip")
        parts.append("+".join(w for w, on in (("crop", crop), ("flip", flip)) if on) or "no augmentation")
        seen[", ".join(parts)] = None
    return " | ".join(seen)


def partial_words(n_runs: int, n_asked: int, methods_with_runs: int, methods_asked: int) -> str:
    """'partial: n of k runs, m of M methods' (empty when complete), for a table or figure's own title."""
    if n_runs >= n_asked and methods_with_runs >= methods_asked:
        return ""
    return f"partial: {n_runs} of {n_asked} runs, {methods_with_runs} of {methods_asked} methods"


def _tex(s: str) -> str:
    return s.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_") \
        .replace("#", "\\#")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for v in r])
    return buf.getvalue()


# ---------------------------------------------------------------------------------- paper data
def paper_csv(name: str) -> list[dict]:
    with resources.files("nlbench").joinpath("paper_data", name).open() as f:
        return list(csv.DictReader(f))


@dataclass(frozen=True)
class Column:
    group: str        # "Symmetric"
    sub: str          # "20%"
    noise: str        # the noise config name the cell is made of
    metric: str       # "acc_last" or a history key ("webvision_top5")
    paper: tuple      # key into the paper values


@dataclass(frozen=True)
class Block:
    dataset: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class TableSpec:
    key: str
    experiment: str
    title: str
    blocks: tuple[Block, ...]
    paper_note: str
    in_paper: bool = True      # False: a table of our own (digits), no paper protocol or value to compare


def _t3_columns() -> tuple[Column, ...]:
    cols = [Column("Symmetric", f"{int(r * 100)}%", f"sym{r}", "acc_last", ("sym", r)) for r in (0.2, 0.4, 0.6, 0.8)]
    cols += [Column("Asymmetric", f"{int(r * 100)}%", f"asym{r}", "acc_last", ("asym", r)) for r in (0.2, 0.3, 0.4)]
    return tuple(cols)


TABLES = (
    TableSpec("table3", "table3", "Table 3: CIFAR-10 / CIFAR-100, synthetic noise",
              (Block("cifar10", _t3_columns()), Block("cifar100", _t3_columns())),
              "the paper's Table 3 (ResNet18, paper protocol, mean of five runs)"),
    TableSpec("table4", "table4", "Table 4: real-world noise",
              (Block("clothing1m", (Column("Clothing1M", "top-1", "real", "test_top1", ("clothing1m_top1",)),)),
               Block("webvision", (Column("WebVision", "top-1", "real", "webvision_top1", ("webvision_top1",)),
                                   Column("WebVision", "top-5", "real", "webvision_top5", ("webvision_top5",)),
                                   Column("ILSVRC12", "top-1", "real", "imagenet_top1", ("ilsvrc12_top1",)),
                                   Column("ILSVRC12", "top-5", "real", "imagenet_top5", ("ilsvrc12_top5",))))),
              "the paper's Table 4 (ResNet-50, paper protocol)"),
    TableSpec("digits", "digits", "Digits: every method on the embedded default (not in the paper)",
              (Block("digits", (Column("Clean", "0%", "clean", "acc_last", ("clean", 0.0)),
                                *(Column("Symmetric", f"{int(r * 100)}%", f"sym{r}", "acc_last", ("sym", r))
                                  for r in (0.2, 0.4, 0.6, 0.8)),
                                Column("Asymmetric", "40%", "asym0.4", "acc_last", ("asym", 0.4)))),),
              "no paper value: digits is not in the paper", in_paper=False),
)


def paper_values() -> dict:
    """(table, dataset, method, column paper key) -> (mean, std or None)."""
    out = {}
    for r in paper_csv("table3.csv"):
        out[("table3", r["dataset"], r["method"], (r["noise_type"], float(r["noise_rate"])))] = \
            (float(r["acc_mean"]), float(r["acc_std"]))
    for r in paper_csv("table4.csv"):
        for k, v in r.items():
            if k not in ("method", "paper_name") and v:
                ds = "clothing1m" if k.startswith("clothing1m") else "webvision"
                out[("table4", ds, r["method"], (k,))] = (float(v), None)
    return out


def _fill_order(e) -> tuple:
    """The order in which a short cell's missing runs are listed: seed by seed, each on both draws."""
    return (e.seed, e.noise_seed)


def _needed(missing: list, have: list[Run], min_runs: int, min_draws: int) -> list:
    """The fewest of a short cell's missing runs (in :func:`_fill_order`) that would complete it."""
    n, draws, out = len(have), {r.noise_seed for r in have}, []
    for e in sorted(missing, key=_fill_order):
        if n >= min_runs and len(draws) >= min_draws:
            break
        if n >= min_runs - (min_draws - len(draws)) and e.noise_seed in draws and len(draws) < min_draws:
            continue   # the last places go to a draw the cell lacks
        out.append(e)
        n += 1
        draws.add(e.noise_seed)
    return out


def _pairs_text(runs: list[Run]) -> str:
    from .protocol import seeds_by_draw

    return "; ".join(f"noise_seed {ns}: seed {', '.join(map(str, s))}"
                     for ns, s in seeds_by_draw([r.pair for r in runs]))


def _exclusion_note(out: list[Run]) -> str:
    from .protocol import load_protocol

    proto = load_protocol()
    sel = [r for r in out if proto.exclusion(r) == "selection"]
    dirty = [r for r in out if proto.exclusion(r) == "dirty"]
    parts = []
    if sel:
        parts.append(f"left out: {len(sel)} run{'s' * (len(sel) > 1)} that chose this method's default "
                     f"({_pairs_text(sel)}; conf/protocol.yaml)")
    if dirty:
        parts.append(f"left out: {len(dirty)} run{'s' * (len(dirty) > 1)} from an uncommitted tree "
                     f"({_pairs_text(dirty)}; rerun at a clean commit with force=true)")
    return "; ".join(parts)


def best_resolved(cells: dict, rule: str) -> set:
    """Keys of the cells to bold in a column: the highest mean, only when its paired difference against
    every other eligible cell of the column is resolved (the 95% t interval over shared runs excludes 0).
    Chance-level and single-run cells are never bold, nor a cell with no other eligible cell beside it."""
    from .protocol import paired

    ok = {k: c for k, c in cells.items() if c.mean is not None and c.n >= 2 and not chance_level(c)}
    if len(ok) < 2:   # nothing to be the best of
        return set()
    top = max(ok, key=lambda k: ok[k].mean)
    for k, c in ok.items():
        if k != top and paired(ok[top].runs, c.runs, rule).sign != 1:
            return set()
    return {top}


def table_section(spec: TableSpec, scale: str, index: Index, paper: dict, w: Writer,
                  results_arg: str) -> Section:
    """One paper table at one scale, under the protocol (conf/protocol.yaml): the headline scoring rule's
    table with its ranking against the paper, and the other rule's table beside it. A selection run of a
    method or a record from an uncommitted tree is left out of its cell and named in the cell's note."""
    from .protocol import load_protocol

    proto = load_protocol()
    res = w.result
    expected = expected_runs(spec.experiment, scale)
    min_runs, min_draws = proto.min_runs(spec.experiment), proto.min_draws(spec.experiment)
    asked = defaultdict(int)
    matched: dict[tuple, list[Run]] = defaultdict(list)
    excluded: dict[tuple, list[Run]] = defaultdict(list)
    absent: dict[tuple, list] = defaultdict(list)
    unavailable = {}
    for e in expected:
        key = (e.method, e.dataset, e.noise)
        asked[key] += 1
        runs, err = index.match(e, scale)
        if err:
            unavailable[e.method] = err
        res.used.update(r.path for r in runs)
        keep = [r for r in runs if proto.exclusion(r) is None]
        excluded[key] += [r for r in runs if proto.exclusion(r)]
        matched[key] += keep
        if not runs:
            absent[key].append(e)
    if min_runs:   # list only what completes each short cell, in fill order
        missing = [e for key, es in absent.items()
                   for e in _needed(es, [r for r in matched[key] if r.ok], min_runs, min_draws)]
    else:
        missing = [e for es in absent.values() for e in es]
    missing.sort(key=lambda e: expected.index(e))
    res.missing[(spec.key, scale)] = missing
    res.unavailable[(spec.key, scale)] = unavailable
    exp_methods = list(dict.fromkeys(e.method for e in expected))
    rules = [proto.headline_rule] + [r for r in SCORING_RULES if r != proto.headline_rule]
    outputs = {rule: _rule_table(spec, scale, paper, w, rule, rule == proto.headline_rule, matched, excluded,
                                 asked, min_runs, min_draws, exp_methods) for rule in rules}
    head_md, files = outputs[proto.headline_rule]
    body = head_md + "\n" + missing_md(spec.experiment, scale, expected, missing, unavailable, results_arg)
    for rule in rules[1:]:
        md, f = outputs[rule]
        if md:
            body += "\n\n" + md
            files += f
    return Section(f"{spec.title} (scale={scale})", body, files)


def _rule_table(spec, scale, paper, w, rule, headline, matched, excluded, asked, min_runs, min_draws,
                exp_methods) -> tuple[str, list[str]]:
    """The markdown, LaTeX and CSV of one paper table under one scoring rule; the ranking against the
    paper with the headline rule. ('', []) for a second rule under which no cell differs."""
    md_parts, tex_parts, csv_rows = [], [], []
    ranked: list[tuple] = []   # (dataset, data tag, column, {method: our cell}, {method: paper mean})
    differs = False
    for block in spec.blocks:
        ds = block.dataset
        runs_ds = [r for (m, d, n), rs in matched.items() if d == ds for r in rs]
        tags = sorted({r.data_tag for r in runs_ds}) or [None]
        paper_methods = {m for (t, d, m, _) in paper if t == spec.key and d == ds}
        methods = sorted(set(exp_methods) | set(paper_methods) | {r.method for r in runs_ds}, key=method_sort_key)
        for tag in tags:
            label = next((r.data_label for r in runs_ds if r.data_tag == tag), "no runs yet")
            rows: list[tuple[str, str]] = []
            cells: dict[tuple, Cell] = {}
            notes = []
            for m in methods:
                variants = {}
                for col in block.columns:
                    key = (m, ds, col.noise)
                    rs = [r for r in matched.get(key, []) if r.data_tag == tag]
                    out = [r for r in excluded.get(key, []) if r.data_tag == tag]
                    n_asked = min_runs or asked.get(key) or None
                    for v, vr, note in (split_versions(rs) if rs else []):
                        variants.setdefault(v, None)
                        cells[(m, v, col)] = Cell(vr, n_asked, col.metric, v, note, rule=rule, min_draws=min_draws)
                        differs |= any(r.acc(rule) != r.acc("single" if rule == "ensemble" else "ensemble")
                                       for r in vr if r.ok)
                        if note:
                            notes.append(f"{row_label(m, v)}, {col.group} {col.sub}: {note}")
                    if out and (exc := _exclusion_note(out)):
                        notes.append(f"{row_label(m, '')}, {col.group} {col.sub}: {exc}")
                rows += [(m, v) for v in (variants or [""])]
            bold = set()
            for col in block.columns:
                bold |= best_resolved({k: c for k, c in cells.items() if k[2] == col}, rule)

            def text(m, v, col, tex=False):
                c = cells.get((m, v, col))
                return cell_text(c, paper=paper.get((spec.key, ds, m, col.paper)), bold=(m, v, col) in bold,
                                 tex=tex, show_paper=m in paper_methods)

            if spec.in_paper:
                for col in block.columns:
                    pub = {m: p[0] for m in methods if (p := paper.get((spec.key, ds, m, col.paper)))}
                    ours = {m: c for m in pub if (c := cells.get((m, "", col))) is not None and c.mean is not None}
                    ranked.append((ds, tag, col, ours, pub))
            n_asked_block = sum((min_runs or asked.get((m, ds, col.noise), 0)) for m in exp_methods
                                for col in block.columns if asked.get((m, ds, col.noise)))
            ok_runs = [r for (m, v, col), c in cells.items() for r in c.runs if r.ok]
            partial = partial_words(len({r.path for r in ok_runs}), n_asked_block,
                                    len({r.method for r in ok_runs if r.method in exp_methods}), len(exp_methods))
            heading = (f"**{DATASET_NAMES.get(ds, ds)}** · {scale_words(scale, runs_ds)} · data: {label} · "
                       f"{HEADLINE}, {RULE_WORDS[rule]}; mean (95% t interval, runs) [{spec.paper_note}]"
                       + (f" · **{partial}**" if partial else ""))
            header = ["Method"] + [f"{c.group} {c.sub}" if c.group != c.sub else c.sub for c in block.columns]
            md_rows = [[row_label(m, v)] + [text(m, v, col) for col in block.columns] for m, v in rows]
            md_parts.append(heading + "\n\n" + md_table(header, md_rows)
                            + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else ""))
            tex_parts.append(_tex_block(spec, block, scale, label, rows,
                                        {k: text(*k, tex=True) for k in ((m, v, col) for m, v in rows
                                                                         for col in block.columns)}, rule))
            for m, v in rows:
                for col in block.columns:
                    c = cells.get((m, v, col)) or Cell([], min_runs or asked.get((m, ds, col.noise)) or None,
                                                       col.metric, v, rule=rule, min_draws=min_draws)
                    p = paper.get((spec.key, ds, m, col.paper))
                    csv_rows.append([spec.key, scale, rule, ds, tag or "", m, method_name(m), v,
                                     f"{col.group} {col.sub}", col.noise, col.metric, c.mean, c.std, c.ci, c.n,
                                     c.asked, len(c.draws), c.n_diverged, c.n_collapsed, int((m, v, col) in bold),
                                     p[0] if p else None, p[1] if p else None, " ".join(map(str, c.seeds)),
                                     _pairs_text([r for r in c.runs if r.ok]), c.note,
                                     " ".join(c.paths)])
    if not headline and not differs:
        return "", []
    complete = (f"a cell is complete with {min_runs} runs over {min_draws} noise draws (conf/protocol.yaml); "
                if min_runs else "")
    legend = ("Cells: the mean over the runs that completed, the 95% Student's t "
              "interval of the mean (t over runs, n - 1 degrees of freedom) and the run count; "
              f"{complete}`*` a cell short of that (fewer runs, or fewer noise draws); `†k` k runs diverged "
              "(failed, not in the mean); `‡k` k runs ended collapsed (one class takes >= 90% of the test "
              "predictions, or the labelled set is one class; in the mean, and counted here); `[x]` the paper's "
              "value. Bold: the best of a column, only where its paired difference against every other cell "
              "(runs on the same noise_seed and seed) has a 95% t interval that excludes zero, never a "
              f"single-run cell or one within {CHANCE_MARGIN:g} points of chance (100/K). Left out of every cell: "
              "a method's selection runs (conf/protocol.yaml) and records from uncommitted trees, named in the "
              "notes. The CSV lists each cell's std, interval half-width and record files. "
              + (f"Numbers at scale={scale} " + ("are paper-protocol numbers." if scale == "paper" else
                                                 "come from a reduced protocol and are not comparable to the paper's.")
                 if spec.in_paper else "The paper has no such table: the dataset's own protocol, nothing to "
                                       "compare with the paper's numbers."))
    stem = f"{spec.key}_{scale}" + ("" if headline else f"_{rule}")
    title = f"## {spec.title} (scale={scale})" + ("" if headline else f": {rule} rule")
    md = title + "\n\n" + "\n".join(md_parts) + "\n" + legend + "\n"
    w.result.tables[f"{stem}.md"] = md
    w.text(f"{stem}.md", md)
    w.text(f"{stem}.tex", "\n".join(tex_parts))
    w.text(f"{stem}.csv", csv_text(["table", "scale", "rule", "dataset", "data", "method", "method_name", "variant",
                                    "column", "noise", "metric", "mean", "std", "ci95_half_width", "n", "n_asked",
                                    "noise_draws", "n_diverged", "n_collapsed", "best", "paper_mean", "paper_std",
                                    "seeds", "runs", "note", "records"], csv_rows))
    files = [f"{stem}.md", f"{stem}.tex", f"{stem}.csv"]
    if not headline:
        intro = (f"The same table with {RULE_WORDS[rule]} (the official Co-teaching and JoCoR code reports "
                 "this); one-network methods are unchanged.\n\n")
        return intro + "\n".join(md_parts), files
    body = "\n".join(md_parts) + "\n" + legend + "\n"
    rank_md = ranking_md(ranked, scale, spec, w, stem, rule)
    if rank_md:
        body += "\n\n" + rank_md
        files += [f"{stem}_ranking.md", f"{stem}_ranking.csv"]
    return body, files


def _order(values: dict[str, float]) -> str:
    return " > ".join(method_name(m) for m in sorted(values, key=lambda m: (-values[m], method_sort_key(m))))


def ranking_md(ranked: list[tuple], scale: str, spec: TableSpec, w: Writer, stem: str, rule: str) -> str:
    """Per column of a paper table: our order of the methods that have both a cell here and a published
    value, against the paper's order of the same methods. A method pair counts as agreeing or disagreeing
    with the paper only where it is resolved here: the 95% t interval of the mean paired difference (runs
    on the same noise_seed and seed, at least 3) excludes zero; every other pair is unresolved and listed
    apart. Written to ``<stem>_ranking.md/.csv``; '' when no column has two such methods."""
    from .protocol import paired

    rows, csv_rows, flips, open_ = [], [], [], []
    for ds, tag, col, ours, pub in ranked:
        ms = sorted(ours, key=method_sort_key)
        if len(ms) < 2:
            continue
        mean = {m: ours[m].mean for m in ms}
        agree = disagree = unresolved = 0
        where = f"{DATASET_NAMES.get(ds, ds)} {col.group} {col.sub}"
        for i, a in enumerate(ms):
            for b in ms[i + 1:]:
                if pub[a] == pub[b]:
                    continue   # the paper orders nothing
                hi, lo = (a, b) if pub[a] > pub[b] else (b, a)   # the paper's order
                p = paired(ours[hi].runs, ours[lo].runs, rule)
                verdict = {1: "agrees", -1: "disagrees", 0: "unresolved"}[p.sign]
                agree += p.sign == 1
                disagree += p.sign == -1
                unresolved += p.sign == 0
                d = ("—" if p.mean is None else f"{p.mean:+.2f}"
                     + (f" ± {p.half_width:.2f}" if p.half_width is not None else ""))
                line = (f"{where}: {method_name(hi)} - {method_name(lo)} = {d} over {p.n} shared runs "
                        f"(the paper: {pub[hi]:.2f} > {pub[lo]:.2f})")
                (flips if p.sign == -1 else open_ if p.sign == 0 else []).append(line)
                csv_rows.append([spec.key, scale, rule, ds, tag or "", col.noise, hi, lo, mean[hi], mean[lo],
                                 p.mean, p.half_width, p.n, verdict, pub[hi], pub[lo]])
        rows.append([where, str(len(ms)), _order(mean), _order({m: pub[m] for m in ms}),
                     str(agree), str(disagree), str(unresolved)])
    if not rows:
        return ""
    md = (f"### Ranking against the paper ({spec.title.split(':')[0]}, scale={scale}, {rule} rule)\n\n"
          "Per column, the methods that have a cell here and a published value, ordered by our mean and by the "
          "paper's. Each pair the paper orders is compared on its paired differences (our accuracy of the "
          "paper's higher method minus the lower one, on runs with the same noise_seed and seed): it agrees "
          "or disagrees with the paper only where the 95% t interval of the mean difference excludes zero "
          "over at least 3 shared runs; every other pair is unresolved, and no order is claimed for it. "
          + ("" if scale == "paper" else f"scale={scale} is a reduced protocol: a disagreeing pair is a finding "
             "about this scale, not evidence against the paper.") + "\n\n"
          + md_table(["Setting", "methods", "our order (means)", "the paper's order", "agree", "disagree",
                      "unresolved"], rows)
          + ("\nDisagreeing pairs (mean paired difference ± 95% half-width):\n\n" + "".join(f"- {f}\n" for f in flips)
             if flips else "\nNo resolved pair disagrees with the paper.\n")
          + ("\nUnresolved pairs:\n\n" + "".join(f"- {f}\n" for f in open_) if open_ else ""))
    w.result.tables[f"{stem}_ranking.md"] = md
    w.text(f"{stem}_ranking.md", md)
    w.text(f"{stem}_ranking.csv", csv_text(["table", "scale", "rule", "dataset", "data", "noise", "paper_above",
                                            "paper_below", "mean_above", "mean_below", "paired_diff",
                                            "ci95_half_width", "n_pairs", "verdict", "paper_mean_above",
                                            "paper_mean_below"], csv_rows))
    return md


def _tex_block(spec: TableSpec, block: Block, scale: str, label: str, rows, texts, rule: str = "ensemble") -> str:
    cols = block.columns
    groups = []
    for c in cols:
        if groups and groups[-1][0] == c.group:
            groups[-1][1] += 1
        else:
            groups.append([c.group, 1])
    lines = [f"% {spec.title}; {DATASET_NAMES.get(block.dataset, block.dataset)}; scale={scale}; data: {label}.",
             "% Generated by `python -m nlbench report` from the run records; needs \\usepackage{booktabs}.",
             "\\begin{table}[t]", "\\centering", "\\small", f"\\begin{{tabular}}{{l{'c' * len(cols)}}}", "\\toprule"]
    if any(n > 1 for _, n in groups):
        lines.append(" & " + " & ".join(f"\\multicolumn{{{n}}}{{c}}{{{_tex(g)}}}" for g, n in groups) + " \\\\")
        rules, start = [], 2
        for _, n in groups:
            rules.append(f"\\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        lines.append("".join(rules))
        lines.append("Method & " + " & ".join(_tex(c.sub) for c in cols) + " \\\\")
    else:
        lines.append("Method & " + " & ".join(_tex(f"{c.group} {c.sub}") for c in cols) + " \\\\")
    lines.append("\\midrule")
    for m, v in rows:
        lines.append(_tex(row_label(m, v)) + " & " + " & ".join(texts[(m, v, c)] for c in cols) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}",
              f"\\caption{{{_tex(DATASET_NAMES.get(block.dataset, block.dataset))}, scale={_tex(scale)}, "
              f"data: {_tex(label)}. {_tex(HEADLINE)}, {_tex(RULE_WORDS[rule])}; mean (95\\% t interval, runs); "
              f"[\\,] {_tex(spec.paper_note)}.}}", "\\end{table}", ""]
    return "\n".join(lines)


def noise_sort_key(r: Run):
    """Noise settings in reading order: clean, symmetric, asymmetric, ... by rate, then by name."""
    k = r.noise_kind
    return (NOISE_KIND_ORDER.index(k) if k in NOISE_KIND_ORDER else len(NOISE_KIND_ORDER),
            float((r.rec.get("noise") or {}).get("nominal_rate") or 0), r.noise)


def summary_sections(runs: list[Run], w: Writer) -> list[Section]:
    """Every run no paper table or figure used: per dataset and scale, noise x method rows, scored by the
    protocol's rule (conf/protocol.yaml) like the paper tables."""
    from .protocol import load_protocol

    rule = load_protocol().headline_rule
    sections = []
    by_ds = defaultdict(list)
    for r in runs:
        by_ds[(r.dataset, r.scale)].append(r)
    for (ds, scale) in sorted(by_ds):
        rs_all = by_ds[(ds, scale)]
        md_parts, csv_rows = [], []
        for tag in sorted({r.data_tag for r in rs_all}):
            rs = [r for r in rs_all if r.data_tag == tag]
            groups = defaultdict(list)
            for r in rs:
                groups[(r.noise, r.method, config_diff(r))].append(r)
            keys = sorted(groups, key=lambda k: (noise_sort_key(groups[k][0]), method_sort_key(k[1]), k[2]))
            rows = []
            for noise, m, diff in keys:
                actual = [num((r.rec.get("noise") or {}).get("actual_rate")) for r in groups[(noise, m, diff)]]
                actual = [a for a in actual if a is not None]
                noise_txt = noise + (f" ({100 * sum(actual) / len(actual):.1f}% actual)" if actual else "")
                for v, vr, note in split_versions(groups[(noise, m, diff)]):
                    last, best = Cell(vr, None, "acc_last", rule=rule), Cell(vr, None, "acc_best", rule=rule)
                    variant = ", ".join(diff) + (f"; {v}" if v and diff else v)
                    div = [r.seed for r in vr if r.status == "diverged"]
                    col = [r.seed for r in vr if r.collapsed]
                    dirty = [r.seed for r in vr if r.dirty]
                    notes = ([f"{len(div)} diverged (seed {', '.join(map(str, div))})"] if div else []) + \
                            ([f"{len(col)} collapsed (seed {', '.join(map(str, col))}; in the mean)"] if col else []) + \
                            ([f"{len(dirty)} from an uncommitted tree (seed {', '.join(map(str, dirty))}; in the "
                              "mean, its code recorded nowhere)"] if dirty else []) + \
                            ([note] if note else [])

                    def ms(c):
                        return "—" if c.mean is None else f"{c.mean:.2f}" + (f" ± {c.std:.2f}" if c.std is not None else "")
                    rows.append([noise_txt, row_label(m, variant), ms(last), ms(best),
                                 f"{last.n}: {', '.join(str(r.seed) for r in vr if r.ok)}" if last.n else "0",
                                 "; ".join(notes)])
                    csv_rows.append([ds, scale, tag, noise, (sum(actual) / len(actual)) if actual else None, m,
                                     variant, last.mean, last.std, best.mean, best.std, last.n, len(div), len(col),
                                     " ".join(str(r.seed) for r in vr), "; ".join(notes), " ".join(r.path for r in vr)])
                    w.result.other.update(r.path for r in vr)
            md_parts.append(f"**{DATASET_NAMES.get(ds, ds)}** · {scale_words(scale, rs)} · data: {rs[0].data_label}\n\n"
                            + md_table(["Noise", "Method", "Last epoch", "Best epoch (test-selected)", "Seeds",
                                        "Notes"], rows))
        legend = (f"Last epoch: the headline ({RULE_WORDS[rule]}), mean ± sample std over seeds. Best epoch: "
                  "the best test accuracy "
                  "of each run, selected on the test set (optimistic; papers mix the two). A method label in "
                  "parentheses lists what differs from this checkout's default config.")
        md = "\n".join(md_parts) + "\n" + legend + "\n"
        stem = f"summary_{ds}_{scale}"
        w.result.tables[f"{stem}.md"] = md
        w.text(f"{stem}.md", md)
        w.text(f"{stem}.csv", csv_text(["dataset", "scale", "data", "noise", "actual_rate", "method", "variant",
                                        "last_mean", "last_std", "best_mean", "best_std", "n", "n_diverged",
                                        "n_collapsed", "seeds", "note", "records"], csv_rows))
        sections.append(Section(f"{DATASET_NAMES.get(ds, ds)}, scale={scale}", md, [f"{stem}.md", f"{stem}.csv"]))
    return sections
