"""Tiny synthetic Clothing1M / mini-WebVision folders in the official file-list layouts.

Reusable by any test: ``make_clothing1m(tmp_path / "c1m")``, ``make_webvision(tmp_path / "wv")``.
Images are small random RGB JPEGs (a few non-square), a handful per class; each helper returns a dict
with the lists it wrote (root-relative paths and labels) so tests can check what a loader parses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLOTHING1M_NUM_CLASSES = 14
WEBVISION_LISTED_CLASSES = 60  # > 50, so that the "label < num_classes" filter has work to do


def _write_image(path: Path, rng: np.random.RandomState, size: tuple[int, int] = (32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = rng.randint(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def make_clothing1m(root: Path, per_class: int = 2, *, annotations_in_root: bool = False,
                    seed: int = 0) -> dict:
    """Clothing1M layout: ``root/annotations/*.txt`` (or ``root/*.txt``) + ``root/images/...``.

    ``per_class`` images per class in each of noisy train, clean val and clean test. Noisy train
    labels are the class folder except every third image, whose noisy label is the next class (so the
    noisy labels differ from the truth). ``noisy_label_kv`` and ``clean_label_kv`` hold a few extra
    entries no key list uses, as the real files do.
    """
    root = Path(root)
    rng = np.random.RandomState(seed)
    ann = root if annotations_in_root else root / "annotations"
    k = CLOTHING1M_NUM_CLASSES
    train, val, test, clean_train = [], [], [], []
    noisy_kv, clean_kv = [], []
    n = 0
    for split, out in [("train", train), ("val", val), ("test", test), ("ctrain", clean_train)]:
        for c in range(k):
            for j in range(per_class):
                rel = f"images/{c}/{n % 7}/{split}_{n:05d}.jpg"
                size = (40, 32) if n % 5 == 0 else (32, 32)
                _write_image(root / rel, rng, size)
                n += 1
                if split == "train":
                    noisy = (c + 1) % k if len(train) % 3 == 0 else c
                    out.append((rel, noisy))
                    noisy_kv.append((rel, noisy))
                else:
                    out.append((rel, c))
                    clean_kv.append((rel, c))
    # entries of the kv files that no key list uses (the real noisy_label_kv has ~1M + extras)
    noisy_kv += [(f"images/9/9/unused_{i}.jpg", i % k) for i in range(3)]
    clean_kv += [(f"images/9/9/unused_clean_{i}.jpg", i % k) for i in range(3)]
    _write_lines(ann / "noisy_label_kv.txt", [f"{p} {y}" for p, y in noisy_kv])
    _write_lines(ann / "clean_label_kv.txt", [f"{p} {y}" for p, y in clean_kv])
    _write_lines(ann / "noisy_train_key_list.txt", [p for p, _ in train])
    _write_lines(ann / "clean_val_key_list.txt", [p for p, _ in val])
    _write_lines(ann / "clean_test_key_list.txt", [p for p, _ in test])
    _write_lines(ann / "clean_train_key_list.txt", [p for p, _ in clean_train])
    return {"root": root, "annotation_dir": ann, "train": train, "val": val, "test": test,
            "num_classes": k}


def make_webvision(root: Path, per_class: int = 2, with_imagenet: bool = True, *,
                   with_synsets: bool = False, seed: int = 0) -> dict:
    """mini-WebVision layout: ``root/info/{train_filelist_google,val_filelist}.txt``,
    ``root/google/...``, ``root/val_images_256/...`` and (optionally) ``root/imagenet/val/<c>/``.

    The file lists cover classes 0..59 (``per_class`` each, interleaved by class); ImageNet val has
    the 50 folders 0..49. ``with_synsets`` also writes ``info/synsets.txt`` (60 lines).
    """
    root = Path(root)
    rng = np.random.RandomState(seed)
    kk = WEBVISION_LISTED_CLASSES
    train, val, imagenet = [], [], []
    for j in range(per_class):
        for c in range(kk):
            rel = f"google/q{c + 1:04d}/{j:08d}.jpg"
            _write_image(root / rel, rng, (40, 32) if (c + j) % 4 == 0 else (32, 32))
            train.append((rel, c))
            name = f"val{len(val) + 1:06d}.jpg"
            _write_image(root / "val_images_256" / name, rng)
            val.append((name, c))
    _write_lines(root / "info" / "train_filelist_google.txt", [f"{p} {y}" for p, y in train])
    _write_lines(root / "info" / "val_filelist.txt", [f"{p} {y}" for p, y in val])
    if with_synsets:
        _write_lines(root / "info" / "synsets.txt",
                     [f"n{1440764 + c:08d} synset {c}, thing" for c in range(kk)])
    if with_imagenet:
        for c in range(50):
            for j in range(per_class):
                rel = f"imagenet/val/{c}/ILSVRC2012_val_{c * per_class + j + 1:08d}.JPEG"
                _write_image(root / rel, rng)
                imagenet.append((rel, c))
    return {"root": root, "train": train, "val": val, "imagenet": imagenet,
            "listed_classes": kk}
