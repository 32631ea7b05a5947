"""Step 3 of the report, beyond the paper: each network of a two-network method beside its ensemble
(GSS-DB against GSS-SB like for like), every method with a verdict scored as a detector of mislabeled
samples beside the reference detectors, and the noise rate a method estimated against the truth.

Each function takes the runs (and detector records) of one report and returns REPORT.md sections,
writing a markdown and a CSV table per section."""
from __future__ import annotations

from collections import defaultdict

from ..store import flatten
from .cells import Cell, config_diff
from .output import Section, Writer, row_label
from .records import DATASET_NAMES, Run, method_sort_key, num
from .tables import csv_text, md_table, noise_sort_key


def _last(r: Run, key: str) -> float | None:
    """The last history value of ``key`` (the last epoch that logged it)."""
    for h in reversed(r.history):
        if key in h:
            return num(h[key])
    return None


def _ms(values: list[float], digits: int = 2, pct: float = 1.0) -> str:
    v = [x * pct for x in values if x is not None]
    if not v:
        return "—"
    m = sum(v) / len(v)
    if len(v) < 2:
        return f"{m:.{digits}f}"
    sd = (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def _groups(runs: list[Run], want) -> dict:
    g = defaultdict(list)
    for r in runs:
        if r.ok and want(r):
            g[(r.dataset, r.scale, r.data_tag, r.noise, r.method, config_diff(r))].append(r)
    return g


def _sort(k):
    ds, scale, tag, noise, m, diff = k
    return (ds, scale, tag, noise, method_sort_key(m), diff)


# ------------------------------------------------------------------------ networks and ensembles
def networks_section(runs: list[Run], w: Writer) -> list[Section]:
    """Each network of the two-network methods beside the ensemble they are tested on, and GSS-DB
    against GSS-SB on the same setting both ways: its ensemble, and its single networks."""
    metric = "test_top1"
    multi = _groups(runs, lambda r: _last(r, f"{metric}_net1") is not None)
    if not multi:
        return []
    rows, csv_rows = [], []
    for k in sorted(multi, key=_sort):
        ds, scale, tag, noise, m, diff = k
        rs = multi[k]
        n0, n1 = [_last(r, f"{metric}_net0") for r in rs], [_last(r, f"{metric}_net1") for r in rs]
        ens, single = [_last(r, f"{metric}_ensemble") for r in rs], [(a + b) / 2 for a, b in zip(n0, n1)]
        head = (rs[0].rec.get("final") or {}).get("headline", "ensemble")
        rows.append([f"{DATASET_NAMES.get(ds, ds)} {noise} ({scale})", row_label(m, ", ".join(diff)), _ms(n0), _ms(n1),
                     _ms(single), _ms(ens), head, str(len(rs))])
        csv_rows.append([ds, scale, tag, noise, m, ", ".join(diff), _mean(n0), _mean(n1), _mean(single), _mean(ens),
                         head, len(rs), " ".join(r.path for r in rs)])
    md = ("Last-epoch test accuracy (%) of each network, their mean, and the ensemble the method is tested on "
          "(mean ± std over seeds). `headline` is what the method's tables show.\n\n"
          + md_table(["Setting", "Method", "network 0", "network 1", "mean of the networks", "ensemble",
                      "headline", "runs"], rows))
    # GSS-DB against GSS-SB, like for like
    sb = _groups(runs, lambda r: r.method == "gss_sb")
    lines = []
    for k in sorted(multi, key=_sort):
        ds, scale, tag, noise, m, diff = k
        if m != "gss_db":
            continue
        ref = sb.get((ds, scale, tag, noise, "gss_sb", diff))   # the same departures from the defaults
        if not ref:
            continue
        db = multi[k]
        seeds = sorted({r.seed for r in db} & {r.seed for r in ref})
        sb_acc = _mean([r.acc_last for r in ref])
        ens = _mean([_last(r, f"{metric}_ensemble") for r in db])
        single = _mean([(_last(r, f"{metric}_net0") + _last(r, f"{metric}_net1")) / 2 for r in db])
        lines.append(f"- {DATASET_NAMES.get(ds, ds)} {noise} ({scale}{', ' + ', '.join(diff) if diff else ''}): "
                     f"GSS-DB's ensemble {ens:.2f} vs GSS-SB "
                     f"{sb_acc:.2f} ({ens - sb_acc:+.2f}); GSS-DB's single networks {single:.2f} vs GSS-SB "
                     f"({single - sb_acc:+.2f}); {len(db)} GSS-DB and {len(ref)} GSS-SB runs"
                     + (f", seeds in common: {', '.join(map(str, seeds))}" if seeds else ""))
    if lines:
        md += ("\n**GSS-DB against GSS-SB, like for like.** GSS-SB is one network; GSS-DB's headline is the "
               "ensemble of two. Both comparisons:\n\n" + "\n".join(lines) + "\n")
    w.result.tables["networks.md"] = md
    w.text("networks.md", md)
    w.text("networks.csv", csv_text(["dataset", "scale", "data", "noise", "method", "variant", "net0", "net1",
                                     "mean_nets", "ensemble", "headline", "n", "records"], csv_rows))
    return [Section("Two-network methods: each network and the ensemble", md, ["networks.md", "networks.csv"])]


# ------------------------------------------------------------------------ mislabeled-sample detection
def _cleanlab_label(d: dict) -> str:
    f = d.get("final") or {}
    stop = (", each fold early-stopped on its held-out noisy labels" if f.get("stop") == "heldout"
            else ", each fold's last epoch")   # records from before the held-out stop ran to the last epoch
    return f"cleanlab, {f.get('folds')}-fold out-of-sample{stop} (seed {d['seed']})"


def _detector_order(d: dict):
    return (d["dataset"], d["scale"], d["noise"]["name"], d["seed"], (d.get("final") or {}).get("stop") == "heldout")


def detector_section(runs: list[Run], detectors: list[dict], w: Writer) -> list[Section]:
    """Every method with a verdict (``det_*`` in its history) as a detector of mislabeled samples at the
    last epoch, and the best epoch by AUROC, beside the CE-loss reference (``det_loss_auroc`` of the same
    run's network, ``diagnose_train``) and the cleanlab / CE-loss detectors on out-of-sample
    probabilities (``python -m nlbench detect``)."""
    g = _groups(runs, lambda r: _last(r, "det_auroc") is not None or _last(r, "det_loss_auroc") is not None)
    if not g and not detectors:
        return []
    rows, csv_rows = [], []
    for k in sorted(g, key=_sort):
        ds, scale, tag, noise, m, diff = k
        rs = g[k]
        prec, rec_, auc = ([_last(r, f"det_{x}") for r in rs] for x in ("precision", "recall", "auroc"))
        best_auc = [max((num(h.get("det_auroc")) or 0.0 for h in r.history), default=None) for r in rs]
        loss_auc = [_last(r, "det_loss_auroc") for r in rs]
        setting = f"{DATASET_NAMES.get(ds, ds)} {noise} ({scale})"
        rows.append([setting, row_label(m, ", ".join(diff)), _ms(prec, 3), _ms(rec_, 3), _ms(auc, 3),
                     _ms([b for b, a in zip(best_auc, auc) if a is not None], 3), _ms(loss_auc, 3), str(len(rs))])
        csv_rows.append([ds, scale, tag, noise, m, ", ".join(diff), _mean(prec), _mean(rec_), _mean(auc),
                         _mean(best_auc) if any(a is not None for a in auc) else None, _mean(loss_auc), len(rs),
                         " ".join(r.path for r in rs)])
    for d in sorted(detectors, key=_detector_order):
        f = d.get("final") or {}
        setting = f"{DATASET_NAMES.get(d['dataset'], d['dataset'])} {d['noise']['name']} ({d['scale']})"
        rows.append([setting, _cleanlab_label(d),
                     f"{f['det_precision']:.3f}", f"{f['det_recall']:.3f}", f"{f['det_auroc']:.3f}", "—",
                     f"{f['det_loss_auroc']:.3f}", "1"])
        variant = f"folds={f.get('folds')}" + (" stop=heldout" if f.get("stop") == "heldout" else "")
        csv_rows.append([d["dataset"], d["scale"], "", d["noise"]["name"], "cleanlab_cv", variant,
                         f["det_precision"], f["det_recall"], f["det_auroc"], None, f["det_loss_auroc"], 1, d["_path"]])
    md = ("Each method's own verdict on the given labels (Method.verdict: DivideMix / GSS-SSL the GMM clean "
          "probability, Co-teaching / JoCoR the small-loss selection, GSS the pool's probability of the given "
          "label, ELR+ its targets) scored as a detector of mislabeled samples against the true labels at the "
          "last epoch: flagged = verdict below 0.5; precision and recall of the flagged set, AUROC of the "
          "verdict; `best AUROC` over epochs (selected with the truth: optimistic). `CE-loss AUROC`: the loss "
          "of the given label under the run's own network as the score (runs with `diagnose_train=true`). "
          "cleanlab rows: confident learning (`find_label_issues`) on K-fold out-of-sample probabilities of "
          "cross entropy, its loss AUROC on the same probabilities.\n\n"
          + md_table(["Setting", "Detector", "precision", "recall", "AUROC", "best AUROC", "CE-loss AUROC",
                      "runs"], rows))
    w.result.tables["detection.md"] = md
    w.text("detection.md", md)
    w.text("detection.csv", csv_text(["dataset", "scale", "data", "noise", "method", "variant", "precision",
                                      "recall", "auroc", "best_auroc", "loss_auroc", "n", "records"], csv_rows))
    return [Section("Which samples are mislabeled: methods as detectors", md, ["detection.md", "detection.csv"])]


# ------------------------------------------------------------------------ the noise rate when nobody tells you
def rate_section(runs: list[Run], w: Writer, detectors: list[dict] | None = None) -> list[Section]:
    """Runs with ``forget_rate: estimate``: the rate they estimated against the true one, and their accuracy
    against the same method told the rate (``forget_rate: auto``) on the same setting and seeds; beside
    them, confident learning's estimate from the reference detector records (``nlbench detect``)."""
    est = [r for r in runs if r.ok and r.param("forget_rate") == "estimate" and _last(r, "forget_rate_est") is not None]
    refs = [d for d in detectors or [] if (d.get("final") or {}).get("noise_rate_est") is not None]
    if not est and not refs:
        return []
    told = defaultdict(list)
    for r in runs:
        if r.ok and isinstance(r.param("forget_rate"), (int, float)):
            told[(r.dataset, r.scale, r.noise, r.method)].append(r)
    groups = defaultdict(list)
    for r in est:
        groups[(r.dataset, r.scale, r.noise, r.method)].append(r)
    rows, csv_rows = [], []
    for k in sorted(groups, key=lambda k: (k[0], k[1], k[2], method_sort_key(k[3]))):
        ds, scale, noise, m = k
        rs = groups[k]
        truth = [num((r.rec.get("noise") or {}).get("actual_rate")) for r in rs]
        e = [_last(r, "forget_rate_est") for r in rs]
        err = [a - b for a, b in zip(e, truth) if a is not None and b is not None]
        seeds = {r.seed for r in rs}
        t = [r for r in told.get(k, []) if r.seed in seeds]
        acc_e, acc_t = Cell(rs, None), Cell(t, None)
        told_rate = _mean([r.param("forget_rate") for r in t])
        rows.append([f"{DATASET_NAMES.get(ds, ds)} {noise} ({scale})", row_label(m, ""), _ms(truth, 3), _ms(e, 3),
                     _ms(err, 3), "—" if told_rate is None else f"{told_rate:.3f}", _ms([r.acc_last for r in t]),
                     _ms([r.acc_last for r in rs]),
                     "—" if acc_t.mean is None else f"{acc_e.mean - acc_t.mean:+.2f}", f"{len(rs)} / {len(t)}"])
        csv_rows.append([ds, scale, noise, m, _mean(truth), _mean(e), _mean(err), told_rate, acc_t.mean, acc_e.mean,
                         len(rs), len(t), " ".join(r.path for r in rs + t)])
    for d in sorted(refs, key=_detector_order):
        f = d["final"]
        setting = f"{DATASET_NAMES.get(d['dataset'], d['dataset'])} {d['noise']['name']} ({d['scale']})"
        err = (None if f.get("noise_rate_true") is None else f["noise_rate_est"] - f["noise_rate_true"])
        rows.append([setting, _cleanlab_label(d),
                     _ms([f.get("noise_rate_true")], 3), f"{f['noise_rate_est']:.3f}", _ms([err], 3),
                     "—", "—", "—", "—", "1 / —"])
        csv_rows.append([d["dataset"], d["scale"], d["noise"]["name"], "cleanlab_cv", f.get("noise_rate_true"),
                         f["noise_rate_est"], err, None, None, None, 1, 0, d["_path"]])
    md = ("`forget_rate: estimate`: the noise rate estimated from the networks and the noisy labels after the "
          "warm-up (never from the true labels), against the true rate of the training set, and the last-epoch "
          "accuracy it gave against the same method told the config's expected rate (`forget_rate: auto`, same "
          "seeds). Error = estimate - truth; estimated - told in accuracy points (negative: estimating cost "
          "accuracy). cleanlab rows: confident learning's estimate (the off-diagonal mass of its joint) on "
          "K-fold out-of-sample probabilities of cross entropy (`python -m nlbench detect`), a reference "
          "that trains nothing else.\n\n"
          + md_table(["Setting", "Method", "true rate", "estimate", "error", "told rate", "acc. told",
                      "acc. estimated", "estimated - told", "runs est. / told"], rows))
    w.result.tables["noise_rate.md"] = md
    w.text("noise_rate.md", md)
    w.text("noise_rate.csv", csv_text(["dataset", "scale", "noise", "method", "true_rate", "estimate", "error",
                                       "told_rate", "acc_told", "acc_estimated", "n_estimated", "n_told", "records"],
                                      csv_rows))
    return [Section("The noise rate when nobody tells you", md, ["noise_rate.md", "noise_rate.csv"])]


# ------------------------------------------------------------------------ what a user without clean labels sees
def validation_section(runs: list[Run], w: Writer) -> list[Section]:
    """Every run with a noisy validation split (``val_fraction`` > 0), per cell: the test accuracy at the
    last and best epoch beside what chooses without clean labels (the noisy validation accuracy, and the
    test accuracy at the epoch it picks), the method's selection against the truth, the memorised share,
    the wall time and the collapsed runs. Paper-table runs are included (this is not a paper table)."""
    from .protocol import load_protocol

    rule = load_protocol().headline_rule   # test accuracy by the protocol's scoring rule, as the tables
    g = _groups(runs, lambda r: r.value("val_top1") is not None)
    if not g:
        return []
    rows, csv_rows = [], []
    for k in sorted(g, key=lambda k: (k[0], k[1], k[2], noise_sort_key(g[k][0]), method_sort_key(k[4]), k[5])):
        ds, scale, tag, noise, m, diff = k
        rs = sorted(g[k], key=lambda r: r.seed)
        vals = {c: [r.acc(rule, c[4:]) if c in ("acc_last", "acc_best") else r.value(c) for r in rs]
                for c in ("acc_last", "acc_best", "val_top1", "sel_precision",
                                                      "sel_recall", "memorized")}
        at_val = [num((r.rec.get("final") or {}).get("test_at_best_val")) for r in rs]
        se = [_binomial_se(v, (r.rec.get("val_split") or {}).get("num_val")) for v, r in zip(vals["val_top1"], rs)]
        minutes = [None if num(r.rec.get("wall_s")) is None else num(r.rec.get("wall_s")) / 60 for r in rs]
        col = [r.seed for r in rs if r.collapsed]
        setting = f"{DATASET_NAMES.get(ds, ds)} {noise} ({scale})"
        rows.append([setting, row_label(m, ", ".join(diff)), ", ".join(str(r.seed) for r in rs),
                     _ms(vals["acc_last"]), _ms(vals["acc_best"]), _ms(vals["val_top1"]), _ms(se, 1), _ms(at_val),
                     _ms(vals["sel_precision"], 1, 100), _ms(vals["sel_recall"], 1, 100),
                     _ms(vals["memorized"], 1, 100), _ms(minutes, 0),
                     f"{len(col)} (seed {', '.join(map(str, col))})" if col else "0"])
        csv_rows.append([ds, scale, tag, noise, m, ", ".join(diff), len(rs), " ".join(str(r.seed) for r in rs),
                         *(_mean(vals[c]) for c in ("acc_last", "acc_best", "val_top1")), _mean(se), _mean(at_val),
                         *(_mean(vals[c]) for c in ("sel_precision", "sel_recall", "memorized")), _mean(minutes),
                         len(col), " ".join(r.path for r in rs)])
    md = ("Runs that held out a noisy validation split (`val_fraction`), per cell, mean ± std over seeds: test "
          "accuracy (%) at the last epoch (the headline) and at the best epoch (selected on the test set: "
          "optimistic); the accuracy on the held-out split against its **noisy** labels at the last epoch, "
          "with its binomial standard error (`val SE`, sqrt(p(1 - p) / n) on the split's n samples: two "
          "candidates closer than about that are not told apart by the split), "
          "and the test accuracy at the epoch where that noisy validation accuracy peaked (what a user without "
          "clean labels would pick); the last epoch's selection precision and recall (%) of the samples a "
          "method trains on as clean (DivideMix / GSS-SSL: the labelled set; Co-teaching / JoCoR: the kept "
          "small-loss samples) against the true labels; the memorised share (%) of mislabeled training samples "
          "predicted as their wrong label (`diagnose_train=true`); wall minutes as recorded (runs that shared "
          "the machine took longer); collapsed runs (in the means).\n\n"
          + md_table(["Setting", "Method", "seeds", "last", "best (test-selected)", "noisy val (last)", "val SE",
                      "test at best noisy val", "sel. precision", "sel. recall", "memorised", "minutes",
                      "collapsed"], rows))
    w.result.tables["validation.md"] = md
    w.text("validation.md", md)
    w.text("validation.csv", csv_text(["dataset", "scale", "data", "noise", "method", "variant", "n", "seeds",
                                       "last", "best", "val_last", "val_se", "test_at_best_val", "sel_precision",
                                       "sel_recall", "memorized", "minutes", "n_collapsed", "records"], csv_rows))
    return [Section("Without clean labels: noisy validation, selection, memorisation, time", md,
                    ["validation.md", "validation.csv"])]


def _default_label(per_noise: dict, variants: dict, on: list[str] = ()) -> str:
    """``default`` with the values the default has for the keys its variants change, read from a run of
    the first setting ranked on (a default can differ by noise: ELR+'s asym values are not its sym ones)."""
    keys = sorted({d.split("=", 1)[0] for diff in variants for d in diff})
    run = next((per_noise[n][0] for n in on if per_noise.get(n)), next(iter(per_noise.values()))[0])
    flat = flatten(run.effective)
    vals = [f"{k}={flat.get(k, flat.get('method_params.' + k))}" for k in keys
            if k in flat or "method_params." + k in flat]
    return "default" + (f" ({', '.join(vals)})" if vals else "")


def _pairs_words(pairs) -> str:
    from .protocol import seeds_by_draw

    return ", ".join(f"noise_seed {ns} seed {'/'.join(map(str, sds))}" for ns, sds in seeds_by_draw(pairs))


def _binomial_se(acc_pct: float | None, n) -> float | None:
    """The standard error (points) of an accuracy of ``acc_pct`` % measured on ``n`` samples."""
    if acc_pct is None or not isinstance(n, int) or n <= 0:
        return None
    p = acc_pct / 100
    return 100 * (p * (1 - p) / n) ** 0.5


# ------------------------------------------------------------------------ choosing a variant without clean labels
def selection_section(runs: list[Run], w: Writer) -> list[Section]:
    """A method's variants (runs that differ from its default in some config value) ranked by what a user
    without clean labels can see: the last-epoch accuracy on the noisy validation split, averaged over
    seeds and then over the noise settings that the most variants have run (so one variant run on more
    settings does not skew the ranking). A variant with a collapsed run there is out; one missing a setting
    is listed, unranked. The test accuracy over the same settings is shown and ranked beside it, chooses
    nothing, and says afterwards whether the test set agrees."""
    from .protocol import load_protocol

    rule = load_protocol().headline_rule
    fam: dict = defaultdict(lambda: defaultdict(dict))
    for (ds, scale, tag, noise, m, diff), rs in _groups(runs, lambda r: r.value("val_top1") is not None).items():
        fam[(ds, scale, tag, m)][diff][noise] = sorted(rs, key=lambda r: r.seed)
    blocks, csv_rows = [], []
    for (ds, scale, tag, m), variants in sorted(fam.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2],
                                                                            method_sort_key(kv[0][3]))):
        if len(variants) < 2:
            continue
        cover, example = defaultdict(int), {}
        for per_noise in variants.values():
            for noise, rs in per_noise.items():
                cover[noise] += 1
                example[noise] = rs[0]
        top = max(cover.values())
        if top < 2:
            continue
        order = lambda n: noise_sort_key(example[n])   # noqa: E731
        # candidates are compared on the same runs: per setting, only the (noise_seed, seed) pairs every
        # variant that ran it has (a variant's extra seeds are counted beside, never in the score)
        common = {}
        for n in cover:
            sets = [{r.pair for r in pn[n]} for pn in variants.values() if n in pn]
            common[n] = set.intersection(*sets)
        on = sorted((n for n in cover if cover[n] == top and common[n]), key=order)
        shown = sorted((n for n in cover if cover[n] >= 2 and common[n]), key=order)   # + settings fewer variants ran
        if not on:
            continue
        rows = []
        for diff, per_noise in variants.items():
            # one run per (noise_seed, seed): a clean rerun of a record from an uncommitted tree replaces it
            cells = {n: list({r.pair: r for r in sorted(per_noise[n], key=lambda r: bool(r.dirty), reverse=True)
                              if r.pair in common[n]}.values()) for n in shown if n in per_noise}
            val = {n: _mean(r.value("val_top1") for r in rs) for n, rs in cells.items()}
            test = {n: _mean(r.acc(rule) for r in rs) for n, rs in cells.items()}
            ranked_cells = {n: cells[n] for n in on if n in cells}
            # sampling error of the split only (not the seed-to-seed spread): per setting the mean of
            # k runs' binomial SEs over sqrt(k), combined over the settings averaged
            se_n = [_mean(_binomial_se(r.value("val_top1"), (r.rec.get("val_split") or {}).get("num_val"))
                          for r in rs) for rs in ranked_cells.values()]
            complete = len(ranked_cells) == len(on)   # every run here has a val_top1 (the grouping's filter)
            se = (None if not complete or any(s is None for s in se_n) else
                  sum((s / len(rs) ** 0.5) ** 2 for s, rs in zip(se_n, ranked_cells.values())) ** 0.5 / len(on))
            collapsed = [f"{n} seed {r.seed}" for n, rs in ranked_cells.items() for r in rs if r.collapsed]
            rows.append({"diff": diff, "label": ", ".join(diff) or _default_label(per_noise, variants, on),
                         "cells": cells, "val": val, "test": test, "se": se, "collapsed": collapsed,
                         "complete": complete,
                         "score": _mean(val[n] for n in on) if complete else None,
                         "test_score": _mean(test[n] for n in on) if complete else None})
        ranked = [r for r in rows if r["complete"] and not r["collapsed"]]
        ranked.sort(key=lambda r: -r["score"])
        by_test = sorted((r for r in ranked if r["test_score"] is not None), key=lambda r: -r["test_score"])
        for r in ranked:   # equal numbers share a rank (the same count of correct split samples)
            r["rank"] = 1 + sum(round(x["score"], 6) > round(r["score"], 6) for x in ranked)
        for r in by_test:
            r["test_rank"] = 1 + sum(round(x["test_score"], 6) > round(r["test_score"], 6) for x in by_test)
        rows.sort(key=lambda r: (r.get("rank", len(rows) + 1), r["label"]))
        mark = lambda n: n if n in on else f"{n} (not ranked on)"   # noqa: E731
        head = ["Variant", *[f"noisy val {mark(n)}" for n in shown], "mean (chooses)", "split SE", "rank",
                *[f"test {mark(n)}" for n in shown], "test mean (chooses nothing)", "test rank", "out"]
        table = []
        for r in rows:
            out = ("collapsed: " + ", ".join(r["collapsed"]) if r["collapsed"] else
                   "" if r["complete"] else "not run on " + ", ".join(n for n in on if n not in r["cells"]))
            table.append([r["label"],
                          *[f"{r['val'][n]:.2f} ({len(r['cells'][n])})" if r["val"].get(n) is not None else "—"
                            for n in shown],
                          "—" if r["score"] is None else f"{r['score']:.2f}",
                          "—" if r["se"] is None else f"{r['se']:.1f}", str(r.get("rank", "—")),
                          *[f"{r['test'][n]:.2f}" if r["test"].get(n) is not None else "—" for n in shown],
                          "—" if r["test_score"] is None else f"{r['test_score']:.2f}",
                          str(r.get("test_rank", "—")), out or "—"])
            csv_rows.append([ds, scale, tag, m, r["label"], " ".join(on), r["score"], r["se"], r.get("rank"),
                             r["test_score"], r.get("test_rank"), len(r["collapsed"]),
                             " ".join(f"{n}:{len(r['cells'][n])}" for n in shown if n in r["cells"]),
                             " ".join(x.path for rs in r["cells"].values() for x in rs)])
        title = f"{row_label(m, '')} on {DATASET_NAMES.get(ds, ds)} ({scale}), ranked on {', '.join(on)}"
        if len(ranked) >= 2:
            a, b = ranked[0], ranked[1]
            gap_se = ((a["se"] or 0) ** 2 + (b["se"] or 0) ** 2) ** 0.5
            tied = [r["label"] for r in ranked if r["rank"] == 1]
            verdict = (f"The noisy split ties {len(tied)} variants at the top ({a['score']:.2f}): "
                       + "; ".join(tied) + ". It cannot choose between them." if len(tied) > 1 else
                       f"The noisy split chooses **{a['label']}** ({a['score']:.2f}); next {b['label']} "
                       f"({b['score']:.2f}): a gap of {a['score'] - b['score']:.2f} points, "
                       + ("more than" if a["score"] - b["score"] > gap_se else "within")
                       + f" the split's sampling error of the gap ({gap_se:.1f}; the seed-to-seed spread adds "
                       f"to it). The test set ranks it {a.get('test_rank', '—')} of {len(by_test)}.")
        elif ranked:
            verdict = f"Only {ranked[0]['label']} can be ranked here."
        else:
            verdict = "No variant can be ranked here."
        blocks.append(f"**{title}** (runs per setting in brackets)\n\n" + md_table(head, table) + "\n\n" + verdict
                      + "\n\nCompared on the same runs: " + "; ".join(
                          f"{n}: {_pairs_words(common[n])}" for n in shown) + ".")
    if not blocks:
        return []
    md = ("A method's variants (settings that differ from its default) ranked as a user without clean labels "
          "would: by the last-epoch accuracy (%) on the **noisy** validation split, the mean over seeds and "
          "then over the noise settings the most variants have run. A variant with a collapsed run there is "
          "out; one not run on every such setting is listed unranked. Every candidate is scored on the same runs: "
          "per setting, only the (noise_seed, seed) pairs that all of them ran. The split SE is the binomial sampling "
          "error of that mean alone; seeds spread further. The last-epoch test accuracy over the same "
          "settings is ranked beside it and chooses nothing.\n\n" + "\n\n".join(blocks))
    w.result.tables["selection.md"] = md
    w.text("selection.md", md)
    w.text("selection.csv", csv_text(["dataset", "scale", "data", "method", "variant", "ranked_on", "val_mean",
                                      "split_se", "rank", "test_mean", "test_rank", "n_collapsed", "runs",
                                      "records"], csv_rows))
    return [Section("Choosing a variant without clean labels", md, ["selection.md", "selection.csv"])]
