"""Mixup pieces drawn from an explicit generator (ELR+, DivideMix): Beta draws and the mixing itself.

torch.distributions.Beta draws from the global RNG; methods draw from their own generator, so the
Beta variate is built here from two Gamma variates (Marsaglia & Tsang, 2000), on the generator's
device, in float64.

On CUDA a draw must not read the device back (issue 11: no host syncs in the step), and both CPU
samplers do (the rejection loop of :func:`sample_gamma` checks how many draws it got; DivideMix's
inverse CDF needs scipy on the host). There the weight comes from :func:`device_mix_weight`, the same
Gamma-ratio construction with a fixed number of proposals, as a 0-d device tensor. The CPU keeps its
samplers, so CPU runs keep their numbers.
"""
from __future__ import annotations

import math

import torch

from .registry import check_range


def sample_gamma(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws (float64, on the generator's device) of Gamma(alpha, 1), alpha > 0."""
    alpha = check_range("gamma alpha", alpha, 0, None, lo_open=True)
    dev = generator.device
    a = alpha + 1.0 if alpha < 1 else alpha          # alpha < 1: Gamma(alpha+1) * U^(1/alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out, need = [], n
    while need > 0:                                  # acceptance > 95%: one round almost always
        m = 2 * need + 8
        z = torch.randn(m, generator=generator, device=dev, dtype=torch.float64)
        u = torch.rand(m, generator=generator, device=dev, dtype=torch.float64)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        got = (d * v)[ok][:need]
        out.append(got)
        need -= got.numel()
    g = torch.cat(out)
    if alpha < 1:
        g = g * torch.rand(n, generator=generator, device=dev, dtype=torch.float64) ** (1.0 / alpha)
    return g


def sample_beta(a: float, b: float, generator: torch.Generator) -> float:
    """One draw of Beta(a, b) as X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b)."""
    x, y = sample_gamma(a, 1, generator), sample_gamma(b, 1, generator)
    return float(x / (x + y))


def mixup_weight(alpha: float, generator: torch.Generator) -> float | torch.Tensor:
    """l ~ Beta(alpha, alpha), then max(l, 1 - l) (ELR+, DivideMix); alpha = 0 means no mixing (1.0).
    A float from the exact Gamma-ratio sampler on the CPU; a 0-d tensor from :func:`device_mix_weight`
    on any other device."""
    if alpha == 0:
        return 1.0
    if generator.device.type != "cpu":
        return device_mix_weight(alpha, generator)
    lam = sample_beta(alpha, alpha, generator)
    return max(lam, 1.0 - lam)


def device_gamma(alpha: float, n: int, generator: torch.Generator, proposals: int = 16) -> torch.Tensor:
    """``n`` draws (float64, on the generator's device) of Gamma(alpha, 1) without a host read.

    The Marsaglia-Tsang sampler of :func:`sample_gamma` with a fixed number of ``proposals`` per draw,
    drawn at once, keeping the first accepted one; no loop waits on the device. Each proposal is
    accepted with probability > 0.95 (shape >= 1; alpha < 1 is boosted as there), so all 16 fail
    with probability < 1e-20; that draw would keep its first proposal (clamped to be positive)."""
    alpha = check_range("gamma alpha", alpha, 0, None, lo_open=True)
    dev = generator.device
    a = alpha + 1.0 if alpha < 1 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn(n, proposals, generator=generator, device=dev, dtype=torch.float64)
    u = torch.rand(n, proposals, generator=generator, device=dev, dtype=torch.float64)
    v = (1 + c * z) ** 3
    ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)          # the first accepted proposal
    g = (d * v).gather(1, first).squeeze(1).clamp_min(1e-300)
    if alpha < 1:
        g = g * torch.rand(n, generator=generator, device=dev, dtype=torch.float64) ** (1.0 / alpha)
    return g


def device_mix_weight(alpha: float, generator: torch.Generator) -> torch.Tensor:
    """max(l, 1 - l) with l ~ Beta(alpha, alpha) = X / (X + Y), X, Y ~ Gamma(alpha) from
    :func:`device_gamma`: a 0-d float32 tensor on the generator's device, never read back."""
    x = device_gamma(alpha, 2, generator)
    lam = (x[0] / (x[0] + x[1])).float()
    return torch.maximum(lam, 1.0 - lam)


def mix(t: torch.Tensor, lam: float | torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """lam * t + (1 - lam) * t[perm], for inputs (B, ...) and targets (B, K) alike."""
    return lam * t + (1 - lam) * t[perm]
