"""Per-sample classification losses shared by methods (and wrappable by GSS).

Each loss maps logits (B, K) and integer labels (B,) to per-sample losses (B,). Their gradients with
respect to the logits have the form W * (p_k - q_k) of the GSS paper's Table 1 (q = one-hot label):

- ``ce``:  W = 1
- ``gce``: W = p_y^q                           (L_q = (1 - p_y^q) / q, Zhang & Sabuncu 2018)
- ``sl``:  W = alpha - beta * A * p_y          (alpha*CE + beta*RCE, A = log(one-hot clamp) < 0)
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .registry import Registry, check_range

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry = Registry("loss")


@LOSSES.register("ce")
def make_ce() -> LossFn:
    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, reduction="none")
    return ce


@LOSSES.register("gce")
def make_gce(*, q: float = 0.7) -> LossFn:
    """Generalized cross entropy L_q = (1 - p_y^q) / q, with p_y^q = exp(q * log_softmax_y).

    Computing through log-softmax keeps the value and its gradient finite when p_y underflows
    (p_y^q from a softmax would give q * p_y^(q-1) -> inf).
    """
    q = check_range("gce q", q, 0, 1, lo_open=True)

    def gce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp_y = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        return (1 - torch.exp(q * logp_y)) / q
    return gce


def gce_at(p: float, q: float) -> float:
    """L_q at probability ``p`` (the truncation constant L_q(k))."""
    return (1 - p ** q) / q


@LOSSES.register("sl")
def make_sl(*, alpha: float = 0.1, beta: float = 1.0, label_clamp: float = 1e-4,
            pred_clamp: float = 1e-7) -> LossFn:
    """Symmetric cross entropy alpha*CE + beta*RCE, RCE = -sum_k p_k log clamp(q_k, label_clamp, 1).

    ``label_clamp`` 1e-4 with the natural log gives A = log(1e-4) = -9.21, as the official code (the
    paper's text says A = -4; set ``label_clamp`` = e^-4 ~ 0.0183 for that). Predictions are clamped
    to [pred_clamp, 1] as in the official PyTorch reproduction.
    """
    alpha = check_range("sl alpha", alpha, 0, None)
    beta = check_range("sl beta", beta, 0, None)
    label_clamp = check_range("sl label_clamp", label_clamp, 0, 1, lo_open=True, hi_open=True)
    A = math.log(label_clamp)

    def sl(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, y, reduction="none")
        p = F.softmax(logits, dim=1).clamp(pred_clamp, 1.0)
        # -sum_k p_k log q_k with q = onehot clamped: log q_y = 0, log q_k = A elsewhere
        rce = -A * (p.sum(1) - p.gather(1, y[:, None]).squeeze(1))
        return alpha * ce + beta * rce
    return sl


def build_loss(name: str, **params) -> LossFn:
    from .registry import ConfigError

    maker = LOSSES.get(name)
    try:
        return maker(**params)
    except TypeError as e:
        raise ConfigError(f"loss {name!r}: {e}") from None
