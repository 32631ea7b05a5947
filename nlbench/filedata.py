"""File-based real-noise datasets (Clothing1M, mini-WebVision) and their DataLoader-backed stream.

The loaders read the *official* file lists, validate the local copy cheaply (expected files, labels,
the first few images) and return a :class:`FileData`: root-relative image paths plus labels as shipped.
For these datasets the training labels *are* the noisy labels; the test splits carry clean labels.
Neither dataset is ever downloaded: both are gated, and an incomplete copy is a :class:`DataError` that
says exactly which file is missing, where it was looked for and where the data comes from.

:class:`FileStream` implements :class:`nlbench.method.Stream` over a ``FileData``: PIL decoding and
the geometric augmentation run in DataLoader workers on uint8 images; the float conversion and the
normalisation run on the training device in one batched op. Batch order *and* augmentation depend
only on the ``torch.Generator`` passed to :meth:`FileStream.batches` (each sample's augmentation is
seeded from a base seed drawn from that generator and the sample's position in the epoch), so the
same generator state gives bit-identical batches for any ``num_workers``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision.transforms import v2

from .common import Batch, bf16_on, progress_bar
from .registry import ConfigError, DataError

__all__ = ["FileData", "FileStream", "load_clothing1m", "load_webvision",
           "CLOTHING1M_CLASSES", "CLOTHING1M_FILES", "WEBVISION_FILES"]

Entry = tuple[str, int]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CLOTHING1M_CLASSES = ["T-shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
                      "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]
CLOTHING1M_MEAN = (0.6959, 0.6537, 0.6371)
CLOTHING1M_STD = (0.3113, 0.3192, 0.3214)
CLOTHING1M_FILES = ["noisy_label_kv.txt", "clean_label_kv.txt", "noisy_train_key_list.txt",
                    "clean_val_key_list.txt", "clean_test_key_list.txt"]
# Published split sizes (dataset paper, as quoted in methods.md 4.1); a mismatch is only a warning.
_CLOTHING1M_LIST_OF = {"train": "noisy_train_key_list.txt", "val": "clean_val_key_list.txt",
                       "test": "clean_test_key_list.txt"}
CLOTHING1M_EXPECTED = {"val": 14_313, "test": 10_526}
CLOTHING1M_SOURCE = ("Clothing1M is distributed by its authors on request (Xiao et al., CVPR 2015, "
                     "'Learning from Massive Noisy Labeled Data for Image Classification'); "
                     "nlbench never downloads it")

WEBVISION_FILES = ["info/train_filelist_google.txt", "info/val_filelist.txt"]
WEBVISION_EXPECTED_50 = {"train": 65_944, "webvision": 2_500, "imagenet": 2_500}
WEBVISION_SOURCE = ("WebVision 1.0 is downloaded from its official site (Li et al. 2017, "
                    "data.vision.ee.ethz.ch/cvl/webvision; use the resized 'Google' images and the "
                    "'info' lists); nlbench never downloads it")
IMAGENET_VAL_HINT = ("build imagenet/val/<class id>/ from the ILSVRC2012 validation images of the "
                     "first classes of info/synsets.txt, as in DivideMix")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
NUM_CHECKED_IMAGES = 3  # images per split whose existence is checked at load (never stat 1M files)


@dataclass
class FileData:
    """An image-file dataset as the official lists describe it.

    ``train`` / ``tests[split]`` are lists of ``(path, label)`` with paths relative to ``root`` (or
    absolute). ``train`` labels are the labels as shipped, i.e. the *noisy* labels for Clothing1M and
    WebVision; test labels are clean. ``mean``/``std`` are per-channel in [0, 1] units. The train
    transform is Resize(``resize``) + RandomCrop(``train_size``) + flip; the test transform
    Resize(``resize``) + CenterCrop(``test_size``). ``meta`` holds counts, the files used and
    ``meta["warnings"]`` (list of str, possibly empty).
    """

    name: str
    classes: list[str]
    root: Path
    train: list[Entry]
    tests: dict[str, list[Entry]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_size: int
    resize: int
    test_size: int
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return len(self.train)

    def labels(self, split: str = "train") -> torch.Tensor:
        """int64 labels (n,) of ``"train"`` (the noisy labels) or of a test split, in list order."""
        return torch.tensor([y for _, y in self._split(split)], dtype=torch.long)

    def _split(self, split: str) -> list[Entry]:
        if split == "train":
            return self.train
        if split not in self.tests:
            raise ConfigError(f"unknown split {split!r} of {self.name}; valid choices: "
                              f"{', '.join(['train', *self.tests])}")
        return self.tests[split]


# ------------------------------------------------------------------------------------------------
# parsing helpers


def _check_root(root: Path, what: str, source: str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{what} root {str(root)!r} does not exist. {source}.")
    if not root.is_dir():
        raise DataError(f"{what} root {str(root)!r} is not a directory. {source}.")
    return root


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for each non-blank line."""
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    yield lineno, line
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not a text file list ({e})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _read_kv(path: Path, *, lo: int, hi: int, range_note: str = "") -> list[Entry]:
    """Parse '<path> <label>' lines; label must lie in [lo, hi]."""
    out: list[Entry] = []
    for lineno, line in _read_lines(path):
        parts = line.split()
        label = None
        if len(parts) == 2:
            try:
                label = int(parts[1])
            except ValueError:
                pass
        if label is None:
            raise DataError(f"{path}, line {lineno}: malformed line {line[:200]!r}; "
                            f"expected '<image path> <integer label>'")
        if not lo <= label <= hi:
            raise DataError(f"{path}, line {lineno}: label {label} is outside {lo}..{hi}{range_note}")
        out.append((parts[0], label))
    return out


def _read_keys(path: Path) -> list[str]:
    """Parse a key list: one image path per line."""
    out: list[str] = []
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 1:
            raise DataError(f"{path}, line {lineno}: malformed line {line[:200]!r}; "
                            f"expected one image path per line")
        out.append(parts[0])
    return out


def _attach_labels(keys: list[str], kv: dict[str, int], key_file: Path, kv_file: Path) -> list[Entry]:
    out: list[Entry] = []
    missing: list[str] = []
    for k in keys:
        y = kv.get(k)
        if y is None:
            missing.append(k)
        else:
            out.append((k, y))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{len(missing)} key(s) of {key_file} have no label in {kv_file}: "
                        f"{shown}{more}")
    return out


def _resolve(root: Path, rel: str) -> Path:
    return Path(os.path.join(root, rel))


def _check_images(root: Path, splits: dict[str, list[Entry]], what: str, source: str) -> None:
    """DataError if any of the first few images of any split is missing."""
    missing = []
    for split, entries in splits.items():
        for rel, _ in entries[:NUM_CHECKED_IMAGES]:
            p = _resolve(root, rel)
            if not p.is_file():
                missing.append(f"{p} ({split})")
    if missing:
        raise DataError(f"{what}: image file(s) listed in the file lists are missing: "
                        f"{'; '.join(missing)}. The image folders must sit under {root} as the lists "
                        f"say (only the first {NUM_CHECKED_IMAGES} images per split are checked). "
                        f"{source}.")


def _check_sizes(resize: int, crop: int) -> tuple[int, int]:
    resize, crop = int(resize), int(crop)
    if crop < 1 or resize < crop:
        raise ConfigError(f"need 1 <= crop <= resize, got resize={resize}, crop={crop}")
    return resize, crop


# ------------------------------------------------------------------------------------------------
# Clothing1M


def load_clothing1m(root: Path, *, resize: int = 256, crop: int = 224) -> FileData:
    """Clothing1M from its official annotation files.

    Layout: ``root/annotations/*.txt`` or ``root/*.txt`` (each file looked up in both) and the images
    under ``root/images/<n>/<m>/<name>.jpg`` as the lists name them. The DivideMix layout (numbered
    image folders directly in ``root``, i.e. without the ``images/`` level) is also accepted; the
    paths are then stored without the ``images/`` prefix and ``meta["image_prefix_stripped"]`` is True.

    train = ``noisy_train_key_list`` with labels from ``noisy_label_kv`` (noisy);
    tests = {"val": clean_val_key_list, "test": clean_test_key_list} with labels from ``clean_label_kv``.
    """
    root = _check_root(root, "Clothing1M", CLOTHING1M_SOURCE)
    resize, crop = _check_sizes(resize, crop)
    search = [root / "annotations", root]
    files: dict[str, Path] = {}
    for name in CLOTHING1M_FILES:
        for d in search:
            if (d / name).is_file():
                files[name] = d / name
                break
    missing = [n for n in CLOTHING1M_FILES if n not in files]
    if missing:
        raise DataError(f"Clothing1M: missing annotation file(s) {', '.join(missing)}; searched "
                        f"{' and '.join(str(d) for d in search)}. {CLOTHING1M_SOURCE}.")

    k = len(CLOTHING1M_CLASSES)
    note = f" (Clothing1M has {k} classes)"
    noisy_kv = _read_kv(files["noisy_label_kv.txt"], lo=0, hi=k - 1, range_note=note)
    clean_kv = _read_kv(files["clean_label_kv.txt"], lo=0, hi=k - 1, range_note=note)
    noisy_map, clean_map = dict(noisy_kv), dict(clean_kv)

    def split(key_file: str, kv: dict[str, int], kv_file: str) -> list[Entry]:
        return _attach_labels(_read_keys(files[key_file]), kv, files[key_file], files[kv_file])

    train = split("noisy_train_key_list.txt", noisy_map, "noisy_label_kv.txt")
    tests = {"val": split("clean_val_key_list.txt", clean_map, "clean_label_kv.txt"),
             "test": split("clean_test_key_list.txt", clean_map, "clean_label_kv.txt")}
    for name, entries in [("train", train), *tests.items()]:
        if not entries:
            raise DataError(f"Clothing1M: the {name} list is empty "
                            f"({files[_CLOTHING1M_LIST_OF[name]]})")

    # Official layout: root/images/...; DivideMix strips "images/" and expects the folders in root.
    stripped = False
    first = train[0][0]
    prefix = "images/"
    if (not _resolve(root, first).is_file() and first.startswith(prefix)
            and _resolve(root, first[len(prefix):]).is_file()):
        stripped = True

        def strip(entries: list[Entry]) -> list[Entry]:
            return [(p[len(prefix):] if p.startswith(prefix) else p, y) for p, y in entries]

        train = strip(train)
        tests = {s: strip(e) for s, e in tests.items()}
    _check_images(root, {"train": train, **tests}, "Clothing1M", CLOTHING1M_SOURCE)

    warnings = [f"Clothing1M {s}: {len(tests[s])} images listed, the published count is {n}"
                for s, n in CLOTHING1M_EXPECTED.items() if len(tests[s]) != n]
    meta = {"num_train": len(train), "num_val": len(tests["val"]), "num_test": len(tests["test"]),
            "noisy_label_kv_entries": len(noisy_kv), "clean_label_kv_entries": len(clean_kv),
            "files": {n: str(p) for n, p in files.items()}, "image_prefix_stripped": stripped,
            "warnings": warnings}
    return FileData(name="clothing1m", classes=list(CLOTHING1M_CLASSES), root=root, train=train,
                    tests=tests, mean=CLOTHING1M_MEAN, std=CLOTHING1M_STD, train_size=crop,
                    resize=resize, test_size=crop, meta=meta)


# ------------------------------------------------------------------------------------------------
# mini-WebVision

WEBVISION_NUM_CLASSES = 1000


def load_webvision(root: Path, num_classes: int = 50, *, resize: int = 256,
                   crop: int = 224) -> FileData:
    """mini-WebVision: the Google images of the first ``num_classes`` WebVision 1.0 classes.

    train = ``root/info/train_filelist_google.txt`` ("<path relative to root> <label>", label <
    num_classes kept); tests["webvision"] = ``root/info/val_filelist.txt`` (label < num_classes,
    images under ``root/val_images_256/``); tests["imagenet"] = ``root/imagenet/val/<class id>/*``
    (DivideMix layout: one folder per WebVision class id 0..num_classes-1; a folder named by the
    class's WordNet id from synsets.txt is accepted too). ImageNet val is optional: without
    ``root/imagenet/val`` the split is left out, ``meta["imagenet_missing"]`` holds the path searched
    and ``meta["warnings"]`` says so; a partial one is a DataError.

    Defaults resize 256 / crop 224 suit ResNet-50 (the GSS paper's backbone); DivideMix used
    Inception-ResNet-v2 at Resize 320 / crop 299 (pass ``resize=320, crop=299`` to match).
    Class names are ``class_000``... unless ``root/info/synsets.txt`` exists (then its first
    ``num_classes`` lines). Mean/std are ImageNet's.
    """
    num_classes = int(num_classes)
    if not 1 <= num_classes <= WEBVISION_NUM_CLASSES:
        raise ConfigError(f"num_classes={num_classes} is outside [1, {WEBVISION_NUM_CLASSES}]")
    root = _check_root(root, "WebVision", WEBVISION_SOURCE)
    resize, crop = _check_sizes(resize, crop)
    missing = [f for f in WEBVISION_FILES if not (root / f).is_file()]
    if missing:
        raise DataError(f"WebVision: missing file list(s) {', '.join(missing)}; searched "
                        f"{', '.join(str(root / f) for f in missing)}. {WEBVISION_SOURCE}.")
    note = f" (WebVision has {WEBVISION_NUM_CLASSES} classes)"
    train_all = _read_kv(root / WEBVISION_FILES[0], lo=0, hi=WEBVISION_NUM_CLASSES - 1, range_note=note)
    val_all = _read_kv(root / WEBVISION_FILES[1], lo=0, hi=WEBVISION_NUM_CLASSES - 1, range_note=note)
    train = [(p, y) for p, y in train_all if y < num_classes]
    val_dir = "val_images_256"
    val = [(p if p.startswith(val_dir + "/") else f"{val_dir}/{p}", y)
           for p, y in val_all if y < num_classes]
    for name, entries, f in [("train", train, WEBVISION_FILES[0]), ("val", val, WEBVISION_FILES[1])]:
        if not entries:
            raise DataError(f"WebVision: {root / f} lists no image with label < {num_classes}")

    classes = [f"class_{c:03d}" for c in range(num_classes)]
    wnids: list[str | None] = [None] * num_classes
    synsets = root / "info" / "synsets.txt"
    if synsets.is_file():
        lines = [line for _, line in _read_lines(synsets)]
        if len(lines) < num_classes:
            raise DataError(f"{synsets} has {len(lines)} lines, fewer than num_classes={num_classes}")
        classes = lines[:num_classes]
        wnids = [line.split()[0] for line in classes]

    tests: dict[str, list[Entry]] = {"webvision": val}
    warnings: list[str] = []
    meta: dict = {}
    imnet_dir = root / "imagenet" / "val"
    if imnet_dir.is_dir():
        tests["imagenet"] = _read_imagenet_val(root, imnet_dir, num_classes, wnids)
    else:
        meta["imagenet_missing"] = str(imnet_dir)
        warnings.append(f"WebVision: no ImageNet val folder at {imnet_dir}; the 'imagenet' test split "
                        f"is left out ({IMAGENET_VAL_HINT})")
    _check_images(root, {"train": train, "webvision": val}, "WebVision", WEBVISION_SOURCE)

    if num_classes == 50:
        sizes = {"train": len(train), **{s: len(e) for s, e in tests.items()}}
        warnings += [f"mini-WebVision {s}: {sizes[s]} images, the published count is {n}"
                     for s, n in WEBVISION_EXPECTED_50.items() if s in sizes and sizes[s] != n]
    meta.update({"num_train": len(train), "num_train_listed": len(train_all),
                 "num_webvision_val": len(val), "num_webvision_val_listed": len(val_all),
                 "num_imagenet_val": len(tests.get("imagenet", [])), "num_classes": num_classes,
                 "files": {f: str(root / f) for f in WEBVISION_FILES}, "warnings": warnings})
    if synsets.is_file():
        meta["files"]["info/synsets.txt"] = str(synsets)
    return FileData(name="webvision", classes=classes, root=root, train=train, tests=tests,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, train_size=crop, resize=resize,
                    test_size=crop, meta=meta)


def _read_imagenet_val(root: Path, imnet_dir: Path, num_classes: int,
                       wnids: Sequence[str | None]) -> list[Entry]:
    out: list[Entry] = []
    missing, empty = [], []
    for c in range(num_classes):
        cands = [imnet_dir / str(c)] + ([imnet_dir / wnids[c]] if wnids[c] else [])
        d = next((p for p in cands if p.is_dir()), None)
        if d is None:
            missing.append(str(cands[0]))
            continue
        names = sorted(n for n in os.listdir(d) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            empty.append(str(d))
        out += [(os.path.relpath(d / n, root), c) for n in names]
    if missing or empty:
        parts = []
        if missing:
            parts.append(f"{len(missing)} class folder(s) missing: {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
        if empty:
            parts.append(f"{len(empty)} class folder(s) without images: {', '.join(empty[:5])}"
                         f"{' ...' if len(empty) > 5 else ''}")
        raise DataError(f"WebVision: incomplete ImageNet val folder {imnet_dir}: {'; '.join(parts)}. "
                        f"Either complete it ({IMAGENET_VAL_HINT}) or remove {imnet_dir} to skip "
                        f"the ImageNet evaluation.")
    return out


# ------------------------------------------------------------------------------------------------
# the stream

_SEED_STEP = 0x9E3779B9  # odd: positions within an epoch get distinct 32-bit seeds


def _num_batches(n: int, batch_size: int, min_last: int) -> int:
    full, rem = divmod(n, batch_size)
    return full + (1 if rem and rem >= min_last else 0)


class _Chunks:
    """Batch sampler over a fixed order: lists of ints, or of (int, seed) pairs when seeded.

    A last batch smaller than ``min_last`` is dropped (all smaller than ``batch_size`` if drop_last).
    """

    def __init__(self, order: torch.Tensor, batch_size: int, drop_last: bool,
                 base_seed: int | None = None, min_last: int = 1) -> None:
        self.order = order.tolist()
        self.batch_size = batch_size
        self.min_last = batch_size if drop_last else min_last
        self.base_seed = base_seed

    def __len__(self) -> int:
        return _num_batches(len(self.order), self.batch_size, self.min_last)

    def __iter__(self) -> Iterator[list]:
        bs = self.batch_size
        for b in range(len(self)):
            start = b * bs
            chunk = self.order[start:start + bs]
            if self.base_seed is None:
                yield chunk
            else:
                yield [(i, (self.base_seed + (start + j) * _SEED_STEP) & 0xFFFFFFFF)
                       for j, i in enumerate(chunk)]


def _load_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # corrupt or unreadable file: name it
        raise DataError(f"cannot read image {path}: {e}") from None


class _TrainSet(Dataset):
    """Item (train index, seed) -> (view_1, ..., view_v, index); views are uint8 (3, S, S).

    Resize(resize) once, then per view RandomCrop(size) + horizontal flip (CenterCrop(size) when
    ``augment`` is False).
    """

    def __init__(self, root: str, paths: np.ndarray, resize: int, size: int, views: int,
                 flip: bool = True, augment: bool = True) -> None:
        self.root, self.paths, self.views = root, paths, views
        self.base = v2.Compose([v2.Resize(resize, antialias=True), v2.PILToTensor()])
        if augment:
            self.aug = v2.Compose([v2.RandomCrop(size), *([v2.RandomHorizontalFlip()] if flip else [])])
        else:
            self.aug = v2.CenterCrop(size)  # the test view, e.g. for a deterministic pass

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]):
        i, seed = item
        img = self.base(_load_rgb(os.path.join(self.root, self.paths[i].decode())))
        # v2 draws its parameters from the global torch RNG: seed it per sample so that the
        # augmentation depends on (generator, position) only; restore it in the main process.
        in_main = get_worker_info() is None
        state = torch.get_rng_state() if in_main else None
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed would reseed CUDA
        try:
            views = [self.aug(img) for _ in range(self.views)]
        finally:
            if in_main:
                torch.set_rng_state(state)
        return (*views, i)


class _EvalSet(Dataset):
    """Item i -> (uint8 (3, S, S) test-transformed image, label)."""

    def __init__(self, root: str, paths: np.ndarray, labels: np.ndarray, resize: int,
                 size: int) -> None:
        self.root, self.paths, self.labels = root, paths, labels
        self.tf = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size),
                              v2.PILToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.tf(_load_rgb(os.path.join(self.root, self.paths[i].decode()))), int(self.labels[i])


def _pack(entries: list[Entry]) -> tuple[np.ndarray, np.ndarray]:
    # Fixed-width byte array: one buffer, so forked workers do not copy a million Python strings.
    paths = np.array([p.encode() for p, _ in entries], dtype=np.bytes_) if entries else \
        np.zeros(0, dtype="S1")
    return paths, np.array([y for _, y in entries], dtype=np.int64)


class FileStream:
    """:class:`nlbench.method.Stream` over a :class:`FileData` (DataLoader with workers).

    ``noisy_labels`` (N,) are the labels batches carry (normally ``data.labels("train")``).
    ``samples_per_epoch``: each :meth:`batches` call with ``indices=None`` trains on a fresh random
    subset of that size; with ``class_balanced`` the subset takes up to ceil(S/K) samples per noisy
    class, as DivideMix does on Clothing1M (see :meth:`draw_subset`). ``flip``: random horizontal
    flip in the train transform. ``amp``: bf16 autocast in :meth:`infer` (``common.bf16_on``: on CUDA; ``always``: on the CPU too); the
    result is fp32 either way. As in ``DeviceStream``, a last training batch of a single sample is
    dropped (train-mode batch norm cannot use it), and :meth:`steps` counts batches accordingly.
    """

    def __init__(self, data: FileData, noisy_labels: torch.Tensor, *, batch_size: int,
                 num_workers: int, device: torch.device, channels_last: bool = True,
                 samples_per_epoch: int | None = None, class_balanced: bool = False,
                 flip: bool = True, infer_batch_size: int | None = None, amp: bool = True,
                 progress: bool = False) -> None:
        self.data = data
        self.progress = bool(progress)   # a bar over inference passes (on a terminal)
        self.num_train = len(data.train)
        self.num_classes = data.num_classes
        labels = torch.as_tensor(noisy_labels).detach().to("cpu")
        if labels.shape != (self.num_train,):
            raise ConfigError(f"noisy_labels has shape {tuple(labels.shape)}, expected "
                              f"({self.num_train},) for {data.name}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ConfigError(f"noisy_labels must be integers, got {labels.dtype}")
        labels = labels.long()
        if self.num_train and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(f"noisy_labels must lie in 0..{self.num_classes - 1}")
        self.noisy_labels = labels
        self.batch_size = self._positive("batch_size", batch_size)
        self.infer_batch_size = self._positive(
            "infer_batch_size", infer_batch_size if infer_batch_size is not None
            else max(256, 2 * self.batch_size))
        self.num_workers = int(num_workers)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers={num_workers} must be >= 0")
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        if samples_per_epoch is not None:
            samples_per_epoch = self._positive("samples_per_epoch", samples_per_epoch)
        if class_balanced and samples_per_epoch is None:
            raise ConfigError("class_balanced sampling needs samples_per_epoch")
        self.samples_per_epoch = samples_per_epoch
        self.class_balanced = bool(class_balanced)
        self.flip = bool(flip)
        self.amp = bf16_on(amp, self.device)
        for name, size in [("train_size", data.train_size), ("test_size", data.test_size)]:
            if not 1 <= size <= data.resize:
                raise ConfigError(f"{data.name}: {name}={size} must be in [1, resize={data.resize}]")
        self._root = str(data.root)
        self._paths, _ = _pack(data.train)
        self._tests = {s: _pack(e) for s, e in data.tests.items()}
        self._mean = torch.tensor(data.mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self._std = torch.tensor(data.std, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)

    @staticmethod
    def _positive(name: str, value) -> int:
        v = int(value)
        if v < 1:
            raise ConfigError(f"{name}={value!r} must be >= 1")
        return v

    # --- sampling ----------------------------------------------------------------------------
    @property
    def epoch_size(self) -> int:
        """Samples in one default epoch (``indices=None``); exact, it depends on the labels only."""
        if self.samples_per_epoch is None:
            return self.num_train
        if not self.class_balanced:
            return min(self.samples_per_epoch, self.num_train)
        cap = math.ceil(self.samples_per_epoch / self.num_classes)
        counts = torch.bincount(self.noisy_labels, minlength=self.num_classes)
        return min(self.samples_per_epoch, int(counts.clamp(max=cap).sum()))

    def steps(self, n: int | None = None, batch_size: int | None = None) -> int:
        """Batches :meth:`batches` yields for ``n`` samples (default: :attr:`epoch_size`)."""
        n = self.epoch_size if n is None else int(n)
        bs = self.batch_size if batch_size is None else self._positive("batch_size", batch_size)
        return _num_batches(n, bs, 2)

    def draw_subset(self, generator: torch.Generator) -> torch.Tensor:
        """The default epoch's sample indices (int64, sorted), drawn with ``generator``.

        All samples without ``samples_per_epoch``. With it: a uniform subset of that size, or, when
        ``class_balanced``, DivideMix's rule: walk a random permutation and keep a sample while its
        noisy class has fewer than S/K kept and fewer than S are kept in all.
        """
        n = self.num_train
        if self.samples_per_epoch is None:
            return torch.arange(n)
        perm = torch.randperm(n, generator=generator)
        if not self.class_balanced:
            return perm[:self.samples_per_epoch].sort().values
        cap = math.ceil(self.samples_per_epoch / self.num_classes)
        lab = self.noisy_labels[perm]
        # rank of each permuted sample within its class (stable sort keeps permutation order)
        by_class = torch.sort(lab, stable=True).indices
        counts = torch.bincount(lab, minlength=self.num_classes)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty(n, dtype=torch.long)
        rank[by_class] = torch.arange(n) - starts[lab[by_class]]
        kept = perm[rank < cap][:self.samples_per_epoch]
        return kept.sort().values

    def _indices(self, indices: torch.Tensor | None) -> torch.Tensor:
        idx = torch.as_tensor(indices).detach().to("cpu")
        if idx.dtype == torch.bool:
            if idx.shape != (self.num_train,):
                raise ConfigError(f"a boolean index mask must have shape ({self.num_train},)")
            return idx.nonzero().flatten()
        if idx.dim() != 1 or idx.dtype.is_floating_point:
            raise ConfigError("indices must be a 1-D integer tensor (or a boolean mask)")
        idx = idx.long()
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_train):
            raise ConfigError(f"indices must lie in 0..{self.num_train - 1}")
        return idx

    def _loader(self, dataset: Dataset, batch_sampler: _Chunks, seed: int) -> DataLoader:
        # The loader's own generator only feeds its worker base seed; passing one keeps the
        # global RNG untouched.
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=self.num_workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          generator=torch.Generator().manual_seed(seed))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255).sub_(self._mean).div_(self._std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # --- Stream protocol ---------------------------------------------------------------------
    def batches(self, *, indices: torch.Tensor | None = None, batch_size: int | None = None,
                views: int = 1, shuffle: bool = True, drop_last: bool = False,
                generator: torch.Generator | None = None, augment: bool = True) -> Iterator[Batch]:
        """Augmented batches over ``indices`` (default: all samples or the epoch's subset).

        Every draw (subset, permutation, augmentation base seed) happens now, in that order, from
        ``generator``; without one, a freshly seeded generator is used (not reproducible).
        ``augment=False`` gives the test view (Resize + CenterCrop) instead.
        """
        if views not in (1, 2):
            raise ConfigError(f"views={views!r} must be 1 or 2")
        bs = self.batch_size if batch_size is None else self._positive("batch_size", batch_size)
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        idx = self.draw_subset(generator) if indices is None else self._indices(indices)
        if shuffle:
            idx = idx[torch.randperm(idx.numel(), generator=generator)]
        base_seed = int(torch.randint(0, 2**32, (1,), generator=generator))
        size = self.data.train_size if augment else self.data.test_size
        dataset = _TrainSet(self._root, self._paths, self.data.resize, size, views, self.flip, augment)
        loader = self._loader(dataset, _Chunks(idx, bs, drop_last, base_seed, min_last=2), base_seed)
        return self._iter_batches(loader, views)

    def _iter_batches(self, loader: DataLoader, views: int) -> Iterator[Batch]:
        for item in loader:
            i = item[-1]
            y = self.noisy_labels[i]
            x2 = self._normalise(item[1]) if views == 2 else None
            yield Batch(x=self._normalise(item[0]), y=y.to(self.device, non_blocking=True),
                        idx=i.to(self.device, non_blocking=True), x2=x2)

    @torch.no_grad()
    def infer(self, net: nn.Module, *, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (len(indices) or N, K), fp32 on ``device``, in index order; test transform,
        ``net`` in eval mode (its mode is restored afterwards), no grad."""
        idx = torch.arange(self.num_train) if indices is None else self._indices(indices)
        dataset = _EvalSet(self._root, self._paths, self.noisy_labels.numpy(), self.data.resize,
                           self.data.test_size)
        return self._run(net, dataset, idx)

    def _run(self, net: nn.Module, dataset: Dataset, idx: torch.Tensor) -> torch.Tensor:
        was_training = net.training
        net.eval()
        out = []
        try:
            loader = self._loader(dataset, _Chunks(idx, self.infer_batch_size, False), 0)
            for x, _ in progress_bar(loader, enabled=self.progress, total=len(loader), desc="inference pass"):
                with torch.inference_mode(), \
                        torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    out.append(net(self._normalise(x)).float())
        finally:
            net.train(was_training)
        if not out:
            return torch.zeros(0, self.num_classes, device=self.device)
        return torch.cat(out)   # outside inference mode: an ordinary tensor a method may change in place

    def eval_batches(self, split: str, batch_size: int | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) on ``device`` over a test split in list order: test transform, clean labels."""
        if split not in self._tests:
            raise ConfigError(f"unknown test split {split!r} of {self.data.name}; valid choices: "
                              f"{', '.join(self._tests)}")
        bs = self.infer_batch_size if batch_size is None else self._positive("batch_size", batch_size)
        paths, labels = self._tests[split]
        dataset = _EvalSet(self._root, paths, labels, self.data.resize, self.data.test_size)
        loader = self._loader(dataset, _Chunks(torch.arange(len(paths)), bs, False), 0)

        def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in loader:
                yield self._normalise(x), y.to(self.device, non_blocking=True)

        return gen()
