"""Run records -> the paper's tables and figures, a summary of every other run, and ``REPORT.md``.

``report(results_dir, out)`` is a pure function of the records under ``results_dir``: it never trains
and never parses logs. What it writes under ``out``:

- ``table3_<scale>.{md,tex,csv}``, ``table4_<scale>.{md,tex,csv}``: the paper's Tables 3 and 4, ours
  (mean +- std of the last-epoch accuracy over seeds, with the seed count; best per column in bold)
  beside the paper's published value (package data ``nlbench/paper_data/``).
- ``fig1_*``, ``fig3_*``, ``fig4_*`` (PNG and PDF): Figures 1, 3 and 4.
- ``summary_<dataset>_<scale>.{md,csv}``: every run that fits no paper table or figure.
- ``dynamics/``: per setting, test accuracy, memorisation, selection and GSS-pool curves over epochs.
- ``REPORT.md``: all of it on one page, with the runs still missing and the commands that make them.

Which records form a paper cell is decided by config, not by name: the experiment file behind a table
(``conf/experiment/table3.yaml``) is expanded, each run composed and validated exactly as ``run`` would,
and a record belongs to the cell when its effective config agrees with that expected config on every
key both have. So a cell never mixes scales, protocols, method hyperparameters or noise seeds. On top:
records of different data copies (the record's ``data.md5_ok``) go to separate blocks; two records of
one seed with different numbers (two code versions, or devices) split the cell into variants instead
of being averaged; a diverged run counts as a failed run of its cell (shown, never dropped).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shlex
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import store
from .store import flatten
from .experiments import as_dict, expand, experiment_names
from .registry import ConfigError

#: table names of registry keys; a method missing here appears under its registry name
METHOD_NAMES = {"ce": "CE", "gce": "GCE", "sl": "SL", "elr_plus": "ELR+", "coteaching": "Co-teaching",
                "jocor": "JoCoR", "dividemix": "DivideMix", "gss_sb": "GSS-SB", "gss_db": "GSS-DB",
                "gss_ssl": "GSS-SSL"}
METHOD_ORDER = list(METHOD_NAMES)
NOISE_KIND_ORDER = ["clean", "sym", "sym_other", "asym", "asym_super", "pairflip", "human", "real"]
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "clothing1m": "Clothing1M",
                 "webvision": "WebVision", "digits": "digits"}
HEADLINE = "last-epoch test accuracy (%)"


def method_name(m: str) -> str:
    return METHOD_NAMES.get(m, m)


def method_sort_key(m: str):
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


# ----------------------------------------------------------------------------------------- records
@dataclass
class Run:
    """One record, with the fields the report groups on read once."""

    path: str                   # relative to results_dir
    rec: dict
    method: str
    dataset: str
    scale: str
    noise: str
    noise_kind: str
    seed: int
    status: str
    acc_last: float | None
    acc_best: float | None
    data_tag: str               # official | nonofficial | unchecked | embedded | local
    data_label: str
    build: str                  # git commit (10 chars), "+dirty" when the tree had changes
    device: str

    @property
    def effective(self) -> dict:
        return self.rec.get("effective") or {}

    @property
    def history(self) -> list[dict]:
        h = self.rec.get("history")
        return h if isinstance(h, list) else []

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def value(self, metric: str) -> float | None:
        """``acc_last``/``acc_best`` from the final block, else the last epoch's value of a history key."""
        if metric in ("acc_last", "acc_best"):
            return getattr(self, metric)
        fin = self.rec.get("final") or {}
        v = fin.get(f"last_{metric}")
        if v is None and self.history:
            v = self.history[-1].get(metric)
        return _num(v)

    def resolve_auto(self, composed: dict) -> dict:
        """``composed`` (a config this checkout composes for the run's cell) with ``forget_rate: auto``
        resolved as the run resolved it: from the noise config and the class count alone (the record
        holds the number, never ``auto``)."""
        from .registry import ConfigError
        from .runner import resolve_auto_rates

        params = composed.get("method_params") if isinstance(composed, dict) else None
        if not isinstance(params, dict) or "auto" not in params.values():
            return composed
        noise = self.effective.get("noise") or composed.get("noise") or {}
        classes = (self.rec.get("data") or {}).get("classes") or []
        try:
            params = resolve_auto_rates(params, noise, dataset=self.dataset, num_classes=len(classes))
        except (ConfigError, KeyError, TypeError):   # a noise with no expected rate, or an odd old record
            return composed
        return {**composed, "method_params": params}

    def param(self, name: str):
        return (self.effective.get("method_params") or {}).get(name)


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def provenance(rec: dict) -> tuple[str, str]:
    """(tag, words) for the data copy a record was trained on; records of different tags never mix."""
    d = rec.get("data") or {}
    if "md5_ok" in d:
        return {True: ("official", "official files (MD5 verified)"),
                False: ("nonofficial", "local copy (files differ from the official MD5s)"),
                }.get(d["md5_ok"], ("unchecked", "files not checked against the official MD5s"))
    if d.get("source"):
        return "embedded", f"embedded ({d['source']})"
    return "local", "local files (official file lists, no checksum)"


def _malformed(rec) -> str | None:
    if rec is None:
        return "unreadable or not valid JSON"
    if not isinstance(rec, dict):
        return "not a JSON object"
    if "schema_version" not in rec:
        return "not a run record (no schema_version)"
    missing = [k for k in ("method", "dataset", "scale", "seed", "status") if rec.get(k) is None]
    if not isinstance(rec.get("noise"), dict) or not rec["noise"].get("name"):
        missing.append("noise.name")
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(rec["seed"], int) or isinstance(rec["seed"], bool):
        return f"seed {rec['seed']!r} is not an integer"
    if rec["status"] not in store.FINAL_STATUSES:
        return f"status {rec['status']!r} is not one of {', '.join(store.FINAL_STATUSES)}"
    if rec["status"] == "completed" and _num((rec.get("final") or {}).get("acc_last")) is None:
        return "completed but final.acc_last is missing"
    return None


def load_runs(results_dir: str | Path) -> tuple[list[Run], list[tuple[str, str]]]:
    """Every record under ``results_dir`` as a :class:`Run`, and the files skipped with the reason."""
    root = Path(results_dir)
    runs, skipped = [], []
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root).as_posix()
        rec = store.read_record(p)
        reason = _malformed(rec)
        if reason:
            skipped.append((rel, reason))
            continue
        fin, git = rec.get("final") or {}, rec.get("git") or {}
        tag, label = provenance(rec)
        build = (str(git.get("commit") or "unknown")[:10]) + ("+dirty" if git.get("dirty") else "")
        runs.append(Run(path=rel, rec=rec, method=str(rec["method"]), dataset=str(rec["dataset"]),
                        scale=str(rec["scale"]), noise=str(rec["noise"]["name"]),
                        noise_kind=str(rec["noise"].get("kind", "")), seed=rec["seed"], status=rec["status"],
                        acc_last=_num(fin.get("acc_last")), acc_best=_num(fin.get("acc_best")),
                        data_tag=tag, data_label=label, build=build,
                        device=str((rec.get("versions") or {}).get("device", "unknown"))))
    return runs, skipped


# --------------------------------------------------------------------------- expected configs
def config_matches(effective: dict, expected: dict) -> bool:
    """True when the two configs agree on every key both have (a key added to the code later, with its
    default, does not orphan older records; any key that differs does)."""
    if not isinstance(effective, dict) or not effective:
        return False
    # keys a record holds only when they differ from their default (runner.RunSpec.semantic): compare
    # them with the default filled in, so a run with a noisy validation split never fills a paper cell
    fe, fx = comparable(effective), comparable(expected)
    common = fe.keys() & fx.keys()
    return bool(common) and all(fe[k] == fx[k] for k in common)


#: semantic config keys that appear only when set (their default otherwise)
OPTIONAL_DEFAULTS = {"val_fraction": 0.0}
#: train keys that set how fast a run goes, not what it computes (batching of inference, loader workers,
#: checkpoint frequency, torch.compile): runs that differ only in them share a cell. The record keeps
#: their values.
PERFORMANCE_KEYS = frozenset({"train.infer_batch_size", "train.num_workers", "train.checkpoint_every",
                              "train.compile", "train.compile_mode"})


def comparable(config: dict) -> dict:
    """The flattened config the report compares: optional keys filled in, performance keys left out,
    floats rounded to 10 decimals."""
    flat = {**OPTIONAL_DEFAULTS, **flatten(config)}
    # floats to 10 decimals: 0.6 * 9 / 10 computed by a run and 0.54 typed by a user are one setting
    return {k: round(v, 10) if isinstance(v, float) else v for k, v in flat.items() if k not in PERFORMANCE_KEYS}

_SEMANTIC: dict[tuple, dict | str] = {}


def semantic_config(overrides: list[str]) -> dict | str:
    """The effective config ``run`` would record for ``overrides`` (seed left as composed), JSON-normalised;
    or the ConfigError message when this checkout cannot build it (e.g. a method it does not have)."""
    key = tuple(overrides)
    if key not in _SEMANTIC:
        from .__main__ import compose
        from .runner import build_spec

        try:
            _SEMANTIC[key] = json.loads(json.dumps(build_spec(compose(list(overrides))).semantic(), default=str))
        except ConfigError as e:
            _SEMANTIC[key] = str(e)
    return _SEMANTIC[key]


def config_diff(run: Run) -> tuple[str, ...]:
    """``key=value`` for each effective config value that differs from this checkout's default for the
    run's (method, dataset, noise, scale, seed); ``method_params.`` is left out of the names."""
    base = semantic_config([f"method={run.method}", f"dataset={run.dataset}", f"noise={run.noise}",
                            f"scale={run.scale}"])
    if isinstance(base, str):
        return ()
    fe, fb = comparable(run.effective), comparable(run.resolve_auto(base))
    out = []
    for k in sorted(fe.keys() & fb.keys()):
        if k != "seed" and fe[k] != fb[k]:
            v = fe[k]
            v = v if isinstance(v, str) else json.dumps(round(v, 10) if isinstance(v, float) else v)
            out.append(f"{k.removeprefix('method_params.')}={v}")
    return tuple(out)


@dataclass
class Expected:
    """One run an experiment asks for."""

    combo: list[str]
    method: str
    dataset: str
    noise: str
    seed: int

    @property
    def cell(self) -> tuple:
        return tuple(o for o in self.combo if not o.startswith(("seed=", "scale=")))


def expected_runs(experiment: str, scale: str) -> list[Expected]:
    out = []
    for combo in expand([f"+experiment={experiment}", f"scale={scale}"]):
        d = as_dict(combo)
        if not all(k in d for k in ("method", "dataset", "noise", "seed")):
            raise ConfigError(f"experiment {experiment!r} must name method, dataset, noise and seed in its "
                              f"grid (the report groups on them); got {' '.join(combo)}")
        out.append(Expected(combo, d["method"], d["dataset"], d["noise"], int(d["seed"])))
    return out


class Index:
    """Runs by (method, dataset, noise, scale, seed), matched against expected configs."""

    def __init__(self, runs: list[Run]):
        self.by_key = defaultdict(list)
        for r in runs:
            self.by_key[(r.method, r.dataset, r.noise, r.scale, r.seed)].append(r)

    def match(self, e: Expected, scale: str) -> tuple[list[Run], str | None]:
        cands = self.by_key.get((e.method, e.dataset, e.noise, scale, e.seed), [])
        if not cands:
            return [], None
        exp = semantic_config([o for o in e.combo if not o.startswith("seed=")])
        if isinstance(exp, str):
            return [], exp
        exp = {**exp, "seed": e.seed}
        return [r for r in cands if config_matches(r.effective, r.resolve_auto(exp))], None

    def scales_for(self, expected: list[Expected]) -> list[str]:
        want = {(e.method, e.dataset, e.noise, e.seed) for e in expected}
        return sorted({k[3] for k in self.by_key if (k[0], k[1], k[2], k[4]) in want})


# ------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    runs: list[Run]
    asked: int | None
    metric: str = "acc_last"
    variant: str = ""
    note: str = ""

    @property
    def values(self) -> list[float]:
        return [v for v in (r.value(self.metric) for r in self.runs if r.ok) if v is not None]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def n_diverged(self) -> int:
        return sum(r.status == "diverged" for r in self.runs)

    @property
    def mean(self) -> float | None:
        v = self.values
        return sum(v) / len(v) if v else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (ddof = 1); None with fewer than two runs."""
        v = self.values
        if len(v) < 2:
            return None
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    @property
    def short(self) -> bool:
        return self.asked is not None and self.n < self.asked

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})


def split_versions(runs: list[Run]) -> list[tuple[str, list[Run], str]]:
    """Split a cell's runs where one seed has two different numbers: (variant label, runs, note).

    Identical duplicates of a seed (a record copied twice) count once. Runs from several code versions
    that never ran the same seed are kept together, with a note that their agreement is unchecked.
    """
    def number(r):
        return r.status, None if r.acc_last is None else round(r.acc_last, 6)

    by_seed = defaultdict(list)
    for r in runs:
        by_seed[r.seed].append(r)
    if all(len({number(r) for r in rs}) == 1 for rs in by_seed.values()):
        uniq = [rs[0] for _, rs in sorted(by_seed.items())]
        builds = sorted({r.build for r in runs})
        checked = any(len({r.build for r in rs}) > 1 for rs in by_seed.values())
        note = (f"runs from code versions {', '.join(builds)}; no seed ran on both, agreement unchecked"
                if len(builds) > 1 and not checked else "")
        return [("", uniq, note)]
    key = (lambda r: r.build) if len({r.build for r in runs}) > 1 else (lambda r: r.device)
    groups = defaultdict(list)
    for r in runs:
        groups[key(r)].append(r)
    out = []
    for k in sorted(groups):
        sub = split_versions(groups[k]) if len(groups[k]) < len(runs) else [("", groups[k], "")]
        for label, rs, note in sub:
            out.append((f"{k}{' ' + label if label else ''}", rs,
                        "the same seed gave different numbers here; split by " +
                        ("code version" if key(runs[0]) == runs[0].build else "device") + (f"; {note}" if note else "")))
    return out


# ---------------------------------------------------------------------------------- formatting
def _fmt(x: float | None, nd: int = 2) -> str:
    return "" if x is None else f"{x:.{nd}f}"


def cell_text(c: Cell | None, *, paper: tuple | None, bold: bool, tex: bool = False, show_paper: bool) -> str:
    pm = "$\\pm$" if tex else "±"
    if c is None or (c.n == 0 and c.n_diverged == 0):
        ours = "--" if tex else "—"
    elif c.n == 0:
        ours = f"diverged ({c.n_diverged})"
    else:
        ours = f"{c.mean:.2f}" + (f" {pm} {c.std:.2f}" if c.std is not None else "")
        if bold:
            ours = f"\\textbf{{{ours}}}" if tex else f"**{ours}**"
        ours += f" ({c.n}/{c.asked})" + ("$^{*}$" if tex else "*") if c.short else f" ({c.n})"
        if c.n_diverged:
            ours += f"$^{{\\dagger{c.n_diverged}}}$" if tex else f" †{c.n_diverged}"
    if show_paper:
        ours += f" [{paper[0]:.2f}]" if paper else (" [--]" if tex else " [—]")
    return ours


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


# ------------------------------------------------------------------------------------ results
@dataclass
class Section:
    """One piece of REPORT.md: a heading, markdown text, and the files it is made of."""

    title: str
    body: str
    files: list[str] = field(default_factory=list)


@dataclass
class ReportResult:
    out: Path
    files: list[Path] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)        # file name -> markdown
    figures: dict = field(default_factory=dict)                 # figure file stem -> plotted DataFrame
    missing: dict = field(default_factory=dict)                 # (item, scale) -> [Expected]
    unavailable: dict = field(default_factory=dict)             # (item, scale) -> {method: reason}
    skipped: list[tuple[str, str]] = field(default_factory=list)
    used: set = field(default_factory=set)                      # paths of runs in a paper table/figure
    other: set = field(default_factory=set)                     # paths of runs in the summary tables
    n_runs: int = 0


class Writer:
    def __init__(self, out: Path, result: ReportResult):
        self.out, self.result = out, result

    def text(self, name: str, text: str) -> str:
        p = self.out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        self.result.files.append(p)
        return name


def _row_label(method: str, variant: str) -> str:
    return method_name(method) + (f" ({variant})" if variant else "")


def _missing_commands(missing: list[Expected], scale: str, results_arg: str) -> list[str]:
    """Few command lines that make exactly the missing runs: combos merged key by key (seed first)."""
    groups: list[dict[str, list[str]]] = [{k: [v] for k, v in as_dict(e.combo).items()} for e in missing]
    order = ["seed", "method", "noise", "dataset"]
    keys = order + [k for k in (groups[0] if groups else {}) if k not in order]
    for key in keys:
        merged: dict[tuple, dict[str, list[str]]] = {}
        for g in groups:
            sig = tuple((k, tuple(v)) for k, v in g.items() if k != key)
            if sig in merged:
                merged[sig][key] = merged[sig].get(key, []) + [v for v in g.get(key, []) if v not in merged[sig].get(key, [])]
            else:
                merged[sig] = {k: list(v) for k, v in g.items()}
        groups = list(merged.values())
    lines = []
    for g in groups:
        parts = []
        for k, v in g.items():
            prefix = "+" if k == "experiment" else ""
            parts.append(shlex.quote(f"{prefix}{k}={','.join(v)}"))
        lines.append("python -m nlbench run -m " + " ".join(parts) + results_arg)
    return lines


def _table_for_scale(spec: TableSpec, scale: str, index: Index, paper: dict, w: Writer,
                     results_arg: str) -> Section:
    res = w.result
    expected = expected_runs(spec.experiment, scale)
    asked = defaultdict(int)
    matched: dict[tuple, list[Run]] = defaultdict(list)
    missing, unavailable = [], {}
    for e in expected:
        asked[(e.method, e.dataset, e.noise)] += 1
        runs, err = index.match(e, scale)
        if err:
            unavailable[e.method] = err
        if runs:
            matched[(e.method, e.dataset, e.noise)] += runs
            res.used.update(r.path for r in runs)
        else:
            missing.append(e)
    res.missing[(spec.key, scale)] = missing
    res.unavailable[(spec.key, scale)] = unavailable
    exp_methods = list(dict.fromkeys(e.method for e in expected))

    md_parts, tex_parts, csv_rows = [], [], []
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
                    rs = [r for r in matched.get((m, ds, col.noise), []) if r.data_tag == tag]
                    for v, vr, note in (split_versions(rs) if rs else []):
                        variants.setdefault(v, None)
                        cells[(m, v, col)] = Cell(vr, asked.get((m, ds, col.noise)) or None, col.metric, v, note)
                        if note:
                            notes.append(f"{_row_label(m, v)}, {col.group} {col.sub}: {note}")
                rows += [(m, v) for v in (variants or [""])]
            best = {}
            for col in block.columns:
                means = [c.mean for (m, v, cc), c in cells.items() if cc == col and c.mean is not None]
                best[col] = max(means) if means else None

            def text(m, v, col, tex=False):
                c = cells.get((m, v, col))
                return cell_text(c, paper=paper.get((spec.key, ds, m, col.paper)),
                                 bold=c is not None and c.mean is not None and c.mean == best[col], tex=tex,
                                 show_paper=m in paper_methods)

            heading = (f"**{DATASET_NAMES.get(ds, ds)}** · scale={scale} · data: {label} · {HEADLINE}, "
                       f"mean ± std over seeds (runs) [{spec.paper_note}]")
            header = ["Method"] + [f"{c.group} {c.sub}" if c.group != c.sub else c.sub for c in block.columns]
            md_rows = [[_row_label(m, v)] + [text(m, v, col) for col in block.columns] for m, v in rows]
            md_parts.append(heading + "\n\n" + md_table(header, md_rows)
                            + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else ""))
            tex_parts.append(_tex_block(spec, block, scale, label, rows,
                                        {k: text(*k, tex=True) for k in ((m, v, col) for m, v in rows
                                                                         for col in block.columns)}))
            for m, v in rows:
                for col in block.columns:
                    c = cells.get((m, v, col)) or Cell([], asked.get((m, ds, col.noise)) or None, col.metric, v)
                    p = paper.get((spec.key, ds, m, col.paper))
                    csv_rows.append([spec.key, scale, ds, tag or "", m, method_name(m), v,
                                     f"{col.group} {col.sub}", col.noise, col.metric, c.mean, c.std, c.n,
                                     c.asked, c.n_diverged, int(c.mean is not None and c.mean == best[col]),
                                     p[0] if p else None, p[1] if p else None,
                                     " ".join(map(str, c.seeds)), c.note])
    legend = ("Cells: mean ± sample std over the runs (seeds) that completed, the run count in parentheses; "
              "`(n/k)*` fewer runs than the experiment asks for; `†k` k runs diverged (failed, not in the mean); "
              "`[x]` the paper's value; best of ours per column in bold. "
              f"Numbers at scale={scale} " + ("are paper-protocol numbers." if scale == "paper" else
                                                "come from a reduced protocol and are not comparable to the paper's."))
    md = f"## {spec.title} (scale={scale})\n\n" + "\n".join(md_parts) + "\n" + legend + "\n"
    stem = f"{spec.key}_{scale}"
    res.tables[f"{stem}.md"] = md
    w.text(f"{stem}.md", md)
    w.text(f"{stem}.tex", "\n".join(tex_parts))
    w.text(f"{stem}.csv", csv_text(["table", "scale", "dataset", "data", "method", "method_name", "variant",
                                    "column", "noise", "metric", "mean", "std", "n", "n_asked", "n_diverged",
                                    "best", "paper_mean", "paper_std", "seeds", "note"], csv_rows))
    body = "\n".join(md_parts) + "\n" + legend + "\n\n" + _missing_md(spec.experiment, scale, expected, missing,
                                                                     unavailable, results_arg)
    return Section(f"{spec.title} (scale={scale})", body, [f"{stem}.md", f"{stem}.tex", f"{stem}.csv"])


def _tex_block(spec: TableSpec, block: Block, scale: str, label: str, rows, texts) -> str:
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
        lines.append(_tex(_row_label(m, v)) + " & " + " & ".join(texts[(m, v, c)] for c in cols) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}",
              f"\\caption{{{_tex(DATASET_NAMES.get(block.dataset, block.dataset))}, scale={_tex(scale)}, "
              f"data: {_tex(label)}. {_tex(HEADLINE)}, mean $\\pm$ std over seeds (runs); "
              f"[\\,] {_tex(spec.paper_note)}.}}", "\\end{table}", ""]
    return "\n".join(lines)


def _missing_md(experiment: str, scale: str, expected: list[Expected], missing: list[Expected],
                unavailable: dict, results_arg: str) -> str:
    if not missing:
        return f"All {len(expected)} runs of `+experiment={experiment}` at scale={scale} are present.\n"
    out = [f"**Missing: {len(missing)} of {len(expected)} runs** of `+experiment={experiment}` at scale={scale}. "
           f"`python -m nlbench run -m +experiment={experiment} scale={scale}{results_arg}` makes them all "
           "(finished runs are skipped); exactly the missing ones:\n", "```"]
    out += _missing_commands(missing, scale, results_arg)
    out.append("```")
    absent = sorted({e.method for e in missing if isinstance(semantic_config([f"method={e.method}"]), str)},
                    key=method_sort_key)
    if absent or unavailable:
        out.append(f"\nNot runnable in this checkout (no such method or config): "
                   f"{', '.join(sorted(set(absent) | set(unavailable), key=method_sort_key))}.")
    return "\n".join(out) + "\n"


def _results_arg(results_dir: Path) -> str:
    default = Path(os.environ.get("NLBENCH_RESULTS_DIR", "results"))
    try:
        same = results_dir.resolve() == default.resolve()
    except OSError:
        same = False
    return "" if same else f" results_dir={shlex.quote(str(results_dir))}"


# ------------------------------------------------------------------------------------- figures
def _figure_items(index: Index, scales: list[str] | None, w: Writer, results_arg: str) -> list[Section]:
    from . import figures

    res = w.result
    sections = []
    for key, title in (("fig1", "Figure 1: every method at 40% noise vs the clean-label upper bound"),
                       ("fig3", "Figure 3: GSS-SB pool-update weights lambda1 and lambda2"),
                       ("fig4", "Figure 4: GSS-SB / GSS-DB / GSS-SSL")):
        sc = _scales(key, index, scales)
        if not sc:
            sections.append(Section(title, f"No runs yet. `python -m nlbench run -m +experiment={key} scale=cpu"
                                           f"{results_arg}` (or scale=paper on a GPU) makes them.\n"))
        for scale in sc:
            expected = expected_runs(key, scale)
            matched, missing, unavailable = [], [], {}
            for e in expected:
                runs, err = index.match(e, scale)
                if err:
                    unavailable[e.method] = err
                (matched.extend(runs) if runs else missing.append(e))
            res.missing[(key, scale)] = missing
            res.unavailable[(key, scale)] = unavailable
            res.used.update(r.path for r in matched)
            asked = defaultdict(int)
            for e in expected:
                asked[e.cell] += 1
            n_asked = max(asked.values()) if asked else None
            body, files = [], []
            for tag in sorted({r.data_tag for r in matched}):
                rs = [r for r in matched if r.data_tag == tag]
                label = rs[0].data_label
                stem = f"{key}_{scale}_{tag}"
                subtitle = f"CIFAR-10 · scale={scale} · data: {label}"
                df = getattr(figures, key)(rs, w.out / stem, subtitle=subtitle, n_asked=n_asked)
                res.figures[stem] = df
                res.files += [w.out / f"{stem}.png", w.out / f"{stem}.pdf"]
                files += [f"{stem}.png", f"{stem}.pdf"]
                body.append(f"![{title}, scale={scale}, data: {label}]({stem}.png)\n\n"
                            f"{figures.CAPTIONS[key]} Data: {label}.\n")
            if not matched:
                body.append("No runs of this figure yet.\n")
            body.append(_missing_md(key, scale, expected, missing, unavailable, results_arg))
            sections.append(Section(f"{title} (scale={scale})", "\n".join(body), files))
    return sections


def _scales(experiment: str, index: Index, scales: list[str] | None) -> list[str]:
    if scales:
        return list(scales)
    return index.scales_for(expected_runs(experiment, "paper"))


# ---------------------------------------------------------------------------------- other runs
def _noise_key(r: Run):
    k = r.noise_kind
    return (NOISE_KIND_ORDER.index(k) if k in NOISE_KIND_ORDER else len(NOISE_KIND_ORDER),
            float((r.rec.get("noise") or {}).get("nominal_rate") or 0), r.noise)


def _summary(runs: list[Run], w: Writer) -> list[Section]:
    """Every run no paper table or figure used: per dataset and scale, noise x method rows."""
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
            keys = sorted(groups, key=lambda k: (_noise_key(groups[k][0]), method_sort_key(k[1]), k[2]))
            rows = []
            for noise, m, diff in keys:
                actual = [_num((r.rec.get("noise") or {}).get("actual_rate")) for r in groups[(noise, m, diff)]]
                actual = [a for a in actual if a is not None]
                noise_txt = noise + (f" ({100 * sum(actual) / len(actual):.1f}% actual)" if actual else "")
                for v, vr, note in split_versions(groups[(noise, m, diff)]):
                    last, best = Cell(vr, None, "acc_last"), Cell(vr, None, "acc_best")
                    variant = ", ".join(diff) + (f"; {v}" if v and diff else v)
                    div = [r.seed for r in vr if r.status == "diverged"]
                    notes = ([f"{len(div)} diverged (seed {', '.join(map(str, div))})"] if div else []) + \
                            ([note] if note else [])

                    def ms(c):
                        return "—" if c.mean is None else f"{c.mean:.2f}" + (f" ± {c.std:.2f}" if c.std is not None else "")
                    rows.append([noise_txt, _row_label(m, variant), ms(last), ms(best),
                                 f"{last.n}: {', '.join(str(r.seed) for r in vr if r.ok)}" if last.n else "0",
                                 "; ".join(notes)])
                    csv_rows.append([ds, scale, tag, noise, (sum(actual) / len(actual)) if actual else None, m,
                                     variant, last.mean, last.std, best.mean, best.std, last.n, len(div),
                                     " ".join(str(r.seed) for r in vr), "; ".join(notes)])
                    w.result.other.update(r.path for r in vr)
            md_parts.append(f"**{DATASET_NAMES.get(ds, ds)}** · scale={scale} · data: {rs[0].data_label}\n\n"
                            + md_table(["Noise", "Method", "Last epoch", "Best epoch (test-selected)", "Seeds",
                                        "Notes"], rows))
        legend = ("Last epoch: the headline, mean ± sample std over seeds. Best epoch: the best test accuracy "
                  "of each run, selected on the test set (optimistic; papers mix the two). A method label in "
                  "parentheses lists what differs from this checkout's default config.")
        md = "\n".join(md_parts) + "\n" + legend + "\n"
        stem = f"summary_{ds}_{scale}"
        w.result.tables[f"{stem}.md"] = md
        w.text(f"{stem}.md", md)
        w.text(f"{stem}.csv", csv_text(["dataset", "scale", "data", "noise", "actual_rate", "method", "variant",
                                        "last_mean", "last_std", "best_mean", "best_std", "n", "n_diverged",
                                        "seeds", "note"], csv_rows))
        sections.append(Section(f"{DATASET_NAMES.get(ds, ds)}, scale={scale}", md, [f"{stem}.md", f"{stem}.csv"]))
    return sections


def _dynamics(runs: list[Run], w: Writer) -> list[Section]:
    """Beyond the paper: per (dataset, scale, data, noise), curves over epochs of every method."""
    from . import figures

    sections = []
    groups = defaultdict(list)
    for r in runs:
        if r.ok and r.history:
            groups[(r.dataset, r.scale, r.data_tag, r.noise)].append(r)
    for (ds, scale, tag, noise) in sorted(groups):
        rs = groups[(ds, scale, tag, noise)]
        series = defaultdict(list)
        for r in rs:
            diff = config_diff(r)
            series[_row_label(r.method, ", ".join(diff))].append(r)
        order = sorted(series, key=lambda s: (method_sort_key(series[s][0].method), s))
        sub = f"{DATASET_NAMES.get(ds, ds)} · {noise} · scale={scale} · data: {rs[0].data_label}"
        body, files = [], []
        for kind in figures.DYNAMICS:
            stem = f"dynamics/{kind}_{ds}_{scale}_{tag}_{noise}"
            df = figures.dynamics(kind, [(s, series[s]) for s in order], w.out / stem, subtitle=sub)
            if df is None:
                continue
            w.result.figures[stem] = df
            w.result.files.append(w.out / f"{stem}.png")
            files.append(f"{stem}.png")
            body.append(f"![{kind}, {sub}]({stem}.png)\n\n{figures.CAPTIONS[kind]}\n")
        sections.append(Section(sub, "\n".join(body), files))
    return sections


# ---------------------------------------------------------------------------------------- main
class NoRecords(Exception):
    pass


def report(results_dir: str | Path, out: str | Path = "plots", *, scales: list[str] | None = None,
           figures: bool = True) -> ReportResult:
    """Read every record under ``results_dir`` and write tables, figures and ``REPORT.md`` under ``out``.

    ``scales``: report the paper tables and figures at these scales (default: every scale that has at
    least one of their runs). Raises :class:`NoRecords` when there is no usable record.
    """
    results_dir, out = Path(results_dir), Path(out)
    runs, skipped = load_runs(results_dir)
    if not runs:
        what = (f"no run records under {results_dir}" if not skipped else
                f"no usable run record under {results_dir}; skipped: "
                + "; ".join(f"{p} ({why})" for p, why in skipped))
        raise NoRecords(what + ". Make some with `python -m nlbench run ...` (results_dir=...) first.")
    out.mkdir(parents=True, exist_ok=True)
    res = ReportResult(out=out, skipped=skipped, n_runs=len(runs))
    w = Writer(out, res)
    index = Index(runs)
    paper = paper_values()
    results_arg = _results_arg(results_dir)
    paper_sections = []
    for spec in TABLES:
        sc = _scales(spec.experiment, index, scales)
        for scale in sc:
            paper_sections.append(_table_for_scale(spec, scale, index, paper, w, results_arg))
        if not sc:
            paper_sections.append(Section(spec.title, f"No runs yet. `python -m nlbench run -m "
                                                       f"+experiment={spec.experiment} scale=cpu{results_arg}` "
                                                       "(or scale=paper on a GPU) makes them.\n"))
    if figures:
        paper_sections += _figure_items(index, scales, w, results_arg)
    others = [r for r in runs if r.path not in res.used]
    other_sections = _summary(others, w)
    dyn_sections = _dynamics(runs, w) if figures else []
    w.text("REPORT.md", _report_md(results_dir, res, runs, paper_sections, other_sections, dyn_sections))
    return res


def _report_md(results_dir: Path, res: ReportResult, runs: list[Run], paper_sections, other_sections,
               dyn_sections) -> str:
    scales = sorted({r.scale for r in runs})
    data = sorted({(DATASET_NAMES.get(r.dataset, r.dataset), r.data_label) for r in runs})
    head = [
        "# nlbench report", "",
        f"Generated by `python -m nlbench report` from **{len(runs)} run records** under `{results_dir}`"
        + (f" ({len(res.skipped)} file(s) skipped, listed at the end)" if res.skipped else "") + ". "
        f"{len(res.used)} of them make up the paper's tables and figures; the other {len(res.other)} are in "
        "the summary tables. Nothing here is trained or read from logs.", "",
        f"- Headline metric: {HEADLINE}, mean ± sample std over training seeds, with the number of runs. "
        "Best-epoch accuracy (selected on the test set) appears only where labelled so.",
        f"- Scales present: {', '.join(scales)}. Numbers of different scales, data copies, protocols or "
        "method settings are never averaged together; only `scale=paper` follows the paper's protocol.",
        "- Data: " + "; ".join(f"{d}: {lab}" for d, lab in data) + ".",
        "- A diverged run is a failed run of its cell (`†`), never dropped; a cell with fewer runs than its "
        "experiment asks for is flagged `(n/k)*`.", "",
        "## Contents", ""]
    body = []
    for part, secs in (("Paper tables and figures", paper_sections),
                       ("Runs outside the paper's tables and figures", other_sections),
                       ("Training dynamics (beyond the paper)", dyn_sections)):
        if not secs:
            continue
        head.append(f"- [{part}](#{_anchor(part)})")
        body += [f"## {part}", ""]
        if part.startswith("Training dynamics"):
            body += ["Per setting, mean over seeds of each method (line style and marker per method, not colour "
                     "alone): test accuracy; the memorised fraction (share of mislabeled training samples "
                     "predicted as their wrong given label, runs with `diagnose_train=true`), the 'continuous "
                     "damage'; precision / recall of the clean set a selecting method picks; and GSS pool "
                     "diagnostics (clean vs mislabeled samples).", ""]
        for s in secs:
            head.append(f"  - [{s.title}](#{_anchor(s.title)})")
            body += [f"### {s.title}", "", s.body.strip(), ""]
            if s.files:
                body += ["Files: " + ", ".join(f"[`{f}`]({f})" for f in s.files), ""]
    tail = []
    if res.skipped:
        tail = ["## Skipped files", "", "Not run records, or records the report cannot use (never fatal):", ""]
        tail += [f"- `{p}`: {why}" for p, why in res.skipped] + [""]
    return "\n".join(head + [""] + body + tail)


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


HELP = """Tables and figures from run records; never trains, never reads logs.

Reads every run record (*.json) under --results-dir (default: $NLBENCH_RESULTS_DIR, else ./results) and
the paper's published numbers shipped in nlbench/paper_data/. Writes under --out (default ./plots):
table3_<scale>.{md,tex,csv}, table4_<scale>.{md,tex,csv} (ours beside the paper's), fig1/fig3/fig4_<scale>_<data>.{png,pdf},
summary_<dataset>_<scale>.{md,csv} (every run outside the paper's tables), dynamics/*.png (curves over
epochs), and REPORT.md (all of it on one page, with the runs still missing and the exact commands that
make them). Malformed records are skipped and named. Exit code 2 when there is no usable record."""


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m nlbench report", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default=os.environ.get("NLBENCH_RESULTS_DIR", "results"),
                   help="folder of run records (default: $NLBENCH_RESULTS_DIR or ./results)")
    p.add_argument("--out", default="plots", help="output folder (default: ./plots)")
    p.add_argument("--scale", action="append", default=None,
                   help="report the paper tables/figures at this scale (repeatable; default: every scale "
                        "that has runs of them)")
    p.add_argument("--no-figures", action="store_true", help="tables and REPORT.md only (faster)")
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    for name in ("table3", "table4", "fig1", "fig3", "fig4"):
        if name not in experiment_names():
            raise ConfigError(f"conf/experiment/{name}.yaml is missing; the report needs it")
    try:
        res = report(a.results_dir, a.out, scales=a.scale, figures=not a.no_figures)
    except NoRecords as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, why in res.skipped:
        print(f"warning: skipped {Path(a.results_dir) / path}: {why}", file=sys.stderr)
    n_missing = {k: len(v) for k, v in res.missing.items()}
    for (item, scale), n in sorted(n_missing.items()):
        print(f"{item} scale={scale}: {n} run(s) missing" if n else f"{item} scale={scale}: complete")
    print(f"{res.n_runs} records -> {len(res.files)} files under {a.out} (open {Path(a.out) / 'REPORT.md'})")
    return 0
