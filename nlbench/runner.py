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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import store
from .backbones import BACKBONES, build_backbone
from .data import DATASETS, InMemoryData, balanced_subset, load_dataset
from .hydra_setup import check_noise_name
from .method import METHODS, Method
from .registry import ConfigError, as_int, check_range
from .trainer import TrainConfig, Trainer, train_config_dict

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
    resolved: dict = field(default_factory=dict)

    def semantic(self) -> dict:
        """What defines the experiment (hashed into the record name); paths, device, progress and
        diagnostics are left out since they do not change the numbers."""
        return {"method": self.method, "method_params": self.method_params, "dataset": self.dataset,
                "dataset_options": self.dataset_options, "augment": self.augment, "noise": self.noise,
                "noise_seed": self.noise_seed, "backbone": self.backbone,
                "backbone_options": self.backbone_options, "subset_per_class": self.subset_per_class,
                "train": train_config_dict(self.train), "seed": self.seed, "scale": self.scale}

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
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values() if p.name != "base"):
        return
    valid = [p for p in sig.parameters if p not in ("self", "base")]
    bad = sorted(set(params) - set(valid))
    if bad:
        raise ConfigError(f"method {name!r} has no parameter {', '.join(map(repr, bad))}; "
                          f"valid parameters: {', '.join(valid) or '(none)'}")


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
    protocol.update(scales.get(scale, {}) if scale != "paper" else {})
    protocol.update((mcfg.get("train") or {}))
    protocol.update((mcfg.get("train_by_dataset") or {}).get(dataset, {}) or {})
    protocol.update({k: v for k, v in (c.get("train") or {}).items() if v is not None})
    unknown = set(protocol) - PROTOCOL_KEYS
    if unknown:
        raise ConfigError(f"unknown train key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(sorted(PROTOCOL_KEYS))}")
    if bcfg["name"] == "auto":
        backbone, boptions = protocol.pop("backbone"), dict(protocol.pop("backbone_options", {}) or {})
    else:
        protocol.pop("backbone", None), protocol.pop("backbone_options", None)
        backbone, boptions = bcfg["name"], dict(bcfg.get("options") or {})
    BACKBONES.get(backbone)
    subset = protocol.pop("subset_per_class", None)
    train = TrainConfig(**protocol)
    params = dict(mcfg.get("params") or {})
    params.update((mcfg.get("params_by_dataset") or {}).get(dataset, {}) or {})
    check_method_params(method, params)
    from .noise import NOISE

    NOISE.get(ncfg["kind"])
    check_noise_name(ncfg)
    check_range(f"noise rate (noise={ncfg['name']})", ncfg["rate"], 0, 1, hi_open=True)
    seed, noise_seed = as_int("seed", c["seed"]), as_int("noise_seed", c["noise_seed"])
    interrupt_after = None if c.get("interrupt_after") is None else as_int("interrupt_after", c["interrupt_after"])
    return RunSpec(
        method=method, method_params=params, dataset=dataset, dataset_options=dict(dcfg.get("options") or {}),
        augment=dict(dcfg.get("augment") or {}),
        noise={"name": ncfg["name"], "kind": ncfg["kind"], "rate": float(ncfg["rate"]),
               "options": dict(ncfg.get("options") or {})},
        noise_seed=noise_seed, backbone=backbone, backbone_options=boptions, subset_per_class=subset,
        train=train, seed=seed, scale=scale, data_dir=Path(str(c["data_dir"])).expanduser(),
        results_dir=Path(str(c["results_dir"])), checkpoint_dir=Path(str(c["checkpoint_dir"])),
        device=_device(str(c.get("device", "auto"))), force=bool(c.get("force", False)),
        progress=bool(c.get("progress", True)), verbosity=check_verbosity(c.get("verbosity", "bar")), diagnose_train=bool(c.get("diagnose_train", False)),
        interrupt_after=interrupt_after, resolved=c)


# ---------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    data: object
    noise: object                   # NoiseResult
    stream: object
    test_sets: dict
    method: Method
    clean: torch.Tensor | None


_DATA_CACHE: dict | None = None    # active only inside shared_data_cache()


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
                            train_index=data.train_index, coarse_labels=data.coarse_train)
    else:
        clean = None
        nctx = NoiseContext(dataset=spec.dataset, num_classes=len(data.classes), data_dir=spec.data_dir,
                            given_noisy=np.asarray([lab for _, lab in data.train], dtype=np.int64))
    noise = apply_noise(spec.noise["kind"], name=spec.noise["name"], clean=clean, rate=spec.noise["rate"],
                        seed=spec.noise_seed, ctx=nctx, **spec.noise["options"])
    noisy = torch.from_numpy(noise.noisy_labels)
    dev, t = spec.device, spec.train
    cl = t.channels_last  # faster on CUDA and on CPU (measured: cnn_small eval 2.5x, train 1.2x on 2 cores)
    if in_memory:
        from .stream import DeviceStream

        stream = DeviceStream(data.train_x, noisy, mean=data.mean, std=data.std, batch_size=t.batch_size,
                              infer_batch_size=t.infer_batch_size, device=dev, channels_last=cl, amp=t.amp,
                              crop_pad=int(spec.augment.get("crop_pad", 0)), flip=bool(spec.augment.get("flip", False)))
        test = DeviceStream(data.test_x, torch.from_numpy(data.test_y), mean=data.mean, std=data.std,
                            infer_batch_size=t.infer_batch_size, device=dev, channels_last=cl, amp=t.amp)
        test_sets = {"test": test.eval_batches}
        num_classes, in_ch = data.num_classes, data.in_channels
        extra = {"input_size": int(data.train_x.shape[-1])} if spec.backbone == "mlp" else {}
    else:
        from .filedata import FileStream

        stream = FileStream(data, noisy, batch_size=t.batch_size, num_workers=t.num_workers, device=dev,
                            channels_last=cl, infer_batch_size=t.infer_batch_size, amp=t.amp, **spec.augment)
        test_sets = {name: (lambda n=name: stream.eval_batches(n, t.infer_batch_size)) for name in data.tests}
        num_classes, in_ch, extra = len(data.classes), 3, {}
    cls = METHODS.get(spec.method)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        nets = [build_backbone(spec.backbone, num_classes=num_classes, in_channels=in_ch,
                               **{**extra, **spec.backbone_options}) for _ in range(cls.num_networks)]
    gen = torch.Generator(device=dev).manual_seed(spec.seed + 1)
    try:
        method = cls(nets=nets, num_classes=num_classes, noisy_labels=noisy, generator=gen, **spec.method_params)
    except TypeError as e:
        raise ConfigError(f"method {spec.method!r}: {e}") from None
    return Prepared(data, noise, stream, test_sets, method,
                    None if clean is None else torch.from_numpy(np.asarray(clean)))


def _git() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


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
    accs = [h[primary] for h in history if primary in h]
    if not accs:
        return {}
    best = int(np.argmax(accs))
    out = {"metric": primary, "acc_last": accs[-1], "acc_best": accs[best], "best_epoch": best + 1,
           "acc_last10": float(np.mean(accs[-10:])), "n_last10": len(accs[-10:])}
    top5 = primary.replace("_top1", "_top5")
    if top5 in history[-1]:
        out["top5_last"] = history[-1][top5]
    for h in history[-1:]:
        for k, v in h.items():
            if k.endswith("_top1") or k.endswith("_top5"):
                out[f"last_{k}"] = v
    if any("val_top1" in h for h in history):   # Clothing1M protocol: test at the best clean-val epoch
        vals = [h.get("val_top1", -1) for h in history]
        b = int(np.argmax(vals))
        out["val_best_epoch"] = b + 1
        out["test_at_best_val"] = history[b].get("test_top1")
    return out


def check_writable(spec: RunSpec) -> None:
    """results_dir and checkpoint_dir must be creatable and writable before any epoch is spent:
    create them and write (then remove) a probe file; a failure is a ConfigError naming the folder."""
    import tempfile

    for key, folder in (("results_dir", spec.results_dir), ("checkpoint_dir", spec.checkpoint_dir)):
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
    t0 = time.time()
    git = _git()  # the code as it was when the run started
    prep = prepare(spec)
    check_writable(spec)
    trainer = Trainer(prep.method, prep.stream, prep.test_sets, spec.train, device=spec.device,
                      data_seed=spec.seed, clean_labels=prep.clean,
                      checkpoint=spec.checkpoint_path,
                      progress=spec.progress and spec.verbosity == "bar", interrupt_after=spec.interrupt_after,
                      log=log, diagnose_train=spec.diagnose_train, log_epochs=not quiet)
    res = trainer.fit()
    primary = next(iter(prep.test_sets)) + "_top1"
    if "val" in prep.test_sets and "test" in prep.test_sets:
        primary = "test_top1"
    data = prep.data
    record = {
        "schema_version": store.SCHEMA_VERSION, "status": res.status, "message": res.message,
        "method": spec.method, "dataset": spec.dataset, "scale": spec.scale, "seed": spec.seed,
        "noise_seed": spec.noise_seed, "backbone": spec.backbone, "epochs": spec.train.epochs,
        "config_hash": spec.config_hash, "method_module": type(prep.method).__module__,
        "noise": {**prep.noise.to_record(), "options": spec.noise["options"]},
        "data": {"num_train": int(prep.stream.num_train), "classes": list(getattr(data, "classes", [])),
                 **{k: v for k, v in getattr(data, "meta", {}).items() if isinstance(v, (str, int, float, bool, type(None)))}},
        "effective": {**spec.semantic(), "train": train_config_dict(spec.train)},
        "config": spec.resolved, "git": git, "versions": _versions(spec.device),
        "history": res.history, "final": final_metrics(res.history, primary),
        "wall_s": res.wall_s, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_this_call_s": time.time() - t0,
    }
    if res.status == "interrupted":
        return {**record, "_path": None}
    record = store.ordered(record)
    store.atomic_write_json(path, record)
    trainer.discard_checkpoint()
    prune_empty_dirs(spec.checkpoint_path.parent, spec.checkpoint_dir)
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
