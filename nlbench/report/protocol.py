"""The comparison protocol the report enforces (``conf/protocol.yaml``; docs/protocol.md says why): the
scoring rule of the ranked tables, which records may enter a headline cell (not a selection run of the
method, not from an uncommitted tree), when a cell has enough runs, and the statistics every comparison
prints (a Student's t interval over runs; paired differences over shared (noise_seed, seed) pairs)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..hydra_setup import CONF_DIR
from ..registry import ConfigError
from .records import SCORING_RULES, Run

PROTOCOL_FILE = CONF_DIR / "protocol.yaml"

#: two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30 (the standard table)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """t_{0.975, df}: from the table up to 30 degrees of freedom, then the Cornish-Fisher expansion around
    the normal quantile 1.95996 (within 1e-4 of the exact value past 30)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= 30:
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95% t interval over the values); the half-width is None under 2 values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    m = sum(values) / n
    if n < 2:
        return m, None
    sd = math.sqrt(sum((x - m) ** 2 for x in values) / (n - 1))
    return m, t975(n - 1) * sd / math.sqrt(n)


def seeds_by_draw(pairs) -> list[tuple[int, list[int]]]:
    """(noise_seed, seed) pairs grouped by noise draw, both sorted: [(0, [0, 1]), (1, [0])]."""
    by: dict[int, list[int]] = {}
    for ns, sd in sorted(pairs):
        by.setdefault(ns, []).append(sd)
    return sorted(by.items())


@dataclass
class Paired:
    """Method a against method b on the (noise_seed, seed) pairs both ran."""

    pairs: list[tuple[int, int]]
    diffs: list[float]            # a - b per pair
    min_pairs: int = 3

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float | None:
        return sum(self.diffs) / self.n if self.diffs else None

    @property
    def half_width(self) -> float | None:
        return mean_ci(self.diffs)[1] if self.n >= 2 else None

    @property
    def resolved(self) -> bool:
        """At least ``min_pairs`` shared pairs and the 95% t interval of the mean difference excludes 0."""
        h = self.half_width
        return self.n >= self.min_pairs and h is not None and abs(self.mean) > h

    @property
    def sign(self) -> int:
        """+1 when a is resolved above b, -1 below, 0 unresolved."""
        return (1 if self.mean > 0 else -1) if self.resolved else 0


def paired(a: list[Run], b: list[Run], rule: str, *, min_pairs: int = 3) -> Paired:
    """Paired differences of last-epoch accuracy (under ``rule``) of runs a and b on shared pairs."""
    va = {r.pair: r.acc(rule) for r in a if r.ok}
    vb = {r.pair: r.acc(rule) for r in b if r.ok}
    common = sorted(p for p in va.keys() & vb.keys() if va[p] is not None and vb[p] is not None)
    return Paired(common, [va[p] - vb[p] for p in common], min_pairs)


@dataclass
class Protocol:
    headline_rule: str = "ensemble"
    experiments: dict = field(default_factory=dict)          # experiment -> {min_runs, min_noise_draws}
    selection: dict = field(default_factory=dict)            # (method, dataset, scale, noise) -> {(ns, seed)}

    def min_runs(self, experiment: str) -> int | None:
        return (self.experiments.get(experiment) or {}).get("min_runs")

    def min_draws(self, experiment: str) -> int:
        return (self.experiments.get(experiment) or {}).get("min_noise_draws", 1)

    def chose(self, r: Run) -> bool:
        """The run took part in choosing its method's default (a declared selection run)."""
        return r.pair in self.selection.get((r.method, r.dataset, r.scale, r.noise), ())

    def exclusion(self, r: Run) -> str | None:
        """Why ``r`` may not enter a headline cell, or None: a selection run of its method, or a record
        made from a tree with uncommitted changes (its code is recorded nowhere)."""
        if self.chose(r):
            return "selection"
        if r.dirty:
            return "dirty"
        return None


def _fail(msg: str):
    raise ConfigError(f"{PROTOCOL_FILE}: {msg}")


@lru_cache(maxsize=4)
def load_protocol(path: str | None = None) -> Protocol:
    """Read and check ``conf/protocol.yaml`` (or ``path``); a bad entry is a ConfigError naming it."""
    from omegaconf import OmegaConf

    p = Path(path) if path else PROTOCOL_FILE
    if not p.is_file():
        return Protocol()
    raw = OmegaConf.to_container(OmegaConf.load(p), resolve=True) or {}
    rule = raw.get("headline_rule", "ensemble")
    if rule not in SCORING_RULES:
        _fail(f"headline_rule {rule!r} is not one of {', '.join(SCORING_RULES)}")
    exps = raw.get("experiments") or {}
    for name, e in exps.items():
        if not isinstance(e, dict) or not all(isinstance(e.get(k, 1), int) and e.get(k, 1) >= 1
                                              for k in ("min_runs", "min_noise_draws")):
            _fail(f"experiments.{name} must map min_runs / min_noise_draws to positive integers, got {e!r}")
    sel: dict = {}
    for i, e in enumerate(raw.get("selection") or []):
        keys = ("method", "dataset", "scale", "noise", "noise_seed", "seeds")
        if not isinstance(e, dict) or any(k not in e for k in keys):
            _fail(f"selection entry {i} must have {', '.join(keys)}; got {e!r}")
        if not isinstance(e["seeds"], list) or not all(isinstance(s, int) for s in e["seeds"]):
            _fail(f"selection entry {i}: seeds must be a list of integers, got {e['seeds']!r}")
        k = (str(e["method"]), str(e["dataset"]), str(e["scale"]), str(e["noise"]))
        sel.setdefault(k, set()).update((int(e["noise_seed"]), s) for s in e["seeds"])
    return Protocol(rule, exps, {k: frozenset(v) for k, v in sel.items()})
