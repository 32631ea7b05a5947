"""Config composition: Hydra's compose over conf/ (and the config folders of outside methods), with
Hydra's errors turned into one-line ConfigErrors that name the valid choices.

It sits below everything that composes a config (the command line, the runner, the report, the
launcher, the benchmark), so none of them imports the command line to get it.
"""
from __future__ import annotations

import re

from .experiments import SWEEPS_KEY
from .hydra_setup import CONF_DIR, RATE_FAMILIES, register_resolvers, split_noise_name
from .registry import ConfigError, did_you_mean

GROUPS = ("method", "dataset", "noise", "backbone", "scale", "experiment")
#: config keys for the tests' use, never listed to a user
INTERNAL_KEYS = frozenset({"interrupt_after"})


def noise_rate_hint(name: str) -> str:
    """The hint for an unknown rate-family noise name: ``sym0.35`` -> use ``noise=sym noise.rate=0.35``;
    a rate written without its point (``sym04``) -> did you mean ``sym0.4``; a rate outside [0, 1) says
    so (a whole percentage, ``sym40``, suggests ``sym0.4``). '' when the name is not a rate family's."""
    fam = split_noise_name(name)
    if not fam:
        return ""
    prefix, rate = fam
    r = float(rate)
    if "." not in rate and len(rate) > 1 and rate.startswith("0"):   # sym04: the point left out
        fixed = f"{prefix}0.{rate[1:]}"
        return f"; did you mean noise={fixed}?"
    if not 0 <= r < 1:
        return (f"; a noise rate is a fraction in [0, 1), and {rate} is not one"
                + (f" (did you mean noise={prefix}{r / 100:g}?)" if r.is_integer() and 1 <= r < 100 else ""))
    return f"; for any rate use noise={prefix} noise.rate={rate}"


def group_choices(group: str, overrides: list[str] = ()) -> list[str]:
    """The config files of ``group`` in conf/ and in every extra config folder (plugins)."""
    from .plugins import conf_dirs

    return sorted({p.stem for d in (CONF_DIR, *conf_dirs(overrides)) for p in (d / group).glob("*.yaml")})


def add_or_override(overrides: list[str]) -> list[str]:
    """train.<key> and method.params.<key> may name keys the yaml leaves out (train.warmup_epochs,
    a method's hyperparameters): add-or-override them (``++``); build_spec then checks each name
    against the valid ones and lists them (Hydra alone would only say "Could not override").
    ``experiment=X`` is Hydra's ``+experiment=X`` (the group is not in the defaults list; both work)."""
    overrides = [f"+{o}" if o.startswith("experiment=") else o for o in overrides]
    overrides = [f"++{o}" if o.startswith(("train.", "method.params.")) and "=" in o else o for o in overrides]
    # a method parameter set on the command line wins over the yaml's params_by_dataset/params_by_noise:
    # it is kept apart under method.params_cli (spec.resolve_method_params applies it last)
    return [f"++method.params_cli.{o.lstrip('+')[len('method.params.'):]}"
            if o.lstrip("+").startswith("method.params.") and "=" in o else o for o in overrides]


def compose(overrides: list[str]):
    """Compose the Hydra config; Hydra's errors become ConfigError with the valid choices."""
    from hydra import compose as hy_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from .plugins import conf_search_overrides

    register_resolvers()
    for o in overrides:
        key, _, val = o.lstrip("+~").partition("=")
        if key in GROUPS and val and val not in group_choices(key, overrides):
            if key == "method":
                check_method_source(val, overrides)
            hint = noise_rate_hint(val) if key == "noise" else ""
            if key == "method":   # checked above: no loaded module registered it either
                hint = ("; a method of your own: method_modules=[yourpkg.methods] (the module that registers "
                        "it) and method_conf_dirs=[<folder with method/<name>.yaml>]")
            choices = group_choices(key, overrides)
            raise ConfigError(f"unknown {key} {val!r}{'' if hint and key != 'method' else did_you_mean(val, choices)}; "
                              f"valid choices: {', '.join(choices)}{hint}")
    overrides = conf_search_overrides(overrides) + add_or_override(overrides)
    try:
        with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR), job_name="nlbench"):
            cfg = hy_compose(config_name="config", overrides=overrides)
        if SWEEPS_KEY in cfg:  # an experiment's list of grids is for the CLI, not part of a run
            with open_dict(cfg):
                del cfg[SWEEPS_KEY]
        check_noise_rate(cfg, overrides)
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        m = re.match(r"Could not override '([^']+)'", first)
        if m:  # an unknown key: name it and the keys valid at its level
            parent, _, _ = m.group(1).rpartition(".")
            try:
                groups = [o for o in overrides if o.lstrip("+~").partition("=")[0] in GROUPS]
                with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR), job_name="nlbench"):
                    node = OmegaConf.select(hy_compose(config_name="config", overrides=groups), parent) \
                        if parent else hy_compose(config_name="config", overrides=groups)
                keys = sorted(str(k) for k in node.keys() if str(k) not in INTERNAL_KEYS) \
                    if hasattr(node, "keys") else []
                leaf = m.group(1).rpartition(".")[2]
                # a key that lives one level down (lr -> train.lr): name where it is
                nested = sorted(f"{k}.{leaf}" for k in keys if isinstance(node.get(k), DictConfig)
                                and leaf in node.get(k)) if keys else []
            except (HydraException, OmegaConfBaseException, ValueError):
                keys, nested = [], []
            if keys:
                hint = (f"; did you mean {' or '.join(nested)}?" if nested else did_you_mean(leaf, keys))
                raise ConfigError(f"unknown config key {m.group(1)!r}{hint}; valid keys"
                                  f"{' under ' + parent if parent else ''}: {', '.join(keys)}") from None
        raise ConfigError(f"bad override: {first}") from None


def check_method_source(name: str, overrides: list[str]) -> None:
    """A method with no yaml may come from an outside module: import the modules named by
    ``method_modules`` first (a wrong path is that import's error, not "unknown method"), and when
    one of them registered ``name``, say that its yaml is what is missing."""
    from .plugins import load_method_modules, override_list

    modules = override_list(overrides, "method_modules")
    load_method_modules(modules)
    import methods  # noqa: F401  (the built-in methods, for the registry below)
    from .method import METHODS

    if name in METHODS:
        raise ConfigError(f"method {name!r} is registered (by {METHODS.get(name).__module__}) but has no config: "
                          f"no method/{name}.yaml in conf/ or in method_conf_dirs; add "
                          f"method_conf_dirs=[<folder holding method/{name}.yaml>]")


def check_noise_rate(cfg, overrides: list[str]) -> None:
    """A rate family needs a rate; a fixed noise (human labels, real, clean) takes none."""
    from omegaconf import OmegaConf

    prefix = cfg.noise.get("prefix")
    if prefix is not None and OmegaConf.is_missing(cfg.noise, "rate"):
        raise ConfigError(f"noise={prefix} needs a rate: add noise.rate=<r> with r in [0, 1), e.g. noise.rate=0.3")
    if prefix is None and any(o.lstrip("+~").partition("=")[0] == "noise.rate" for o in overrides):
        raise ConfigError(f"noise {cfg.noise.name!r} has a fixed rate (set by its labels); noise.rate=<r> applies to "
                          f"the rate families: {', '.join(f'noise={p}' for p in RATE_FAMILIES)}")
