"""Datasets: name -> loader(data_dir, download) -> InMemoryData (uint8 tensors) or FileData (file lists).

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), a fixed stratified 75/25 split
  (random_state 0); pixels 0..16 scaled to 0..255. The embedded default: needs no data directory.
- ``cifar10`` / ``cifar100``: the official python layouts (``cifar-10-batches-py``,
  ``cifar-100-python`` with fine and coarse labels) under ``data_dir``; ``download=true`` fetches the
  official archives with torchvision's download utilities. ``meta["md5_ok"]`` says whether every file
  matches the official MD5 (the shared JPEG-derived CIFAR-10 copy does not).
- ``clothing1m``, ``webvision``: official file lists (see ``nlbench.filedata``).

``balanced_subset`` draws a per-class training subset (``scale=cpu``); the record keeps the indices'
hash and ``train_index`` maps back to the official training order (CIFAR-N labels need it).
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .registry import ConfigError, DataError, Registry, check_range

DATASETS: Registry = Registry("dataset")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


@dataclass
class InMemoryData:
    """A dataset held as uint8 tensors. Shapes: train_x (N, C, H, W), train_y (N,), same for test."""

    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: np.ndarray
    test_x: torch.Tensor
    test_y: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_index: np.ndarray            # (N,) positions in the official training set
    coarse_train: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    def subset(self, index: np.ndarray) -> "InMemoryData":
        index = np.asarray(index, dtype=np.int64)
        return InMemoryData(
            name=self.name, classes=self.classes, train_x=self.train_x[torch.from_numpy(index)],
            train_y=self.train_y[index], test_x=self.test_x, test_y=self.test_y, mean=self.mean,
            std=self.std, train_index=self.train_index[index],
            coarse_train=None if self.coarse_train is None else self.coarse_train[index],
            meta={**self.meta, "subset_size": int(len(index)),
                  "subset_hash": hashlib.sha256(index.astype("<i8").tobytes()).hexdigest()[:16]})


def balanced_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` samples of each class, drawn with ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if per_class > len(members):
            raise ConfigError(f"subset_per_class={per_class} exceeds the {len(members)} samples of class {c}")
        out.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(out))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..N-1 into (train, val), sorted, with round(fraction * n_c) of each class c of
    ``labels`` (N,) in val, drawn with ``np.random.default_rng([seed, 1])`` (a stream of its own, so the
    split never shifts the noise or subset draws made with the same seed). Every class keeps at least one
    training sample; ``fraction`` must lie in [0, 1)."""
    check_range("val_fraction", fraction, 0, 1, hi_open=True)
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed), 1])
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = min(int(round(fraction * len(members))), len(members) - 1)
        val.append(rng.choice(members, k, replace=False))
    v = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    keep = np.ones(len(labels), bool)
    keep[v] = False
    return np.flatnonzero(keep), v.astype(np.int64)


def load_dataset(name: str, *, data_dir: str | Path, download: bool = False, **options):
    """Dataset ``name`` from ``data_dir``. A file or folder the OS refuses to read (permissions, an I/O
    error) is a DataError naming it: bad input (one line, exit 2, no record), in a single run as in a sweep."""
    loader = DATASETS.get(name)
    try:
        return loader(Path(data_dir).expanduser(), download=download, **options)
    except OSError as e:
        raise DataError(unreadable(e, f"{name} data under data_dir={data_dir}")) from None


def unreadable(e: OSError, what: str) -> str:
    """One line for data the OS would not read: "not readable" for a permission error, never "corrupt"."""
    where = f" {e.filename}" if getattr(e, "filename", None) else ""
    if isinstance(e, PermissionError):
        return (f"{what} is not readable:{where} ({e.strerror or 'permission denied'}); give this user read "
                "access (and search access to its folders) or set data_dir (or NLBENCH_DATA_DIR) to a readable copy")
    return f"{what} could not be read:{where} ({e.strerror or type(e).__name__})"


def data_line(name: str, data) -> str:
    """One line saying which copy of dataset ``name`` a run trains on (``validate`` and ``run`` print it
    once): official files, a local copy whose files fail the official MD5s, an embedded set, or files
    read through their official lists. The record keeps the same facts under ``data``."""
    meta = getattr(data, "meta", None) or {}
    where = f" under {meta['root']}" if meta.get("root") else ""
    if "md5_ok" in meta:
        what = {True: "the official files (MD5 verified)",
                False: "a local copy whose files differ from the official MD5s (the record says data.md5_ok=false; "
                       "the report keeps such runs apart from official ones)"}.get(
            meta["md5_ok"], "files not checked against the official MD5s")
    elif meta.get("source"):
        what = f"embedded ({meta['source']})"
    else:
        what = "local files read through the official file lists (no checksum)"
    return f"data: {name}{where}: {what}"


# ---------------------------------------------------------------------------------------------
@DATASETS.register("digits")
def load_digits(data_dir: Path, *, download: bool = False, test_size: float = 0.25) -> InMemoryData:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = np.clip(np.round(d.images * 16), 0, 255).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = d.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    xt = torch.from_numpy(x)
    m = float(x[tr].mean() / 255)
    s = float(x[tr].std() / 255)
    return InMemoryData("digits", [str(i) for i in range(10)], xt[tr], y[tr], xt[te], y[te],
                        (m,), (s,), train_index=tr, meta={"source": "sklearn.datasets.load_digits"})


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except OSError as e:   # the file is fine, reading it is not allowed (or failed): not "corrupt"
        raise DataError(unreadable(e, "CIFAR file" if e.filename else f"CIFAR file {path}")) from None
    except Exception as e:
        raise DataError(f"corrupt CIFAR file {path}: {type(e).__name__}: {e}") from None


def _cifar_files(root: Path, files: list[str], tv_cls, data_dir: Path, download: bool, folder: str) -> None:
    missing = [f for f in files if not (root / f).is_file()]
    if missing and download:
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(tv_cls.url, str(data_dir), filename=tv_cls.filename, md5=tv_cls.tgz_md5)
        except Exception as e:
            raise DataError(f"download of {tv_cls.url} into {data_dir} failed: {e}") from None
        missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DataError(
            f"{folder} not found or partial under data_dir={data_dir}: searched {root}, missing "
            f"{', '.join(missing)}. Set data_dir (or NLBENCH_DATA_DIR) to the folder that contains "
            f"{folder}/, or pass dataset.options.download=true")


def _to_images(arr, path: Path) -> torch.Tensor:
    a = np.asarray(arr)
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != 3072:
        raise DataError(f"corrupt CIFAR file {path}: data has shape {a.shape} dtype {a.dtype}, expected (n, 3072) uint8")
    return torch.from_numpy(a.reshape(-1, 3, 32, 32).copy())


def _md5_ok(root: Path, tv_cls) -> bool:
    return all(_md5(root / f) == md5 for f, md5 in tv_cls.train_list + tv_cls.test_list)


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path, *, download: bool = False, check_md5: bool = True) -> InMemoryData:
    from torchvision.datasets import CIFAR10

    root = data_dir / "cifar-10-batches-py"
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    _cifar_files(root, train_files + ["test_batch", "batches.meta"], CIFAR10, data_dir, download,
                 "cifar-10-batches-py")
    xs, ys = [], []
    for f in train_files:
        d = _unpickle(root / f)
        xs.append(_to_images(d["data"], root / f))
        ys.append(np.asarray(d["labels"], dtype=np.int64))
    t = _unpickle(root / "test_batch")
    meta = _unpickle(root / "batches.meta")
    train_y, test_y = np.concatenate(ys), np.asarray(t["labels"], dtype=np.int64)
    if len(train_y) != 50000 or len(test_y) != 10000 or train_y.max() > 9:
        raise DataError(f"partial CIFAR-10 under {root}: {len(train_y)} train / {len(test_y)} test labels")
    classes = list(meta.get("label_names", CIFAR10_CLASSES))
    return InMemoryData("cifar10", classes, torch.cat(xs), train_y, _to_images(t["data"], root / "test_batch"),
                        test_y, CIFAR_MEAN["cifar10"], CIFAR_STD["cifar10"], np.arange(50000),
                        meta={"root": str(root), "md5_ok": _md5_ok(root, CIFAR10) if check_md5 else None})


@DATASETS.register("cifar100")
def load_cifar100(data_dir: Path, *, download: bool = False, check_md5: bool = True) -> InMemoryData:
    from torchvision.datasets import CIFAR100

    root = data_dir / "cifar-100-python"
    _cifar_files(root, ["train", "test", "meta"], CIFAR100, data_dir, download, "cifar-100-python")
    tr, te, meta = (_unpickle(root / f) for f in ("train", "test", "meta"))
    for split, d in (("train", tr), ("test", te)):
        for key in ("data", "fine_labels", "coarse_labels"):
            if key not in d:
                raise DataError(f"corrupt CIFAR-100 file {root / split}: key {key!r} missing")
    train_y = np.asarray(tr["fine_labels"], dtype=np.int64)
    if train_y.max() > 99 or train_y.min() < 0:
        raise DataError(f"corrupt CIFAR-100 under {root}: fine labels outside 0..99")
    classes = list(meta.get("fine_label_names", [f"class_{i}" for i in range(100)]))
    return InMemoryData("cifar100", classes, _to_images(tr["data"], root / "train"), train_y,
                        _to_images(te["data"], root / "test"), np.asarray(te["fine_labels"], dtype=np.int64),
                        CIFAR_MEAN["cifar100"], CIFAR_STD["cifar100"], np.arange(len(train_y)),
                        coarse_train=np.asarray(tr["coarse_labels"], dtype=np.int64),
                        meta={"root": str(root), "md5_ok": _md5_ok(root, CIFAR100) if check_md5 else None,
                              "coarse_label_names": list(meta.get("coarse_label_names", []))})


@DATASETS.register("clothing1m")
def load_clothing1m(data_dir: Path, *, download: bool = False, **options):
    from .filedata import load_clothing1m as load

    if download:
        raise ConfigError("Clothing1M cannot be downloaded: request it from its authors, then set data_dir")
    return load(data_dir / "clothing1m", **options)


@DATASETS.register("webvision")
def load_webvision(data_dir: Path, *, download: bool = False, **options):
    from .filedata import load_webvision as load

    if download:
        raise ConfigError("WebVision cannot be downloaded by nlbench: fetch it from its site, then set data_dir")
    return load(data_dir / "webvision", **options)
