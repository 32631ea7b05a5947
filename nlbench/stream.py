"""Device-resident batches for in-memory datasets (digits, CIFAR).

The whole training set lives on the training device as uint8 (N, C, H, W). A batch is gathered by
index from a per-epoch permutation drawn with an explicit ``torch.Generator``, then augmented on the
device in one batched op (random crop with zero padding, horizontal flip), normalised and put in
channels_last. Two independent views when asked. No per-image Python, no PIL in the hot loop.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn

from .common import Batch, bf16_on, progress_bar


def _autocast(device: torch.device, amp: bool | str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16_on(amp, device))


class DeviceStream:
    """Batches over a uint8 image tensor kept on ``device``.

    Args:
        x: (N, C, H, W) uint8 images.
        y: (N,) int64 labels the stream hands out (the noisy training labels, or test labels).
        mean, std: per-channel normalisation in [0, 1] units.
        crop_pad: random-crop padding in pixels (0 = no crop); flip: random horizontal flip.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, mean, std, crop_pad: int = 0,
                 flip: bool = False, batch_size: int = 128, infer_batch_size: int = 1024,
                 device: torch.device | str = "cpu", channels_last: bool = False, amp: bool = True,
                 progress: bool = False) -> None:
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device).long()
        c = x.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255
        self.crop_pad = int(crop_pad)
        self.flip = bool(flip)
        self.batch_size = int(batch_size)
        self.infer_batch_size = int(infer_batch_size)
        self.channels_last = channels_last
        self.amp = amp
        self.progress = bool(progress)   # a bar over inference passes (on a terminal)
        self._aug = torch.Generator(device=self.device)

    @property
    def num_train(self) -> int:
        return int(self.x.shape[0])

    def steps(self, n: int | None = None, batch_size: int | None = None) -> int:
        n = self.num_train if n is None else n
        bs = batch_size or self.batch_size
        full, rem = divmod(n, bs)
        return full + (1 if rem >= 2 else 0)

    # -- transforms ----------------------------------------------------------------------------
    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        out = (xb.float() - self.mean) / self.std
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def augment(self, xb: torch.Tensor) -> torch.Tensor:
        """Random crop (zero padding ``crop_pad``) + horizontal flip of a uint8 batch, batched on device."""
        b, c, h, w = xb.shape
        if self.crop_pad > 0:
            p = self.crop_pad
            padded = torch.nn.functional.pad(xb, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), device=self.device, generator=self._aug)
            ox = torch.randint(0, 2 * p + 1, (b,), device=self.device, generator=self._aug)
            rows = (oy[:, None] + torch.arange(h, device=self.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=self.device))[:, None, None, :]
            bi = torch.arange(b, device=self.device)[:, None, None, None]
            ci = torch.arange(c, device=self.device)[None, :, None, None]
            xb = padded[bi, ci, rows, cols]
        if self.flip:
            m = torch.rand(b, device=self.device, generator=self._aug) < 0.5
            xb = torch.where(m[:, None, None, None], xb.flip(3), xb)
        return self.normalise(xb)

    # -- the Stream protocol -------------------------------------------------------------------
    def batches(self, *, indices: torch.Tensor | None = None, batch_size: int | None = None,
                views: int = 1, shuffle: bool = True, drop_last: bool = False,
                generator: torch.Generator | None = None, augment: bool = True) -> Iterator[Batch]:
        """Yield batches over ``indices`` (default all), order and augmentation from ``generator``.

        A final batch of a single sample is dropped (train-mode batch norm cannot use it).
        """
        bs = batch_size or self.batch_size
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        idx_all = torch.arange(self.num_train) if indices is None else indices.detach().cpu().long()
        if shuffle:
            idx_all = idx_all[torch.randperm(len(idx_all), generator=gen)]
        # augmentation randomness derives from the same generator, drawn once per call
        self._aug.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
        idx_all = idx_all.to(self.device)
        n = len(idx_all)
        for start in range(0, n, bs):
            idx = idx_all[start:start + bs]
            if len(idx) < 2 or (drop_last and len(idx) < bs):
                break
            raw = self.x[idx]
            tf = self.augment if augment else self.normalise
            x1 = tf(raw)
            x2 = tf(raw) if views >= 2 else None
            yield Batch(x=x1, y=self.y[idx], idx=idx, x2=x2)

    def eval_batches(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = batch_size or self.infer_batch_size
        for start in range(0, self.num_train, bs):
            yield self.normalise(self.x[start:start + bs]), self.y[start:start + bs]

    def infer(self, net: nn.Module, *, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, K) in fp32 of ``net`` in eval mode on un-augmented images, in index order.

        The forwards run under ``torch.inference_mode`` (no autograd bookkeeping at all); the
        concatenation runs outside it, so the result is an ordinary tensor a method may change in place."""
        was_training = net.training
        net.eval()
        idx_all = torch.arange(self.num_train, device=self.device) if indices is None else indices.to(self.device)
        bs = self.infer_batch_size
        outs = []
        try:
            for start in progress_bar(range(0, len(idx_all), bs), enabled=self.progress,
                                      total=-(-len(idx_all) // bs), desc="inference pass"):
                with torch.inference_mode(), _autocast(self.device, self.amp):
                    outs.append(net(self.normalise(self.x[idx_all[start:start + bs]])).float())
        finally:
            net.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0, device=self.device)
