"""Experiments as config: ``conf/experiment/<name>.yaml`` defines the sweep behind a table or figure.

An experiment file is a Hydra ``# @package _global_`` config. Its grid is Hydra's own
``hydra.sweeper.params`` (key -> sweep string, one cartesian grid); an experiment that needs a union of
grids (Figure 3: lambda1 swept at lambda2 = 1, then lambda2 swept at lambda1 = 2) lists them under
``sweeps:`` instead, because Hydra's basic sweeper knows only one grid. Any other key of the file
(``diagnose_train: true``) applies to every run of the experiment.

``python -m nlbench run -m +experiment=table3 scale=cpu`` expands here: a key given on the command line
replaces that key in every grid (``method=gce,sl`` narrows Table 3 to two methods), the grids are
expanded with Hydra's override grammar and their union is taken in order, without duplicates.
"""
from __future__ import annotations

import itertools
from pathlib import Path

from .registry import ConfigError

from .hydra_setup import CONF_DIR  # noqa: E402
EXPERIMENT_DIR = CONF_DIR / "experiment"
SWEEPS_KEY = "sweeps"   # the union-of-grids key; removed from the composed config (never in a record)


def override_key(o: str) -> str:
    return o.lstrip("+~").partition("=")[0]


def _experiment_dirs(overrides: list[str] = ()) -> list[Path]:
    """conf/experiment/ and the experiment/ folder of every extra config folder (method_conf_dirs)."""
    from .plugins import conf_dirs

    return [EXPERIMENT_DIR, *(d / "experiment" for d in conf_dirs(overrides))]


def experiment_names(overrides: list[str] = ()) -> list[str]:
    return sorted({p.stem for d in _experiment_dirs(overrides) for p in d.glob("*.yaml")})


def _sweep_str(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_sweep_str(x) for x in v)
    return str(v)


def load_grids(name: str, overrides: list[str] = ()) -> list[dict[str, str]]:
    """The grids of experiment ``name``: a list of {override key: sweep string}; [] if it sweeps nothing."""
    from omegaconf import OmegaConf

    path = next((d / f"{name}.yaml" for d in _experiment_dirs(overrides) if (d / f"{name}.yaml").is_file()), None)
    if path is None:
        raise ConfigError(f"unknown experiment {name!r}; valid choices: {', '.join(experiment_names(overrides))}")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    grids = []
    params = ((cfg.get("hydra") or {}).get("sweeper") or {}).get("params")
    if params:
        grids.append({str(k): _sweep_str(v) for k, v in params.items()})
    for g in cfg.get(SWEEPS_KEY) or []:
        grids.append({str(k): _sweep_str(v) for k, v in g.items()})
    return grids


def experiments_in(overrides: list[str]) -> list[str]:
    return [o.partition("=")[2] for o in overrides if override_key(o) == "experiment" and "=" in o]


def with_grids(overrides: list[str]) -> tuple[list[list[str]], bool]:
    """One override list per grid of the experiments named in ``overrides`` (command-line keys win);
    the flag says whether any experiment defines a sweep."""
    grids: list[dict[str, str]] = [{}]
    swept = False
    for name in experiments_in(overrides):
        g = load_grids(name, overrides)
        if g:
            swept = True
            grids = [{**a, **b} for a in grids for b in g]
    given = {override_key(o) for o in overrides}
    return [list(overrides) + [f"{k}={v}" for k, v in g.items() if k not in given] for g in grids], swept


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Hydra multirun expansion: the cartesian product of every sweep override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError(f"bad override: {str(e).strip().splitlines()[0]}") from None
    axes = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    return [list(c) for c in itertools.product(*axes)]


def expand(overrides: list[str]) -> list[list[str]]:
    """Every run of a multirun command line, experiment grids included (union, in order, no duplicates)."""
    out, seen = [], set()
    for ov in with_grids(overrides)[0]:
        for combo in expand_sweep(ov):
            key = tuple(sorted(combo))
            if key not in seen:
                seen.add(key)
                out.append(combo)
    return out


def as_dict(combo: list[str]) -> dict[str, str]:
    """``["+experiment=fig3", "seed=0"]`` -> ``{"experiment": "fig3", "seed": "0"}``."""
    return {override_key(o): o.partition("=")[2] for o in combo}
