"""The GSS gradient direction pool: one reusable component for GSS-SB, GSS-DB and GSS-SSL.

Yu et al., CVPR 2023, Sec. 5.1. Each sample n keeps a pool D_n in R^K (a buffer (N, K) on the
training device). Every time a sample is trained, its label is drawn from D_n / sum(D_n) (Eqn. 5).
After epoch e of E (0-based index of the epoch just finished), with p = p(noisy label) and pred the
argmax of the model's softmax:

    D_n += onehot(noisy) * p * (1 - e/E) + onehot(pred) * p * lambda1 * e/E + (1/K) * lambda2 * e/E
                                                                            (Eqns. 6-9)

Choices the paper leaves open (methods.md 1.3), each an option:
- ``init``: ``onehot`` (default) starts D = init_mass * onehot(noisy), so epoch 0 trains on the noisy
  labels exactly like the base loss; ``zeros`` starts empty and draws the noisy label while a pool is
  still empty (sum 0), which differs only in the pools' later scale.
- the uniform term adds lambda2 * e/E * (1/K) to every entry (total mass lambda2 * e/E).
- D is never renormalised; probabilities are D normalised at sampling time.
- ``pred_weight`` (Eqn. 7 has two readings): ``noisy`` (default, the literal text) weights the
  prediction term by p_noisy, the probability of the *given* label; ``pred`` weights it by max(p),
  the confidence of the prediction itself, so that a mislabeled sample the model confidently and
  correctly predicts moves towards its prediction (Sec. 5.1's description). The default is chosen
  on the noisy validation split (docs/lab-notes.md), never on the test set.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nlbench.registry import ConfigError, check_range

INITS = ("onehot", "zeros")
PRED_WEIGHTS = ("noisy", "pred")
STATS = ("infer", "train")      # where p_noisy and pred come from: an inference pass, or the training forward


def check_gss_options(*, lambda1: float, lambda2: float, stats: str, pred_weight: str) -> tuple[float, float, str, str]:
    """Validate the options GSS-SB and GSS-DB share; returns (lambda1, lambda2, stats, pred_weight)."""
    l1, l2 = check_range("gss lambda1", lambda1, 0, None), check_range("gss lambda2", lambda2, 0, None)
    if stats not in STATS:
        raise ConfigError(f"unknown gss stats {stats!r}; valid choices: {', '.join(STATS)}")
    if pred_weight not in PRED_WEIGHTS:
        raise ConfigError(f"unknown gss pred_weight {pred_weight!r}; valid choices: {', '.join(PRED_WEIGHTS)}")
    return l1, l2, stats, pred_weight


class DirectionPool(nn.Module):
    """Per-sample gradient direction pools D (N, K) with sampling (Eqn. 5) and the update (Eqns. 6-9)."""

    def __init__(self, noisy_labels: torch.Tensor, num_classes: int, *, init: str = "onehot",
                 init_mass: float = 1.0) -> None:
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"unknown GSS pool init {init!r}; valid choices: {', '.join(INITS)}")
        check_range("GSS init_mass", init_mass, 0, None, lo_open=True)
        n, k = len(noisy_labels), int(num_classes)
        pool = torch.zeros(n, k)
        if init == "onehot":
            pool[torch.arange(n), noisy_labels.long().cpu()] = float(init_mass)
        self.register_buffer("pool", pool)
        self.register_buffer("noisy", noisy_labels.clone().long())
        self.num_classes = k

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        d = self.pool[idx]
        # branch-free (no host sync): an all-zero row gets mass 1 on its noisy label
        empty = (d.sum(1, keepdim=True) <= 0).to(d.dtype)
        return d + empty * torch.nn.functional.one_hot(self.noisy[idx], self.num_classes).to(d.dtype)

    def sample(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Labels (B,) drawn from D[idx] / sum(D[idx]); an empty pool gives its noisy label."""
        return torch.multinomial(self._rows(idx), 1, generator=generator).squeeze(1)

    def verdict(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(p of the noisy label, argmax label, its probability), each (N,), of the normalised pools."""
        q = self.probs(torch.arange(self.pool.shape[0], device=self.pool.device))
        label_prob, label = q.max(1)
        return q.gather(1, self.noisy[:, None]).squeeze(1), label, label_prob

    def probs(self, idx: torch.Tensor) -> torch.Tensor:
        """The sampling distribution D[idx] / sum(D[idx]) (B, K); an empty pool is one-hot on its noisy label."""
        d = self._rows(idx)
        return d / d.sum(1, keepdim=True)

    @torch.no_grad()
    def update(self, probs: torch.Tensor, *, epoch: int, epochs: int, lambda1: float, lambda2: float,
               idx: torch.Tensor | None = None, pred_weight: str = "noisy") -> None:
        """Eqns. 6-9 after 0-based ``epoch`` of ``epochs``, from softmax ``probs`` (n, K) of samples ``idx``.

        ``probs`` are the model's probabilities for the samples (all N when ``idx`` is None): p_noisy =
        probs[noisy], pred = argmax probs. Per-sample lambdas may be tensors of shape (n,) (GSS-SSL).
        ``pred_weight``: the prediction term's weight, p_noisy (``noisy``) or max(probs) (``pred``).
        """
        if pred_weight not in PRED_WEIGHTS:
            raise ConfigError(f"unknown GSS pred_weight {pred_weight!r}; valid choices: {', '.join(PRED_WEIGHTS)}")
        idx = torch.arange(self.pool.shape[0], device=self.pool.device) if idx is None else idx
        probs = probs.to(self.pool.device).float()
        noisy = self.noisy[idx]
        t = epoch / epochs
        p_noisy = probs.gather(1, noisy[:, None]).squeeze(1)
        p_pred, pred = probs.max(1)
        w_pred = p_noisy if pred_weight == "noisy" else p_pred
        lam1 = torch.as_tensor(lambda1, dtype=torch.float32, device=self.pool.device)
        lam2 = torch.as_tensor(lambda2, dtype=torch.float32, device=self.pool.device)
        add = torch.zeros_like(probs)
        add.scatter_add_(1, noisy[:, None], (p_noisy * (1 - t))[:, None])
        add.scatter_add_(1, pred[:, None], (w_pred * lam1 * t)[:, None])
        add += (lam2 * t / self.num_classes).reshape(-1, 1)   # scalar or per-sample (n,)
        self.pool.index_add_(0, idx, add)
