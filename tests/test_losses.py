"""Gradients of the base losses equal the GSS paper's Table 1 closed forms W * (p_k - q_k)."""
import math

import pytest
import torch
import torch.nn.functional as F

from nlbench.losses import build_loss, make_gce, make_sl
from nlbench.registry import ConfigError


def _grad(loss_fn, z, y):
    z = z.clone().requires_grad_(True)
    loss_fn(z, y).sum().backward()
    return z.grad


def _rand(seed, b=64, k=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, k, (b,), generator=g)
    return z, y


@pytest.mark.parametrize("seed", range(5))
def test_ce_gradient_is_p_minus_q(seed):
    z, y = _rand(seed)
    g = _grad(lambda a, b: F.cross_entropy(a, b, reduction="none"), z, y)
    p, q = F.softmax(z, 1), F.one_hot(y, z.shape[1]).double()
    torch.testing.assert_close(g, p - q, rtol=1e-12, atol=1e-12)


def _gce64(q):
    return lambda z, y: (1 - torch.exp(q * F.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1))) / q


def _sl64(alpha, beta, clamp):
    A = math.log(clamp)

    def f(z, y):
        ce = F.cross_entropy(z, y, reduction="none")
        p = F.softmax(z, 1).clamp(1e-7, 1)
        return alpha * ce - beta * A * (p.sum(1) - p.gather(1, y[:, None]).squeeze(1))
    return f


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q", [0.3, 0.7, 1.0])
def test_gce_gradient_closed_form(seed, q):
    z, y = _rand(seed)
    g = _grad(_gce64(q), z, y)
    p, onehot = F.softmax(z, 1), F.one_hot(y, z.shape[1]).double()
    w = p.gather(1, y[:, None]) ** q
    torch.testing.assert_close(g, w * (p - onehot), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha,beta", [(0.1, 1.0), (6.0, 0.1)])
def test_sl_gradient_closed_form(seed, alpha, beta):
    z, y = _rand(seed, scale=1.0)  # moderate logits: the 1e-7 prediction clamp stays inactive
    g = _grad(_sl64(alpha, beta, 1e-4), z, y)
    p, onehot = F.softmax(z, 1), F.one_hot(y, z.shape[1]).double()
    A = math.log(1e-4)
    w = alpha - beta * A * p.gather(1, y[:, None])
    torch.testing.assert_close(g, w * (p - onehot), rtol=1e-10, atol=1e-12)


def test_registered_losses_match_float64_formulas():
    """The production losses (float32 inside) agree with the float64 reference formulas."""
    z, y = _rand(0, scale=1.0)
    torch.testing.assert_close(make_gce(q=0.7)(z, y).double(), _gce64(0.7)(z, y), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(make_sl(alpha=0.1, beta=1.0)(z, y).double(), _sl64(0.1, 1.0, 1e-4)(z, y),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(build_loss("ce")(z, y).double(), F.cross_entropy(z, y, reduction="none"),
                               rtol=1e-5, atol=1e-6)


def test_gce_finite_when_p_y_underflows():
    z = torch.tensor([[0.0, 200.0, -200.0]], requires_grad=True)
    y = torch.tensor([2])  # p_y = exp(-400): underflows in float32
    loss = make_gce(q=0.7)(z, y).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert loss.item() == pytest.approx(1 / 0.7)


def test_sl_rce_value():
    """RCE with one-hot clamped at 1e-4 is -ln(1e-4) * (1 - p_y) = 9.21 * (1 - p_y)."""
    z = torch.tensor([[1.0, 0.0, -1.0]])
    p = F.softmax(z, 1)[0]
    val = make_sl(alpha=0.0, beta=1.0)(z, torch.tensor([0])).item()
    assert val == pytest.approx(-math.log(1e-4) * (1 - p[0].item()), rel=1e-6)


@pytest.mark.parametrize("name,kw", [("gce", {"q": 0}), ("gce", {"q": 1.5}), ("sl", {"alpha": -1}),
                                     ("sl", {"label_clamp": 0}), ("gce", {"bogus": 1}), ("nope", {})])
def test_bad_loss_params_raise_config_error(name, kw):
    with pytest.raises(ConfigError):
        build_loss(name, **kw)


def test_sl_takes_the_papers_values_per_dataset():
    """SL's alpha/beta per dataset (Wang et al. 2019, Sec. 5.1): CIFAR-10 0.1/1.0, CIFAR-100 6.0/0.1, and
    MNIST's 0.01/1.0 for digits (handwritten digits; CIFAR-10's alpha cost it 12 points at sym0.4)."""
    from omegaconf import OmegaConf

    from nlbench.config import compose
    from nlbench.spec import resolve_method_params

    mcfg = OmegaConf.to_container(compose(["method=sl"]).method)
    got = {ds: (p["alpha"], p["beta"]) for ds in ("cifar10", "cifar100", "digits")
           for p in [resolve_method_params(mcfg, ds, "sym0.4")]}
    assert got == {"cifar10": (0.1, 1.0), "cifar100": (6.0, 0.1), "digits": (0.01, 1.0)}
