"""A composed config -> a validated :class:`RunSpec` (once, here; no data read).

``build_spec(cfg)`` checks the whole config: the method, dataset, scale, backbone and noise exist, the
method's parameters (resolved through ``params_by_dataset`` / ``params_by_noise`` / the command line)
are ones it takes, and every run setting is in range. Nothing below this module reads a config object.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import store
from .backbones import BACKBONES
from .data import DATASETS
from .hydra_setup import check_noise_name
from .method import METHODS, Method
from .registry import ConfigError, as_int, check_finite, check_range
from .tblog import check_logger
from .trainer import TrainConfig, check_headline, train_config_dict

PROTOCOL_KEYS = set(TrainConfig.__dataclass_fields__) | {"backbone", "backbone_options", "subset_per_class"}


@dataclass
class RunSpec:
    method: str
    method_params: dict
    dataset: str
    dataset_options: dict
    augment: dict
    noise: dict                 # name, kind, rate, options
    noise_seed: int
    backbone: str
    backbone_options: dict
    subset_per_class: int | None
    train: TrainConfig
    seed: int
    scale: str
    data_dir: Path
    results_dir: Path
    checkpoint_dir: Path
    device: torch.device
    force: bool = False
    reuse: bool = False      # a shipped reference record (<record>.json.gz) counts as finished
    progress: bool = True
    verbosity: str = "bar"      # quiet | epoch | bar
    interrupt_after: int | None = None
    diagnose_train: bool = False
    logger: str = "none"        # none | tensorboard (live curves; the record stays the source of truth)
    save_samples: bool = False  # per-sample table (samples.py) at the end and at sample_epochs
    sample_epochs: tuple = ()
    tb_dir: Path = Path("tensorboard")
    val_fraction: float = 0.0   # share of the noisy training set held out (stratified by noisy label)
    headline: str = "ensemble"  # what test_top1 means for several networks (method yaml `headline`)
    threads: int | None = None  # torch CPU threads (None: torch's default); not part of the experiment
    resolved: dict = field(default_factory=dict)

    def semantic(self) -> dict:
        """What defines the experiment (hashed into the record name); paths, device, progress and
        diagnostics are left out since they do not change the numbers."""
        out = {"method": self.method, "method_params": self.method_params, "dataset": self.dataset,
               "dataset_options": self.dataset_options, "augment": self.augment, "noise": self.noise,
               "noise_seed": self.noise_seed, "backbone": self.backbone,
               "backbone_options": self.backbone_options, "subset_per_class": self.subset_per_class,
               "train": train_config_dict(self.train), "seed": self.seed, "scale": self.scale}
        # compile and compile_mode set how fast a run goes, like the device: out of the name. compile is
        # pinned to false there so records written when it was a plain flag (default false) keep their names
        out["train"]["compile"] = False
        out["train"].pop("compile_mode")
        if out["train"]["eval_every"] == 1:   # the default: records made before the key keep their names
            out["train"].pop("eval_every")
        if self.val_fraction:   # only when used, so records made without a split keep their names
            out["val_fraction"] = self.val_fraction
        return out

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.semantic(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    @property
    def record_path(self) -> Path:
        return store.record_path(self.results_dir, dataset=self.dataset, noise=self.noise["name"],
                                 method=self.method, seed=self.seed, config_hash=self.config_hash)

    @property
    def checkpoint_path(self) -> Path:
        rel = self.record_path.relative_to(self.results_dir).with_suffix(".pt")
        return self.checkpoint_dir / rel


def _plain(x):
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x, resolve=True)
    return x


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; valid choices: auto, cpu, cuda, cuda:<n>") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return dev


def check_method_params(name: str, params: dict) -> None:
    cls = METHODS.get(name)
    valid: list[str] = []
    # a subclass that forwards **base to a parent method (gss_ssl -> dividemix) accepts its parameters too
    for klass in cls.__mro__:
        if klass is Method:
            break
        if "__init__" not in vars(klass):
            continue
        sig = inspect.signature(vars(klass)["__init__"])
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values() if p.name != "base"):
            return
        valid += [p for p in sig.parameters if p not in ("self", "base") and p not in valid]
        if "base" not in sig.parameters:
            break
    valid.append("optim")   # Method's own
    bad = sorted(set(params) - set(valid))
    if bad:
        raise ConfigError(f"method {name!r} has no parameter {', '.join(map(repr, bad))}; "
                          f"valid parameters: {', '.join(valid) or '(none)'}")


def _merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``; nested mappings (e.g. ``optim``) are merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _noise_key(noise) -> tuple[str, str | None, float | None]:
    """(name, rate family, rate) of a noise given as its config mapping (``name``, ``prefix``, ``rate``)
    or as a name alone: a rate family's name (``sym0.3``) gives its family and rate, another name
    (``clean``, ``c10n_aggre``) the rate of its file in ``conf/noise/`` (none for an unknown name, so
    only its own ``params_by_noise`` entries apply)."""
    from .hydra_setup import CONF_DIR, split_noise_name

    if isinstance(noise, str):
        family = split_noise_name(noise)
        if family:
            return noise, family[0], float(family[1])
        path = CONF_DIR / "noise" / f"{noise}.yaml"
        if not path.is_file():
            return noise, None, None
        from omegaconf import OmegaConf

        noise = {**OmegaConf.to_container(OmegaConf.load(path)), "name": noise}
    rate = noise.get("rate")
    return str(noise["name"]), noise.get("prefix"), float(rate) if isinstance(rate, (int, float)) else None


def nearest_level(levels, rate: float) -> float:
    """The listed noise level nearest ``rate``; a tie (0.35 between 0.2 and 0.5) goes to the higher level."""
    return min(levels, key=lambda lv: (round(abs(float(lv) - rate), 9), -float(lv)))


def resolve_method_params(mcfg: dict, dataset: str, noise) -> dict:
    """A method's hyperparameters for one (dataset, noise), from its yaml and the command line.

    ``noise`` is the noise config (a mapping with ``name``, and ``prefix`` / ``rate`` where it has them)
    or its name. Precedence, lowest first: ``params`` < ``params_by_dataset[dataset]`` <
    ``params_by_rate[dataset][level]`` (the listed level nearest the noise's rate, whatever its kind:
    an official table given per noise level, so that ``noise=sym noise.rate=0.3`` or a human-noise file
    takes its nearest level instead of a silent default) < ``params_by_noise[family]`` (a rate family's
    prefix, e.g. ``asym``: every rate of it) < ``params_by_noise["<dataset>/<family>"]`` <
    ``params_by_noise[noise]`` (any dataset) < ``params_by_noise["<dataset>/<noise>"]`` < ``params_cli``
    (``method.params.<k>=`` on the command line). Values that are mappings merge key by key.
    ``forget_rate: auto`` is left as is here and resolved from the noise config in :func:`prepare` (it
    needs the class count).
    """
    name, family, rate = _noise_key(noise)
    params = dict(mcfg.get("params") or {})
    by_noise = mcfg.get("params_by_noise") or {}
    by_rate = (mcfg.get("params_by_rate") or {}).get(dataset) or {}
    layers = [(mcfg.get("params_by_dataset") or {}).get(dataset)]
    if by_rate and rate is not None:
        layers.append(by_rate[nearest_level(by_rate, rate)])
    if family is not None:
        layers += [by_noise.get(family), by_noise.get(f"{dataset}/{family}")]
    layers += [by_noise.get(name), by_noise.get(f"{dataset}/{name}"), mcfg.get("params_cli")]
    for layer in layers:
        params = _merge(params, layer or {})
    return params


def _check_params_by_noise(method: str, mcfg: dict) -> None:
    """A misspelt params_by_noise / params_by_rate key would silently do nothing: every params_by_noise
    key must name a noise config or a rate family (``asym``: every rate), optionally prefixed by a dataset
    (``cifar10/sym0.8``); every params_by_rate key a dataset, and its levels rates in [0, 1]."""
    from .config import group_choices

    noises = group_choices("noise")
    for key in mcfg.get("params_by_noise") or {}:
        ds, _, nz = str(key).rpartition("/")
        if nz not in noises or (ds and ds not in DATASETS):
            raise ConfigError(f"method {method!r}: params_by_noise key {key!r} names no noise config "
                              f"(optionally '<dataset>/'); valid noises: {', '.join(noises)}; "
                              f"valid datasets: {', '.join(DATASETS.names())}")
    for ds, levels in (mcfg.get("params_by_rate") or {}).items():
        if ds not in DATASETS:
            raise ConfigError(f"method {method!r}: params_by_rate key {ds!r} names no dataset; "
                              f"valid datasets: {', '.join(DATASETS.names())}")
        if not isinstance(levels, dict) or not levels:
            raise ConfigError(f"method {method!r}: params_by_rate.{ds} must map noise levels to parameters, "
                              f"e.g. {{0.2: {{lambda_u: 0}}}}; got {levels!r}")
        for lv, vals in levels.items():
            if isinstance(lv, bool) or not isinstance(lv, (int, float)) or not 0 <= float(lv) <= 1:
                raise ConfigError(f"method {method!r}: params_by_rate.{ds} level {lv!r} is not a noise "
                                  "rate in [0, 1] (an unquoted number, e.g. 0.2)")
            if not isinstance(vals, dict):
                raise ConfigError(f"method {method!r}: params_by_rate.{ds}.{lv} must be a mapping of "
                                  f"parameters; got {vals!r}")


#: method parameters whose value ``auto`` means the noise config's expected rate (noise.expected_rate)
AUTO_RATE_PARAMS = ("forget_rate",)


def resolve_auto_rates(params: dict, noise: dict, *, dataset: str, num_classes: int) -> dict:
    """``params`` with every ``forget_rate: auto`` replaced by the noise's expected rate."""
    from .noise import expected_rate

    out = dict(params)
    for k in AUTO_RATE_PARAMS:
        if out.get(k) == "auto":
            out[k] = expected_rate(noise["kind"], noise["rate"], num_classes=num_classes, dataset=dataset,
                                   name=noise["name"], given=noise.get("expected_rate"))
    return out


VERBOSITY = ("quiet", "epoch", "bar")


def check_verbosity(value) -> str:
    if value not in VERBOSITY:
        raise ConfigError(f"unknown verbosity {value!r}; valid choices: {', '.join(VERBOSITY)}")
    return value


def build_spec(cfg) -> RunSpec:
    """Turn a composed Hydra config into a validated :class:`RunSpec` (no data is read)."""
    import methods  # noqa: F401  (registers every method)
    from .plugins import load_method_modules

    c = _plain(cfg)
    load_method_modules(c.get("method_modules"))   # a researcher's own methods (and entry points)
    mcfg, dcfg, ncfg, bcfg = c["method"], c["dataset"], c["noise"], c["backbone"]
    # inf / nan anywhere (method.params.lambda2=inf, train.lr=nan) is bad input now, not a crash mid-run;
    # the command line's method.params.<k> is kept as method.params_cli.<k>: named as the user typed it
    check_finite(mcfg.get("params_cli") or {}, "method.params")
    check_finite(c, "")
    method, dataset, scale = mcfg["name"], dcfg["name"], c["scale"]["name"]
    METHODS.get(method)
    DATASETS.get(dataset)
    scales = dcfg.get("scales", {}) or {}
    if scale != "paper" and scale not in scales:
        raise ConfigError(f"dataset {dataset!r} has no scale {scale!r}; valid choices: paper, {', '.join(scales)}")
    protocol = dict(dcfg["protocol"])
    scale_cfg = dict(scales.get(scale, {}) or {}) if scale != "paper" else {}
    augment = {**(dcfg.get("augment") or {}), **(scale_cfg.pop("augment", None) or {})}  # a scale may change it
    # a scale may hold out a noisy validation split by default (scale=cpu: what chooses between options);
    # val_fraction=<f> on the command line wins, val_fraction=0 turns it off
    scale_val = scale_cfg.pop("val_fraction", 0.0)
    val_fraction = scale_val if c.get("val_fraction") is None else c["val_fraction"]
    protocol.update(scale_cfg)
    protocol.update((mcfg.get("train") or {}))
    protocol.update((mcfg.get("train_by_dataset") or {}).get(dataset, {}) or {})
    protocol.update({k: v for k, v in (c.get("train") or {}).items() if v is not None})
    unknown = set(protocol) - PROTOCOL_KEYS
    if unknown:
        raise ConfigError(f"unknown train key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(sorted(PROTOCOL_KEYS))}")
    if bcfg["name"] == "auto":   # the protocol's backbone; backbone.options (e.g. pretrained) go on top
        backbone = protocol.pop("backbone")
        boptions = {**(protocol.pop("backbone_options", {}) or {}), **(bcfg.get("options") or {})}
    else:
        protocol.pop("backbone", None), protocol.pop("backbone_options", None)
        backbone, boptions = bcfg["name"], dict(bcfg.get("options") or {})
    BACKBONES.get(backbone)
    subset = protocol.pop("subset_per_class", None)
    train = TrainConfig(**protocol)
    _check_params_by_noise(method, mcfg)
    params = resolve_method_params(mcfg, dataset, ncfg)
    check_method_params(method, params)
    headline = check_headline(str(mcfg.get("headline", "ensemble")), METHODS.get(method).num_networks)
    from .noise import NOISE

    NOISE.get(ncfg["kind"])
    check_noise_name(ncfg)
    check_range("noise rate", ncfg["rate"], 0, 1, hi_open=True)   # "noise rate 1.5 is outside [0, 1)"
    noise = {"name": ncfg["name"], "kind": ncfg["kind"], "rate": float(ncfg["rate"]),
             "options": dict(ncfg.get("options") or {})}
    if ncfg.get("expected_rate") is not None:
        noise["expected_rate"] = ncfg["expected_rate"]
    if ncfg["kind"] in ("human", "real"):   # no class count needed: fail before any run starts
        resolve_auto_rates(params, noise, dataset=dataset, num_classes=0)
    seed, noise_seed = as_int("seed", c["seed"]), as_int("noise_seed", c["noise_seed"])
    interrupt_after = None if c.get("interrupt_after") is None else as_int("interrupt_after", c["interrupt_after"])
    spec = RunSpec(
        method=method, method_params=params, dataset=dataset, dataset_options=dict(dcfg.get("options") or {}),
        augment=augment,
        noise=noise, noise_seed=noise_seed, backbone=backbone, backbone_options=boptions, subset_per_class=subset,
        train=train, seed=seed, scale=scale, data_dir=Path(str(c["data_dir"])).expanduser(),
        results_dir=Path(str(c["results_dir"])), checkpoint_dir=Path(str(c["checkpoint_dir"])),
        device=_device(str(c.get("device", "auto"))), force=bool(c.get("force", False)),
        reuse=bool(c.get("reuse", False)),
        progress=bool(c.get("progress", True)), verbosity=check_verbosity(c.get("verbosity", "bar")),
        diagnose_train=bool(c.get("diagnose_train", False)),
        save_samples=_as_bool("save_samples", c.get("save_samples", False)),
        sample_epochs=tuple(as_int("sample_epochs", e) for e in (c.get("sample_epochs") or ())),
        logger=check_logger(c.get("logger", "none")), tb_dir=Path(str(c.get("tb_dir", "tensorboard"))).expanduser(),
        val_fraction=check_range("val_fraction", val_fraction or 0.0, 0, 1, hi_open=True),
        interrupt_after=interrupt_after, headline=headline, threads=check_threads(c.get("threads")), resolved=c)
    sample_epochs_of(spec)   # epochs outside the run are bad input, found before any data is read
    return spec


def check_method_values(spec: RunSpec) -> None:
    """The method's own checks of its parameters (ranges, choices), without data: its constructor runs on
    stand-in networks and labels (10 classes), so ``--dry-run`` refuses what the run would refuse. Only a
    ConfigError (or a TypeError: an argument it does not take) counts; anything the stand-ins themselves
    trip over is left to the run, which builds the real networks."""
    cls = METHODS.get(spec.method)
    k = 10
    params = {key: (0.2 if v == "auto" and key in AUTO_RATE_PARAMS else v) for key, v in spec.method_params.items()}
    nets = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, k)) for _ in range(cls.num_networks)]
    try:
        cls(nets=nets, num_classes=k, noisy_labels=torch.arange(4 * k) % k,
            generator=torch.Generator().manual_seed(0), **params)
    except ConfigError as e:
        raise ConfigError(f"method {spec.method!r}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"method {spec.method!r}: {e}") from None
    except Exception:   # the stand-ins are not real networks: the run's own prepare() decides
        pass


def _as_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def sample_epochs_of(spec: RunSpec) -> tuple[int, ...]:
    """The 1-based epochs whose per-sample table a run keeps: ``sample_epochs`` and, with
    ``save_samples``, the last; epochs beyond the run are refused."""
    bad = [e for e in spec.sample_epochs if not 1 <= e <= spec.train.epochs]
    if bad:
        raise ConfigError(f"sample_epochs={list(spec.sample_epochs)}: epoch(s) {bad} outside 1..{spec.train.epochs}")
    return tuple(sorted(set(spec.sample_epochs) | ({spec.train.epochs} if spec.save_samples else set())))


def check_threads(value) -> int | None:
    """``threads``: null (torch's default) or a positive number of CPU threads for torch."""
    if value is None:
        return None
    n = as_int("threads", value)
    if n < 1:
        raise ConfigError(f"threads={value!r} must be a positive number of CPU threads, or null for torch's default")
    return n
