"""What every step of the report writes into: the files (:class:`Writer`), the sections of
``REPORT.md`` (:class:`Section`), the :class:`ReportResult` the tests read, and the listing of the runs
still missing with the commands that make them."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..experiments import as_dict
from .cells import Expected, Index, expected_runs, semantic_config
from .records import method_name, method_sort_key


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


def row_label(method: str, variant: str) -> str:
    return method_name(method) + (f" ({variant})" if variant else "")


def missing_commands(missing: list[Expected], scale: str, results_arg: str) -> list[str]:
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


def missing_md(experiment: str, scale: str, expected: list[Expected], missing: list[Expected],
               unavailable: dict, results_arg: str) -> str:
    if not missing:
        return f"All {len(expected)} runs of `+experiment={experiment}` at scale={scale} are present.\n"
    out = [f"**Missing: {len(missing)} of {len(expected)} runs** of `+experiment={experiment}` at scale={scale}. "
           f"`python -m nlbench run -m +experiment={experiment} scale={scale}{results_arg}` makes them all "
           "(finished runs are skipped); exactly the missing ones:\n", "```"]
    out += missing_commands(missing, scale, results_arg)
    out.append("```")
    absent = sorted({e.method for e in missing if isinstance(semantic_config([f"method={e.method}"]), str)},
                    key=method_sort_key)
    if absent or unavailable:
        out.append(f"\nNot runnable in this checkout (no such method or config): "
                   f"{', '.join(sorted(set(absent) | set(unavailable), key=method_sort_key))}.")
    return "\n".join(out) + "\n"


def results_override(results_dir: Path) -> str:
    """`` results_dir=...`` for the commands the report prints, or "" when it is the default folder."""
    default = Path(os.environ.get("NLBENCH_RESULTS_DIR", "results"))
    try:
        same = results_dir.resolve() == default.resolve()
    except OSError:
        same = False
    return "" if same else f" results_dir={shlex.quote(str(results_dir))}"


#: settings a user gives on the command line that say where things are, not what is computed: a missing-runs
#: command repeats them (when every record that has one agrees on it) so that it can be pasted as it is
WHERE_KEYS = ("data_dir",)


def user_overrides(runs) -> str:
    """`` data_dir=...`` (the :data:`WHERE_KEYS`) as the records were made with, for the commands the report
    prints: the value most records that set one hold (records made from two folders, say ``../shared/data``
    and its absolute path, still give a pasteable command); left out when every record holds the default
    (``data``)."""
    from collections import Counter

    out = []
    for key in WHERE_KEYS:
        vals = Counter(str(r.rec["config"][key]) for r in runs
                       if isinstance(r.rec.get("config"), dict) and r.rec["config"].get(key) not in (None, "data"))
        if vals:
            v = sorted(vals.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            out.append(f" {key}={shlex.quote(v)}")
    return "".join(out)


def report_scales(experiment: str, index: Index, scales: list[str] | None) -> list[str]:
    """The scales to report ``experiment`` at: those asked for, else every scale with one of its runs."""
    if scales:
        return list(scales)
    return index.scales_for(expected_runs(experiment, "paper"))
