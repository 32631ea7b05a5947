"""Small pieces shared by the data layer (stream.py, filestream.py), the loop (trainer.py) and the method
contract (method.py): the batch they hand each other and the progress bar they show. Kept below all
of them, so that data, loop and methods each import downward only."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One training batch. ``x`` is the (first) augmented view, normalised, float, (B, C, H, W).

    ``x2`` is a second, independently augmented view when the stream was asked for two views.
    ``y`` are the *noisy* training labels (B,), ``idx`` the sample indices into the training set (B,).
    ``tag`` lets custom streams say which part of a composite step a batch belongs to (e.g. "labeled").
    """

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    x2: torch.Tensor | None = None
    tag: str = ""


def bf16_on(amp: bool | str, device: torch.device) -> bool:
    """Whether a run with ``train.amp`` = ``amp`` computes under bf16 autocast on ``device``: ``true``
    on CUDA only (the default: there it pays), ``always`` on the CPU too. On a CPU with AMX bf16 units
    that is faster (docs/lab-notes.md: 0.65x CE's epoch at scale=cpu), on one without them slower; either way it
    changes the numbers, not just the speed, so it is never a silent default: CPU scales stay fp32. It
    also runs the CUDA path's bf16 numerics without a GPU, as tests/test_gpu_paths.py does."""
    return amp == "always" or (amp is True and device.type == "cuda")


def progress_bar(it, *, enabled: bool, total: int | None = None, desc: str = ""):
    """``it`` wrapped in a tqdm bar when ``enabled`` and stderr is a terminal (a log file gets the
    trainer's line per epoch instead); else ``it`` itself."""
    if not (enabled and sys.stderr.isatty()):
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True)
