"""Two-network methods: Co-teaching, JoCoR, ELR+ and GSS-DB, each checked against its formula on a
hand example, and every one resumed from a kill bit for bit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.coteaching import CoTeaching
from methods.elr_plus import ELRPlus, elr_plus_loss
from methods.gss_db import GSSDoubleBranch
from methods.gss_pool import DirectionPool
from methods.jocor import JoCoR, jocor_loss
from methods.small_loss import ForgetSchedule, keep_smallest
from nlbench.config import compose
from nlbench.method import Batch, Context
from nlbench.mixup import mixup_weight, sample_beta
from nlbench.runner import execute
from nlbench.spec import build_spec
from nlbench.trainer import load_checkpoint


def make(cls, n=12, k=3, d=4, seed=0, **kw):
    torch.manual_seed(seed)
    nets = [nn.Linear(d, k) for _ in range(2)]
    y = torch.randint(0, k, (n,))
    return cls(nets=nets, num_classes=k, noisy_labels=y, generator=torch.Generator().manual_seed(seed), **kw)


def ctx(epoch=20, epochs=30, steps_per_epoch=10, stream=None):
    return Context(epoch=epoch, epochs=epochs, stream=stream, batch_size=8, device=torch.device("cpu"),
                   generator=torch.Generator().manual_seed(0), steps_per_epoch=steps_per_epoch)


def batch(m, idx, d=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    idx = torch.as_tensor(idx)
    return Batch(x=torch.randn(len(idx), d, generator=g), y=m.noisy_labels[idx], idx=idx)


# ------------------------------------------------------------------------------ small-loss selection
def test_keep_smallest_on_a_hand_example_and_as_a_property():
    loss = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.3])
    assert keep_smallest(loss, 0.4).tolist() == [1, 3, 4]         # int(0.6 * 5) = 3, ties in batch order
    assert keep_smallest(loss, 0.0).tolist() == [1, 3, 4, 0, 2]
    g = torch.Generator().manual_seed(0)
    for forget in (0.0, 0.13, 0.36, 0.5, 0.8):
        l = torch.rand(128, generator=g)
        keep = keep_smallest(l, forget)
        assert len(keep) == int((1 - forget) * 128)
        dropped = torch.ones(128, dtype=torch.bool)
        dropped[keep] = False
        assert l[keep].max() <= l[dropped].min() if dropped.any() else True


def test_forget_rate_ramp_is_the_official_linspace():
    s = ForgetSchedule(0.36, num_gradual=10)
    assert [s(e) for e in range(10)] == pytest.approx(np.linspace(0, 0.36, 10).tolist(), abs=1e-15)
    assert s(10) == s(150) == 0.36
    assert ForgetSchedule(0.5, 10, exponent=2)(9) == pytest.approx(0.25)


# ------------------------------------------------------------------------------ Co-teaching
def test_coteaching_each_network_learns_only_from_its_peers_selection():
    m = make(CoTeaching, forget_rate=0.5)
    b = batch(m, range(12))
    out = m.loss(b, ctx())
    out.loss.backward()
    with torch.no_grad():
        l0 = F.cross_entropy(m.nets[0](b.x), b.y, reduction="none")
        l1 = F.cross_entropy(m.nets[1](b.x), b.y, reduction="none")
    keep0, keep1 = keep_smallest(l0, 0.5), keep_smallest(l1, 0.5)
    assert set(keep0.tolist()) != set(keep1.tolist())             # the example tells the two apart
    for i, peer_keep in ((0, keep1), (1, keep0)):
        net = m.nets[i]
        ref = torch.autograd.grad(F.cross_entropy(net(b.x[peer_keep]), b.y[peer_keep]), list(net.parameters()))
        for p, r in zip(net.parameters(), ref):
            torch.testing.assert_close(p.grad, r, rtol=1e-6, atol=1e-7)
    assert m.selected()[b.idx[keep0]].all() and m.selected().sum() == 6
    m.on_epoch_start(ctx())
    assert not m.selected().any()


# ------------------------------------------------------------------------------ JoCoR
def test_jocor_loss_equals_its_formula_on_a_hand_example():
    a = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    b = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 2.0, 0.0]])
    y = torch.tensor([0, 2])
    lam = 0.7
    p1, p2 = np.exp(a.numpy()), np.exp(b.numpy())
    p1, p2 = p1 / p1.sum(1, keepdims=True), p2 / p2.sum(1, keepdims=True)
    expect = []
    for i in range(2):
        ce = -math.log(p1[i, y[i]]) - math.log(p2[i, y[i]])
        kl = sum(p2[i] * np.log(p2[i] / p1[i])) + sum(p1[i] * np.log(p1[i] / p2[i]))
        expect.append((1 - lam) * ce + lam * kl)
    torch.testing.assert_close(jocor_loss(a, b, y, lam), torch.tensor(expect, dtype=torch.float32))


def test_jocor_keeps_the_smallest_joint_losses_and_trains_both_networks_jointly():
    m = make(JoCoR, co_lambda=0.8, forget_rate=0.25)
    assert len(m.param_groups()) == 1 and len(m.param_groups()[0]) == 4
    b = batch(m, range(12))
    out = m.loss(b, ctx())
    per = jocor_loss(m.nets[0](b.x), m.nets[1](b.x), b.y, 0.8)
    keep = torch.sort(per.detach(), stable=True).indices[:9]
    torch.testing.assert_close(out.loss, per[keep].mean())
    assert m.selected().sum() == 9 and m.selected()[keep].all()
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.nets.parameters())


# ------------------------------------------------------------------------------ ELR+
def test_mixup_weight_follows_the_folded_beta_distribution():
    from scipy import stats

    for alpha in (0.5, 1.0, 4.0):
        g = torch.Generator().manual_seed(7)
        draws = np.array([sample_beta(alpha, alpha, g) for _ in range(3000)])
        assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3, alpha
    g = torch.Generator().manual_seed(7)
    folded = np.array([mixup_weight(1.0, g) for _ in range(3000)])   # max(l, 1 - l), l ~ U(0, 1): U(0.5, 1)
    assert folded.min() >= 0.5 and stats.kstest(folded, stats.uniform(0.5, 0.5).cdf).pvalue > 1e-3
    assert mixup_weight(0.0, g) == 1.0
    assert stats.kstest(draws, stats.beta(1, 1).cdf).pvalue < 1e-6  # the test can tell Beta(4,4) apart


@pytest.mark.parametrize("reweight", [False, True])
def test_elr_plus_target_and_loss_equal_their_formulas(reweight):
    m = make(ELRPlus, beta=0.7, lam=3.0, mixup_alpha=1.0, lambda_rampup=0.5, reweight_targets=reweight)
    m.hist[0, 3] = torch.tensor([0.2, 0.5, 0.3])                  # an earlier visit of sample 3
    old = m.hist.clone()
    b = batch(m, [3, 7, 1, 10])
    g = torch.Generator().manual_seed(0)
    g.set_state(m.generator.get_state())                          # replay the method's draws
    out = m.loss((0, b), ctx(epochs=4, steps_per_epoch=10))
    lam = mixup_weight(1.0, g)
    perm = torch.randperm(4, generator=g)
    with torch.no_grad():
        p_ema = F.softmax(m.emas[1](b.x), 1)                      # the OTHER network's EMA copy, un-mixed x
        t = 0.7 * old[0, b.idx] + 0.3 * p_ema
        torch.testing.assert_close(m.hist[0, b.idx], t)
        assert torch.equal(m.hist[1], old[1])                     # network 1's targets untouched
        q = lam * t + (1 - lam) * t[perm]
        y1 = F.one_hot(b.y, 3).float()
        target = lam * y1 + (1 - lam) * y1[perm]
        if reweight:
            target = target * q / (target * q).sum(1, keepdim=True)
        logits = m.nets[0](lam * b.x + (1 - lam) * b.x[perm])
        p = F.softmax(logits, 1).clamp(1e-4, 1 - 1e-4)
        w = math.exp(-5 * (1 - 1 / 20) ** 2)                      # step 1 of a ramp over 0.5 * 4 * 10 = 20
        expect = -(target * F.log_softmax(logits, 1)).sum(1).mean() + w * 3.0 * torch.log(1 - (q * p).sum(1)).mean()
    torch.testing.assert_close(out.loss, expect)
    assert out.logs["mixup_l"] == lam


def test_elr_plus_ema_update_equals_its_formula():
    m = make(ELRPlus, ema_alpha=0.997, ema_rampup=0.5)
    c = ctx(epochs=4, steps_per_epoch=10)                         # ramp over 0.5 * 40 = 20 steps
    for step in range(3):
        with torch.no_grad():
            for p in m.nets[1].parameters():
                p.add_(0.1)                                       # as an optimiser step would
        old = [e.clone() for e in m.emas[1].parameters()]
        m._net_in_step = 1
        m.on_step_end(c)
        gam = math.exp(-5 * (1 - (step + 1) / 20) ** 2) * 0.997
        for e, o, p in zip(m.emas[1].parameters(), old, m.nets[1].parameters()):
            torch.testing.assert_close(e, gam * o + (1 - gam) * p)
    assert m.net_steps.tolist() == [0, 3]
    # without a ramp: g = min(1 - 1/(s + 1), ema_alpha): a plain average that turns into an EMA
    m = make(ELRPlus, ema_alpha=0.6, ema_rampup=0.0)
    gams = []
    for step in range(4):
        old = [e.clone() for e in m.emas[0].parameters()]
        with torch.no_grad():
            for p in m.nets[0].parameters():
                p.mul_(1.5)
        m._net_in_step = 0
        m.on_step_end(c)
        e, o, p = next(m.emas[0].parameters()), old[0], next(m.nets[0].parameters())
        gams.append(((e - p) / (o - p)).mean().item())
    assert gams == pytest.approx([0.0, 0.5, 0.6, 0.6], abs=1e-5)


# ------------------------------------------------------------------------------ GSS-DB
class FixedStream:
    """``infer`` returns fixed logits per network (what an inference pass would give)."""

    def __init__(self, logits_by_net):
        self.logits = logits_by_net

    def infer(self, net, *, indices=None):
        return self.logits[id(net)]


def test_gss_db_pools_are_updated_with_the_other_networks_predictions():
    m = make(GSSDoubleBranch, n=5)
    g = torch.Generator().manual_seed(3)
    logits = {id(m.nets[0]): torch.randn(5, 3, generator=g), id(m.nets[1]): torch.randn(5, 3, generator=g)}
    m.on_epoch_end(ctx(epoch=6, epochs=10, stream=FixedStream(logits)))
    for i in range(2):
        ref = DirectionPool(m.noisy_labels, 3)
        ref.update(F.softmax(logits[id(m.nets[1 - i])], 1), epoch=6, epochs=10, lambda1=2.0, lambda2=1.0)
        torch.testing.assert_close(m.pools[i].pool, ref.pool, rtol=0, atol=0)
    assert not torch.equal(m.pools[0].pool, m.pools[1].pool)
    # stats=train: the same cross-wiring from each network's last training softmax
    m = make(GSSDoubleBranch, n=5, stats="train")
    m.train_probs.copy_(F.softmax(torch.randn(2, 5, 3, generator=g), 2))
    m.on_epoch_end(ctx(epoch=6, epochs=10))
    for i in range(2):
        ref = DirectionPool(m.noisy_labels, 3)
        ref.update(m.train_probs[1 - i], epoch=6, epochs=10, lambda1=2.0, lambda2=1.0)
        torch.testing.assert_close(m.pools[i].pool, ref.pool, rtol=0, atol=0)


def test_gss_db_each_network_trains_on_labels_from_its_own_pool():
    m = make(GSSDoubleBranch, n=6)
    m.pools[0].pool.zero_()
    m.pools[0].pool[:, 1] = 1.0                                   # pool 0: always class 1
    m.pools[1].pool.zero_()
    m.pools[1].pool[:, 2] = 1.0                                   # pool 1: always class 2
    b = batch(m, range(6))
    out = m.loss(b, ctx())
    expect = F.cross_entropy(m.nets[0](b.x), torch.full((6,), 1)) + F.cross_entropy(m.nets[1](b.x), torch.full((6,), 2))
    torch.testing.assert_close(out.loss, expect)


# ------------------------------------------------------------------------------ kill and resume
def run(tmp_path, *overrides, name="r"):
    cfg = compose(["progress=false", "scale=smoke", f"results_dir={tmp_path / name}",
                   f"checkpoint_dir={tmp_path / 'ckpt'}", *overrides])
    return execute(build_spec(cfg), log=lambda s: None)


@pytest.mark.parametrize("method, state_keys", [
    ("coteaching", ["kept"]), ("jocor", ["kept"]),
    ("elr_plus", ["hist", "net_steps", "emas.1.1.weight"]), ("gss_db", ["pools.0.pool", "pools.1.pool"])])
def test_every_state_survives_kill_and_resume_bit_for_bit(tmp_path, method, state_keys):
    common = [f"method={method}", "train.epochs=3"]
    full = run(tmp_path, *common, name="full")
    part = run(tmp_path, *common, "interrupt_after=2", name="resumed")
    assert part["status"] == "interrupted"
    (ckpt,) = list((tmp_path / "ckpt").rglob("*.pt"))
    state = load_checkpoint(ckpt)   # checksum-verified (nlbench.trainer)
    for k in state_keys:
        assert any(s.endswith(k) for s in state["method"]), (k, list(state["method"]))
    resumed = run(tmp_path, *common, name="resumed")
    assert resumed["status"] == "completed"
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(resumed["history"]) == strip(full["history"])
    assert resumed["final"] == full["final"]


# ------------------------------------------------------------------ mixup weights without host reads
@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_device_gamma_follows_gamma_and_is_reproducible(alpha):
    """The CUDA-path sampler (fixed proposals, no loop on the device): Gamma(alpha) by a KS test
    that tells neighbouring shapes apart, and the same draws from the same generator state."""
    from scipy import stats

    from nlbench.mixup import device_gamma

    x = device_gamma(alpha, 20000, torch.Generator().manual_seed(3))
    assert x.dtype == torch.float64 and x.shape == (20000,) and bool((x > 0).all())
    assert stats.kstest(x.numpy(), stats.gamma(alpha).cdf).pvalue > 1e-3
    assert stats.kstest(x.numpy(), stats.gamma(alpha * 1.1).cdf).pvalue < 1e-6
    assert torch.equal(x, device_gamma(alpha, 20000, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("alpha", [0.5, 4.0])
def test_device_mix_weight_is_a_folded_beta_tensor(alpha):
    """What DivideMix, GSS-SSL and ELR+ mix with on CUDA: max(l, 1 - l), l ~ Beta(alpha, alpha),
    kept as a 0-d tensor on the generator's device (the step never waits for it); mixing with it
    equals mixing with its value."""
    from scipy import stats

    from methods import ssl_parts as S
    from nlbench.mixup import device_mix_weight, mix

    g = torch.Generator().manual_seed(11)
    lams = [device_mix_weight(alpha, g) for _ in range(3000)]
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and v.dtype == torch.float32 for v in lams[:5])
    draws = np.array([float(v) for v in lams])
    assert draws.min() >= 0.5 and draws.max() <= 1.0
    folded = lambda a: (lambda t: np.clip(2 * stats.beta(a, a).cdf(t) - 1, 0, 1))  # noqa: E731
    assert stats.kstest(draws, folded(alpha)).pvalue > 1e-3
    assert stats.kstest(draws, folded(alpha * 2)).pvalue < 1e-6
    x, t = torch.randn(6, 3), torch.softmax(torch.randn(6, 4), 1)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    lam = lams[0]
    torch.testing.assert_close(mix(x, lam, perm), mix(x, float(lam), perm))
    for a, b in zip(S.mixup(x, t, lam, perm), S.mixup(x, t, float(lam), perm)):
        torch.testing.assert_close(a, b)
