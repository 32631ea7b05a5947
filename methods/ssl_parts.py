"""Building blocks of DivideMix-style semi-supervised training, shared by ``dividemix`` and ``gss_ssl``.

Pure functions with closed forms (tested on hand examples). Shapes: B = batch, K = classes, N = samples.
Randomness always comes from an explicit ``torch.Generator``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nlbench.mixup import device_mix_weight, mix


def sharpen(p: torch.Tensor, T: float) -> torch.Tensor:
    """Temperature sharpening of distributions (B, K): p^(1/T) renormalised per row."""
    q = p ** (1.0 / T)
    return q / q.sum(1, keepdim=True)


def co_guess(probs: list[torch.Tensor]) -> torch.Tensor:
    """Co-guessing before sharpening: the mean of the softmaxes (B, K) of both nets on both views."""
    return torch.stack(probs).mean(0)


def co_refine(label: torch.Tensor, w: torch.Tensor, p_bar: torch.Tensor, T: float) -> torch.Tensor:
    """Co-refinement: sharpen(w * label + (1 - w) * p_bar). ``label`` (B, K) is a one-hot (DivideMix:
    the noisy label; GSS-SSL: a drawn label), ``w`` (B,) the clean probability, ``p_bar`` (B, K) the
    trained net's mean softmax over the two views."""
    w = w.reshape(-1, 1).to(p_bar.dtype)
    return sharpen(w * label + (1 - w) * p_bar, T)


def mixup(x: torch.Tensor, t: torch.Tensor, lam: float | torch.Tensor,
          perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch without interleaving: lam * (x, t) + (1 - lam) * (x, t)[perm] over the whole batch."""
    return mix(x, lam, perm), mix(t, lam, perm)


def draw_mix_lambda(alpha: float, generator: torch.Generator) -> float | torch.Tensor:
    """lam ~ Beta(alpha, alpha), then max(lam, 1 - lam). Drawn by inverting the Beta CDF at a uniform
    from ``generator`` (exactly Beta-distributed, reproducible, no global RNG). On a device other than
    the CPU, lam is ``nlbench.mixup.device_mix_weight``'s 0-d device tensor instead (the same
    distribution, drawn as a Gamma ratio), so the step never waits for the device (issue 11)."""
    if generator.device.type != "cpu":
        return device_mix_weight(alpha, generator)
    from scipy.special import betaincinv   # here, not at the top: `nlbench list` imports every method

    u = float(torch.rand(1, generator=generator, device=generator.device))
    lam = float(betaincinv(alpha, alpha, u))
    return max(lam, 1.0 - lam)


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_x: -mean_b sum_k target_bk log softmax(logits)_bk."""
    return -(F.log_softmax(logits, 1) * target).sum(1).mean()


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """sum_k pi_k log(pi_k / mean_b p_bk) with pi = 1/K (DivideMix's regulariser against collapse)."""
    k = logits.shape[1]
    mean_p = F.softmax(logits, 1).mean(0)
    prior = torch.full_like(mean_p, 1.0 / k)
    return (prior * (prior / mean_p).log()).sum()


def neg_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The warm-up confidence penalty mean_b sum_k p log p (minus the entropy; adding it raises entropy)."""
    p = F.softmax(logits, 1)
    return (p * F.log_softmax(logits, 1)).sum(1).mean()


def rampup(progress: float, start: float, length: float) -> float:
    """clip((progress - start) / length, 0, 1): the linear lambda_u ramp (progress in epochs)."""
    return float(np.clip((progress - start) / length, 0.0, 1.0))


def minmax(v: torch.Tensor) -> torch.Tensor:
    """(v - min) / (max - min); a constant vector maps to zeros."""
    lo, hi = v.min(), v.max()
    return (v - lo) / (hi - lo).clamp_min(1e-12)


def gmm_clean_prob(losses: torch.Tensor, seed: int) -> torch.Tensor:
    """Clean probability per sample from a 2-component GMM on (normalised) losses (n,).

    scikit-learn GaussianMixture(max_iter=10, tol=1e-2, reg_covar=5e-4) as in the official code,
    seeded with ``seed``; the posterior of the component with the smaller mean. Returns float32 (n,)
    on the device of ``losses``. (Convergence warnings at max_iter=10 are expected and silenced.)
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture   # ~1 s to import: only when a method divides

    x = losses.detach().double().cpu().numpy().reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    prob = gmm.predict_proba(x)[:, int(np.argmin(gmm.means_.ravel()))]
    return torch.from_numpy(prob).float().to(losses.device)


def balanced_subset(labels: torch.Tensor, size: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """DivideMix's Clothing1M sampling: walk a random permutation (from ``generator``) and keep a sample
    while its (noisy) class has fewer than ceil(size / K) kept and fewer than ``size`` are kept in all.
    Returns sorted indices (on ``labels``' device)."""
    n = labels.numel()
    perm = torch.randperm(n, generator=generator, device=generator.device).to(labels.device)
    lab = labels[perm]
    cap = -(-size // num_classes)
    onehot = F.one_hot(lab, num_classes)
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1          # rank of each sample within its class
    return perm[rank < cap][:size].sort().values
