"""File-based real-noise datasets (Clothing1M, mini-WebVision): the loaders.

The loaders read the *official* file lists, validate the local copy cheaply (expected files, labels,
the first few images) and return a :class:`FileData`: root-relative image paths plus labels as shipped.
For these datasets the training labels *are* the noisy labels; the test splits carry clean labels.
Neither dataset is ever downloaded: both are gated, and an incomplete copy is a :class:`DataError` that
says exactly which file is missing, where it was looked for and where the data comes from. The batches
come from :class:`nlbench.filestream.FileStream`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .registry import ConfigError, DataError

__all__ = ["FileData", "load_clothing1m", "load_webvision",
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
