"""Config -> typed objects (once, here) -> a trained method and a run record.

``build_spec(cfg)`` validates the whole config without touching data; ``execute(spec)`` loads the data,
draws the noise, builds the networks and the method, trains through :class:`nlbench.trainer.Trainer`
and writes the record. Nothing below this module reads a config object.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import store
from .backbones import BACKBONES, build_backbone
from .data import DATASETS, InMemoryData, balanced_subset, data_line, load_dataset
from .hydra_setup import check_noise_name
from .method import METHODS, Method
from .registry import ConfigError, RunError, as_int, check_range
from .tblog import check_logger
from .trainer import TrainConfig, Trainer, check_headline, train_config_dict

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


def resolve_method_params(mcfg: dict, dataset: str, noise: str) -> dict:
    """A method's hyperparameters for one (dataset, noise), from its yaml and the command line.

    Precedence, lowest first: ``params`` < ``params_by_dataset[dataset]`` < ``params_by_noise[noise]``
    (any dataset) < ``params_by_noise["<dataset>/<noise>"]`` < ``params_cli`` (``method.params.<k>=``
    on the command line). Values that are mappings merge key by key. ``forget_rate: auto`` is left
    as is here and resolved from the noise config in :func:`prepare` (it needs the class count).
    """
    params = dict(mcfg.get("params") or {})
    by_noise = mcfg.get("params_by_noise") or {}
    for layer in ((mcfg.get("params_by_dataset") or {}).get(dataset), by_noise.get(noise),
                  by_noise.get(f"{dataset}/{noise}"), mcfg.get("params_cli")):
        params = _merge(params, layer or {})
    return params


def _check_params_by_noise(method: str, mcfg: dict) -> None:
    """A misspelt params_by_noise key would silently do nothing: every key must name a noise config,
    optionally prefixed by a dataset (``cifar10/sym0.8``)."""
    from .config import group_choices

    noises = group_choices("noise")
    for key in mcfg.get("params_by_noise") or {}:
        ds, _, nz = str(key).rpartition("/")
        if nz not in noises or (ds and ds not in DATASETS):
            raise ConfigError(f"method {method!r}: params_by_noise key {key!r} names no noise config "
                              f"(optionally '<dataset>/'); valid noises: {', '.join(noises)}; "
                              f"valid datasets: {', '.join(DATASETS.names())}")


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
    params = resolve_method_params(mcfg, dataset, ncfg["name"])
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
        progress=bool(c.get("progress", True)), verbosity=check_verbosity(c.get("verbosity", "bar")),
        diagnose_train=bool(c.get("diagnose_train", False)),
        save_samples=_as_bool("save_samples", c.get("save_samples", False)),
        sample_epochs=tuple(as_int("sample_epochs", e) for e in (c.get("sample_epochs") or ())),
        logger=check_logger(c.get("logger", "none")), tb_dir=Path(str(c.get("tb_dir", "tensorboard"))).expanduser(),
        val_fraction=check_range("val_fraction", val_fraction or 0.0, 0, 1, hi_open=True),
        interrupt_after=interrupt_after, headline=headline, threads=check_threads(c.get("threads")), resolved=c)
    _sample_epochs(spec)   # epochs outside the run are bad input, found before any data is read
    return spec


def _as_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def _sample_epochs(spec: RunSpec) -> tuple[int, ...]:
    """The 1-based epochs whose per-sample table a run keeps: ``sample_epochs`` and, with
    ``save_samples``, the last; epochs beyond the run are refused."""
    bad = [e for e in spec.sample_epochs if not 1 <= e <= spec.train.epochs]
    if bad:
        raise ConfigError(f"sample_epochs={list(spec.sample_epochs)}: epoch(s) {bad} outside 1..{spec.train.epochs}")
    return tuple(sorted(set(spec.sample_epochs) | ({spec.train.epochs} if spec.save_samples else set())))


def _dataset_index(data):
    idx = getattr(data, "train_index", None)
    return None if idx is None else np.asarray(idx)


def check_threads(value) -> int | None:
    """``threads``: null (torch's default) or a positive number of CPU threads for torch."""
    if value is None:
        return None
    n = as_int("threads", value)
    if n < 1:
        raise ConfigError(f"threads={value!r} must be a positive number of CPU threads, or null for torch's default")
    return n


# ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    data: object
    noise: object                   # NoiseResult
    stream: object
    test_sets: dict
    method: Method
    clean: torch.Tensor | None
    method_params: dict             # as passed to the method (forget_rate: auto resolved)
    val: dict | None = None         # the noisy validation split, when val_fraction > 0
    backbone_init: dict | str = "scratch"   # or what pretrained weights loaded where


_DATA_CACHE: dict | None = None    # active only inside shared_data_cache()
_DATA_SAID: set[str] = set()       # data lines this process printed: each data copy is named once


@contextlib.contextmanager
def shared_data_cache():
    """Within this block every dataset is loaded once (validating a sweep of 40 CIFAR members loads
    CIFAR once); outside it, each run loads its own copy as before."""
    global _DATA_CACHE
    _DATA_CACHE = {}
    try:
        yield
    finally:
        _DATA_CACHE = None


def _load_dataset(name: str, *, data_dir: Path, download: bool, **options):
    if _DATA_CACHE is None:
        return load_dataset(name, data_dir=data_dir, download=download, **options)
    key = (name, str(data_dir), download, json.dumps(options, sort_keys=True, default=str))
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(name, data_dir=data_dir, download=download, **options)
    return _DATA_CACHE[key]


def prepare(spec: RunSpec) -> Prepared:
    """Load data, draw noise, build streams, networks and the method."""
    from .noise import NoiseContext, apply_noise

    data = _load_dataset(spec.dataset, data_dir=spec.data_dir, download=bool(spec.dataset_options.get("download")),
                         **{k: v for k, v in spec.dataset_options.items() if k != "download"})
    in_memory = isinstance(data, InMemoryData)
    if spec.subset_per_class:
        if not in_memory:
            raise ConfigError(f"subset_per_class applies to in-memory datasets, not {spec.dataset}")
        data = data.subset(balanced_subset(data.train_y, int(spec.subset_per_class), spec.noise_seed))
    if in_memory:
        clean = data.train_y
        nctx = NoiseContext(dataset=spec.dataset, num_classes=data.num_classes, data_dir=spec.data_dir,
                            train_index=data.train_index, coarse_labels=data.coarse_train,
                            features=data.train_x.reshape(len(data.train_x), -1).numpy())   # a view: no copy
    else:
        clean = None
        nctx = NoiseContext(dataset=spec.dataset, num_classes=len(data.classes), data_dir=spec.data_dir,
                            given_noisy=np.asarray([lab for _, lab in data.train], dtype=np.int64))
    noise = apply_noise(spec.noise["kind"], name=spec.noise["name"], clean=clean, rate=spec.noise["rate"],
                        seed=spec.noise_seed, ctx=nctx, **spec.noise["options"])
    noisy_np = noise.noisy_labels
    val = None
    if spec.val_fraction:
        data, clean, noisy_np, val = _hold_out_val(data, clean, noisy_np, spec.val_fraction, spec.noise_seed)
    noisy = torch.from_numpy(noisy_np)
    dev, t = spec.device, spec.train
    cl = t.channels_last  # faster on CUDA and on CPU (measured: cnn_small eval 2.5x, train 1.2x on 2 cores)
    if in_memory:
        from .stream import DeviceStream

        stream = DeviceStream(data.train_x, noisy, mean=data.mean, std=data.std, batch_size=t.batch_size,
                              infer_batch_size=t.infer_batch_size, device=dev, channels_last=cl, amp=t.amp,
                              crop_pad=int(spec.augment.get("crop_pad", 0)), flip=bool(spec.augment.get("flip", False)),
                              progress=spec.progress)
        test = DeviceStream(data.test_x, torch.from_numpy(data.test_y), mean=data.mean, std=data.std,
                            infer_batch_size=t.infer_batch_size, device=dev, channels_last=cl, amp=t.amp)
        test_sets = {"test": test.eval_batches}
        if val is not None:  # scored against the noisy labels, as a user without clean labels would
            vs = DeviceStream(val.pop("x"), torch.from_numpy(val.pop("y")), mean=data.mean, std=data.std,
                              infer_batch_size=t.infer_batch_size, device=dev, channels_last=cl, amp=t.amp)
            test_sets["val"] = vs.eval_batches
        num_classes, in_ch = data.num_classes, data.in_channels
        extra = {"input_size": int(data.train_x.shape[-1])} if spec.backbone == "mlp" else {}
    else:
        from .filedata import FileStream

        stream = FileStream(data, noisy, batch_size=t.batch_size, num_workers=t.num_workers, device=dev,
                            channels_last=cl, infer_batch_size=t.infer_batch_size, amp=t.amp,
                            progress=spec.progress, **spec.augment)
        test_sets = {name: (lambda n=name: stream.eval_batches(n, t.infer_batch_size)) for name in data.tests}
        num_classes, in_ch, extra = len(data.classes), 3, {}
    cls = METHODS.get(spec.method)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        nets = [build_backbone(spec.backbone, num_classes=num_classes, in_channels=in_ch,
                               **{**extra, **spec.backbone_options}) for _ in range(cls.num_networks)]
    gen = torch.Generator(device=dev).manual_seed(spec.seed + 1)
    params = resolve_auto_rates(spec.method_params, spec.noise, dataset=spec.dataset, num_classes=num_classes)
    try:
        method = cls(nets=nets, num_classes=num_classes, noisy_labels=noisy, generator=gen, **params)
    except TypeError as e:
        raise ConfigError(f"method {spec.method!r}: {e}") from None
    return Prepared(data, noise, stream, test_sets, method,
                    None if clean is None else torch.from_numpy(np.asarray(clean)), params, val,
                    getattr(nets[0], "nlbench_init", "scratch"))


def _hold_out_val(data, clean, noisy: np.ndarray, fraction: float, seed: int):
    """Hold out ``fraction`` of the noisy training set, stratified by *noisy* label, drawn with ``seed``
    (the noise seed). Returns the training data, clean and noisy labels of what is left, and the split:
    for in-memory data its images ``x`` and noisy labels ``y``; for file lists a ``val`` test split. The
    noise was drawn on the full set first, so the labels of the kept samples do not depend on the split."""
    import dataclasses

    from .data import stratified_split

    tr, va = stratified_split(noisy, fraction, seed)
    info = {"fraction": fraction, "num_val": int(len(va)), "labels": "noisy",
            "hash": hashlib.sha256(va.astype("<i8").tobytes()).hexdigest()[:16]}
    if isinstance(data, InMemoryData):
        t = torch.from_numpy(tr)
        val = {**info, "x": data.train_x[torch.from_numpy(va)], "y": noisy[va].copy()}
        data = dataclasses.replace(
            data, train_x=data.train_x[t], train_y=data.train_y[tr], train_index=data.train_index[tr],
            coarse_train=None if data.coarse_train is None else data.coarse_train[tr])
        return data, clean[tr], noisy[tr], val
    if "val" in data.tests:
        raise ConfigError(f"val_fraction={fraction} but {data.name} has its own clean validation split "
                          f"'val'; use it (val_fraction=0) or choose a dataset without one")
    split = [(data.train[i][0], int(noisy[i])) for i in va]
    data = dataclasses.replace(data, train=[data.train[i] for i in tr], tests={**data.tests, "val": split})
    return data, None, noisy[tr], info


def _git(root: Path | None = None) -> dict:
    """The commit of the checkout at ``root`` (default: this source tree) and whether it has changes.
    Both are null when unknown: no git, or a copy without ``.git`` (a tarball, an sdist), even one
    unpacked inside another repository; a copy without git must not claim to be clean."""
    root = Path(root or Path(__file__).resolve().parent.parent).resolve()
    unknown = {"commit": None, "dirty": None}
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        lines = top.stdout.split()
        if top.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
            return unknown
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return unknown
    return {"commit": lines[1], "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _versions(device: torch.device) -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "torchvision", "timm", "numpy", "scikit-learn", "hydra-core"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    v["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    v["torch_threads"] = torch.get_num_threads()
    return v


def final_metrics(history: list[dict], primary: str) -> dict:
    """The record's ``final`` block from the per-epoch history. Only evaluated epochs count (with
    ``train.eval_every`` = k the test splits are scored every k epochs and at the last): ``acc_best``
    is the best evaluated epoch, ``acc_last10`` the mean of the evaluated epochs among the last 10
    (``n_last10`` of them). ``collapsed`` flags a one-class end (:func:`metrics.collapse_status`)."""
    from .metrics import collapse_status

    rows = [h for h in history if primary in h]
    if not rows:
        return {}
    accs = [h[primary] for h in rows]
    best = int(np.argmax(accs))
    last_epoch = history[-1]["epoch"]
    tail = [h[primary] for h in rows if h["epoch"] > last_epoch - 10]
    out = {"metric": primary, "acc_last": accs[-1], "acc_best": accs[best], "best_epoch": rows[best]["epoch"],
           "acc_last10": float(np.mean(tail)), "n_last10": len(tail)}
    top5 = primary.replace("_top1", "_top5")
    if top5 in history[-1]:
        out["top5_last"] = history[-1][top5]
    for h in history[-1:]:
        for k, v in h.items():
            if k.endswith("_top1") or k.endswith("_top5"):
                out[f"last_{k}"] = v
    vrows = [h for h in history if "val_top1" in h]
    if vrows:   # test at the best (noisy or clean) validation epoch
        b = int(np.argmax([h["val_top1"] for h in vrows]))
        out["val_best_epoch"] = vrows[b]["epoch"]
        out["test_at_best_val"] = vrows[b].get("test_top1")
    out.update(collapse_status(history[-1], split=primary.removesuffix("_top1")))
    return out


def check_writable(spec: RunSpec) -> None:
    """results_dir and checkpoint_dir must be creatable and writable before any epoch is spent:
    create them and write (then remove) a probe file; a failure is a ConfigError naming the folder."""
    import tempfile

    for key, folder in (("results_dir", spec.results_dir), ("checkpoint_dir", spec.checkpoint_dir)):
        if folder.exists() and not folder.is_dir():   # mkdir would only say "File exists"
            raise ConfigError(f"{key}={str(folder)!r} is a file, not a folder; set {key}=<a folder>")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".nlbench-write-probe-"):
                pass
        except OSError as e:
            raise ConfigError(f"{key}={str(folder)!r} is not writable ({e.strerror or type(e).__name__}"
                              f"{': ' + e.filename if getattr(e, 'filename', None) else ''}); "
                              f"set {key}=<a writable folder>") from None


def prune_empty_dirs(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` (included) while they are empty: a finished
    run leaves no empty checkpoint folders behind. A folder another job is using is not empty."""
    folder, stop = Path(folder), Path(stop)
    while folder == stop or stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == stop:
            return
        folder = folder.parent


def execute(spec: RunSpec, *, log=None) -> dict:
    """Run (or skip) one experiment; returns the record (a finished one is written atomically)."""
    quiet = spec.verbosity == "quiet"
    log = log or (lambda s: None if quiet else print(s, file=sys.stderr, flush=True))
    path = spec.record_path
    if not spec.force and store.is_finished(path):
        rec = store.read_record(path)
        log(f"skipping: finished record exists at {path} (pass force=true to rerun)")
        return {**rec, "_skipped": True, "_path": str(path)}
    from .runlock import RunBusy, RunLock

    check_writable(spec)   # a clear error for an unwritable folder, before the lock file is made there
    lock = RunLock(spec.checkpoint_path.with_suffix(".lock"))
    try:
        lock.acquire()
    except RunBusy as e:   # another process runs this cell: leave its checkpoint alone, write nothing
        log(f"busy: {e}")
        return {"status": "busy", "message": str(e), "final": {}, "_skipped": True, "_path": None}
    except OSError as e:   # a full disk, say: one line that names the file
        raise RunError(f"cannot write the run's lock file {lock.path}: {e.strerror or e}") from None
    threads = torch.get_num_threads()
    try:
        if not spec.force and store.is_finished(path):   # it finished in the process we waited behind
            rec = store.read_record(path)
            log(f"skipping: finished record exists at {path} (pass force=true to rerun)")
            return {**rec, "_skipped": True, "_path": str(path)}
        if spec.threads:   # before any tensor work; the record's versions.torch_threads shows it
            torch.set_num_threads(spec.threads)
        return _execute(spec, log, path)
    finally:
        torch.set_num_threads(threads)
        lock.release()
        prune_empty_dirs(spec.checkpoint_path.parent, spec.checkpoint_dir)


def _execute(spec: RunSpec, log, path: Path) -> dict:
    t0, quiet = time.time(), spec.verbosity == "quiet"
    git = _git()  # the code as it was when the run started
    prep = prepare(spec)
    said = data_line(spec.dataset, prep.data)
    if said not in _DATA_SAID:   # which copy of the data (official MD5s or not), once per process
        _DATA_SAID.add(said)
        log(said)
    sinks = []
    if spec.logger == "tensorboard":
        from .tblog import TensorBoardSink

        rel = spec.record_path.relative_to(spec.results_dir).with_suffix("")
        sinks.append(TensorBoardSink(spec.tb_dir / rel, store.flatten({**spec.semantic(),
                                                                       "method_params": prep.method_params})))
    trainer = Trainer(prep.method, prep.stream, prep.test_sets, spec.train, device=spec.device,
                      data_seed=spec.seed, clean_labels=prep.clean,
                      checkpoint=spec.checkpoint_path,
                      progress=spec.progress and spec.verbosity == "bar", interrupt_after=spec.interrupt_after,
                      log=log, diagnose_train=spec.diagnose_train, headline=spec.headline, log_epochs=not quiet,
                      sinks=sinks, sample_epochs=_sample_epochs(spec), dataset_index=_dataset_index(prep.data))
    res = trainer.fit()
    primary = next(iter(prep.test_sets)) + "_top1"
    if "val" in prep.test_sets and "test" in prep.test_sets:
        primary = "test_top1"
    data = prep.data
    record = {
        "schema_version": store.SCHEMA_VERSION, "status": res.status, "message": res.message,
        "method": spec.method, "dataset": spec.dataset, "scale": spec.scale, "seed": spec.seed,
        "noise_seed": spec.noise_seed, "backbone": spec.backbone, "backbone_init": prep.backbone_init,
        "epochs": spec.train.epochs,
        "config_hash": spec.config_hash, "method_module": type(prep.method).__module__,
        "noise": {**prep.noise.to_record(), "options": spec.noise["options"]},
        "data": {"num_train": int(prep.stream.num_train), "classes": list(getattr(data, "classes", [])),
                 **{k: v for k, v in getattr(data, "meta", {}).items() if isinstance(v, (str, int, float, bool, type(None)))}},
        "effective": {**spec.semantic(), "method_params": prep.method_params, "train": train_config_dict(spec.train),
                      "optim_plan": None if trainer.plan is None else trainer.plan.to_dict()},
        "val_split": prep.val,
        "config": spec.resolved, "git": git, "versions": _versions(spec.device),
        # how the run executed, not what it computed: the compile mode train.compile resolved to
        "runtime": {"compiled": trainer.compile_mode, "cuda_graphs": trainer.cuda_graphs}, "history": res.history,
        "final": {**final_metrics(res.history, primary), "headline": spec.headline},
        "wall_s": res.wall_s, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_this_call_s": time.time() - t0,
    }
    for sink in sinks:
        sink.close(None if res.status == "interrupted" else record["final"])
    if trainer.samples and res.status != "interrupted":   # before the record: a record never points at nothing
        from .samples import samples_path, write_samples

        write_samples(samples_path(path), trainer.samples)
        record["samples"] = {"file": samples_path(path).name, "epochs": sorted(trainer.samples)}
    if res.status == "interrupted":
        return {**record, "_path": None}
    record = store.ordered(record)
    store.atomic_write_json(path, record)
    trainer.discard_checkpoint()   # execute() prunes the emptied folders once the run's lock is gone
    return {**record, "_path": str(path)}


def write_failure(spec: RunSpec, exc: BaseException, tb: str = "") -> dict:
    """Record a run that raised while it ran: status ``failed`` with the exception as its message.

    ``failed`` is not final, so the next run of the same config retries it (resuming from the kept
    checkpoint). A finished record already at the path (a forced rerun that crashed) is left as it is.
    """
    path = spec.record_path
    record = store.ordered({
        "schema_version": store.SCHEMA_VERSION, "status": "failed",
        "message": f"{type(exc).__name__}: {exc}".strip(), "method": spec.method, "dataset": spec.dataset,
        "scale": spec.scale, "seed": spec.seed, "noise_seed": spec.noise_seed, "final": {},
        "noise": {"name": spec.noise["name"], "kind": spec.noise["kind"], "nominal_rate": spec.noise["rate"],
                  "options": spec.noise["options"]},
        "backbone": spec.backbone, "epochs": spec.train.epochs, "config_hash": spec.config_hash,
        "traceback": tb.splitlines()[-30:], "effective": {**spec.semantic(), "train": train_config_dict(spec.train)},
        "git": _git(), "versions": _versions(spec.device), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": spec.resolved, "history": [],
    })
    if store.is_finished(path):
        return {**record, "_path": None}
    try:
        store.atomic_write_json(path, record)
    except OSError as e:  # the failure may be the disk itself: still report it, never mask it
        print(f"could not write the failed record {path}: {e}", file=sys.stderr)
        return {**record, "_path": None}
    return {**record, "_path": str(path)}
