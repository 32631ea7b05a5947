"""The DataLoader-backed stream over a :class:`nlbench.filedata.FileData` (Clothing1M, WebVision).

:class:`FileStream` implements :class:`nlbench.method.Stream`: PIL decoding and the geometric
augmentation run in DataLoader workers on uint8 images; the float conversion and the normalisation run
on the training device in one batched op. Batch order *and* augmentation depend only on the
``torch.Generator`` passed to :meth:`FileStream.batches` (each sample's augmentation is seeded from a
base seed drawn from that generator and the sample's position in the epoch), so the same generator
state gives bit-identical batches for any ``num_workers``.
"""
from __future__ import annotations

import math
import os
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision.transforms import v2

from .common import Batch, bf16_on, progress_bar
from .filedata import Entry, FileData
from .registry import ConfigError, DataError

__all__ = ["FileStream"]

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
