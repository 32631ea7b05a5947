"""Step 2 of the report: which records form a cell. The runs an experiment asks for
(:func:`expected_runs`), each composed and validated as ``run`` would; records matched to them by
effective config (:class:`Index`); a :class:`Cell`'s mean and std over seeds; and a cell split where
one seed gave two numbers (:func:`split_versions`)."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass

from ..experiments import as_dict, expand
from ..registry import ConfigError
from ..store import flatten
from .records import Run


def config_matches(effective: dict, expected: dict) -> bool:
    """True when the two configs agree on every key both have (a key added to the code later, with its
    default, does not orphan older records; any key that differs does)."""
    if not isinstance(effective, dict) or not effective:
        return False
    # keys a record holds only when they differ from their default (spec.RunSpec.semantic): compare
    # them with the default filled in, so a run with a noisy validation split never fills a paper cell
    fe, fx = comparable(effective), comparable(expected)
    common = fe.keys() & fx.keys()
    return bool(common) and all(fe[k] == fx[k] for k in common)


#: semantic config keys that appear only when set (their default otherwise)
OPTIONAL_DEFAULTS = {"val_fraction": 0.0, "train.eval_every": 1}
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
        from ..config import compose
        from ..spec import build_spec

        try:
            _SEMANTIC[key] = json.loads(json.dumps(build_spec(compose(list(overrides))).semantic(), default=str))
        except ConfigError as e:
            _SEMANTIC[key] = str(e)
    return _SEMANTIC[key]


def plugin_overrides(rec: dict) -> list[str]:
    """The settings that found a method from outside the suite when the run was made
    (``method_modules``, ``method_conf_dirs``; else the module the record names): composing the run's
    default config needs them as the run did."""
    cfg = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    lists = {k: [str(v) for v in (cfg.get(k) or [])] for k in ("method_modules", "method_conf_dirs")}
    module = str(rec.get("method_module") or "")
    if not lists["method_modules"] and module and not module.startswith("methods."):
        lists["method_modules"] = [module]
    return [f"{k}=[{','.join(v)}]" for k, v in lists.items() if v]


def config_diff(run: Run) -> tuple[str, ...]:
    """``key=value`` for each effective config value that differs from this checkout's default for the
    run's (method, dataset, noise, scale, seed); ``method_params.`` is left out of the names."""
    base = semantic_config([f"method={run.method}", f"dataset={run.dataset}", f"noise={run.noise}",
                            f"scale={run.scale}", *plugin_overrides(run.rec)])
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
    noise_seed: int = 0

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
        out.append(Expected(combo, d["method"], d["dataset"], d["noise"], int(d["seed"]),
                            int(d.get("noise_seed", 0))))
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
    rule: str | None = None     # scoring rule of acc_last / acc_best (Run.acc); None: the record's own headline
    min_draws: int = 1          # noise draws (noise_seed values) a complete cell spans

    def _value(self, r: Run) -> float | None:
        if self.rule and self.metric in ("acc_last", "acc_best"):
            return r.acc(self.rule, "last" if self.metric == "acc_last" else "best")
        return r.value(self.metric)

    @property
    def values(self) -> list[float]:
        return [v for v in (self._value(r) for r in self.runs if r.ok) if v is not None]

    @property
    def draws(self) -> list[int]:
        """The noise draws (noise_seed values) of the completed runs."""
        return sorted({r.noise_seed for r in self.runs if r.ok and self._value(r) is not None})

    @property
    def ci(self) -> float | None:
        """Half-width of the 95% Student's t interval of the mean over runs (None under two runs)."""
        from .protocol import mean_ci

        v = self.values
        return mean_ci(v)[1] if len(v) >= 2 else None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def n_diverged(self) -> int:
        return sum(r.status == "diverged" for r in self.runs)

    @property
    def n_collapsed(self) -> int:
        """Completed runs that ended collapsed (in the mean, and counted: never hidden inside it)."""
        return sum(r.collapsed for r in self.runs)

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.runs]

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
        return (self.asked is not None and self.n < self.asked) or len(self.draws) < self.min_draws

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
        by_seed[r.pair].append(r)
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


