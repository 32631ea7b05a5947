"""Small-loss selection shared by Co-teaching and JoCoR: the forget-rate ramp and the batch selection.

Co-teaching main.py / JoCoR jocor.py: tau_t = forget_rate^c * e / (T_k - 1) for the first T_k = 10
epochs (``np.linspace(0, forget_rate**c, T_k)``), then forget_rate; each step keeps the
int((1 - tau_t) * B) samples of smallest loss. Epochs are 0-based here, so epoch 0 keeps every
sample (the official loops start at index 1 and so train 199 of 200 epochs).
"""
from __future__ import annotations

import torch

from nlbench.registry import as_int, check_range

#: the Adam plan of both official codes (main.py / jocor.py): lr 0.001, from epoch 80 of 200 (CIFAR-10;
#: 100 of 200 for CIFAR-100, decay_start 0.5 in the yaml) the lr decays linearly to 0 and beta1 0.9 -> 0.1
OFFICIAL_PLAN = {"kind": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0,
                 "decay_start": 0.4, "beta1_decayed": 0.1}


class ForgetSchedule:
    """tau_t, the fraction of each batch to drop at 0-based ``epoch``."""

    def __init__(self, forget_rate: float, num_gradual: int = 10, exponent: float = 1.0) -> None:
        self.forget_rate = check_range("forget_rate", forget_rate, 0, 1, hi_open=True)
        self.num_gradual = as_int("num_gradual", num_gradual)
        if self.num_gradual < 1:
            raise ValueError(f"num_gradual={num_gradual} must be >= 1")
        self.exponent = check_range("exponent", exponent, 0, None, lo_open=True)

    def __call__(self, epoch: int) -> float:
        if epoch >= self.num_gradual:
            return self.forget_rate
        top = self.forget_rate ** self.exponent
        return top * epoch / (self.num_gradual - 1) if self.num_gradual > 1 else top


def keep_smallest(loss: torch.Tensor, forget: float) -> torch.Tensor:
    """Positions (int((1 - forget) * B),) of the smallest entries of ``loss`` (B,), smallest first.

    A stable sort: equal losses keep batch order, so a run is the same on every machine. At least one
    sample is kept (an empty selection would give a NaN mean)."""
    n_keep = max(int((1 - forget) * loss.numel()), 1)
    return torch.sort(loss.detach(), stable=True).indices[:n_keep]
