"""DivideMix and GSS-SSL: the closed forms of their building blocks on hand examples, the co-divide, the
peer left untouched by a step, kill-and-resume, GSS-SSL's cross pool update, and real runs on digits."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import beta as beta_dist
from scipy.stats import kstest

from methods import ssl_parts as S
from methods.dividemix import DivideMix, SSLStep
from methods.gss_ssl import GSSSemiSupervised
from nlbench.config import compose
from nlbench.backbones import build_backbone
from nlbench.data import load_dataset
from nlbench.method import Context
from nlbench.registry import ConfigError
from nlbench.runner import execute
from nlbench.spec import build_spec
from nlbench.stream import DeviceStream
from nlbench.trainer import load_checkpoint


def run(tmp_path, *overrides, name="r"):
    cfg = compose(["progress=false", "device=cpu", f"results_dir={tmp_path / name}",
                   f"checkpoint_dir={tmp_path / 'ckpt'}", *overrides])
    return execute(build_spec(cfg), log=lambda s: None)


def make(cls=DivideMix, n=6, k=3, backbone="mlp", labels=None, **params):
    labels = torch.arange(n) % k if labels is None else labels
    torch.manual_seed(0)
    opts = {"input_size": 8} if backbone == "mlp" else {"width": 4}
    nets = [build_backbone(backbone, num_classes=k, in_channels=1, **opts) for _ in range(2)]
    return cls(nets=nets, num_classes=k, noisy_labels=labels, generator=torch.Generator().manual_seed(0), **params)


# ------------------------------------------------------------------------------ closed forms by hand
def test_sharpen_co_guess_co_refine_by_hand():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    torch.testing.assert_close(S.sharpen(p, 0.5), torch.tensor([[0.36, 0.09, 0.01]]) / 0.46)
    torch.testing.assert_close(S.sharpen(p, 1.0), p)
    probs = [torch.tensor([[1.0, 0, 0]]), torch.tensor([[0, 1.0, 0]]), torch.tensor([[0.5, 0.5, 0]]),
             torch.tensor([[0.5, 0, 0.5]])]
    torch.testing.assert_close(S.co_guess(probs), torch.tensor([[0.5, 0.375, 0.125]]))
    # w = 0.25: 0.25 * [1, 0, 0] + 0.75 * [0.2, 0.6, 0.2] = [0.4, 0.45, 0.15] -> squares / 0.385
    t = S.co_refine(torch.tensor([[1.0, 0, 0]]), torch.tensor([0.25]), torch.tensor([[0.2, 0.6, 0.2]]), 0.5)
    torch.testing.assert_close(t, torch.tensor([[0.16, 0.2025, 0.0225]]) / 0.385)


def test_mixup_targets_by_hand():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    t = torch.tensor([[1.0, 0], [0, 1.0], [0.5, 0.5]])
    mx, mt = S.mixup(x, t, 0.7, torch.tensor([2, 0, 1]))
    torch.testing.assert_close(mx, torch.tensor([[0.7 + 0.9], [1.4 + 0.3], [2.1 + 0.6]]))
    torch.testing.assert_close(mt, torch.tensor([[0.85, 0.15], [0.3, 0.7], [0.35, 0.65]]))


def test_losses_and_penalties_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]))
    target = torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]])
    expect = -(np.log(0.5) + 0.5 * np.log(0.25) + 0.5 * np.log(0.5)) / 2
    assert S.soft_ce(logits, target).item() == pytest.approx(expect, rel=1e-6)
    # batch mean p = [0.375, 0.25, 0.375]; penalty = sum (1/3) log((1/3) / p)
    mean_p = np.array([0.375, 0.25, 0.375])
    assert S.uniform_prior_penalty(logits).item() == pytest.approx(np.sum(np.log((1 / 3) / mean_p)) / 3, abs=1e-6)
    # mean_b sum_k p log p: both rows have entropy 1.5 log 2
    assert S.neg_entropy(logits).item() == pytest.approx(-1.5 * np.log(2), rel=1e-6)


def test_mix_lambda_is_folded_beta_and_reproducible():
    g = torch.Generator().manual_seed(5)
    draws = np.array([S.draw_mix_lambda(4.0, g) for _ in range(3000)])
    assert draws.min() >= 0.5
    # max(l, 1 - l) of a symmetric Beta has CDF 2 F(x) - 1 on [0.5, 1]
    assert kstest(draws, lambda x: 2 * beta_dist.cdf(x, 4, 4) - 1).pvalue > 1e-3
    assert kstest(draws, lambda x: 2 * beta_dist.cdf(x, 0.5, 0.5) - 1).pvalue < 1e-6
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert [S.draw_mix_lambda(0.5, g1) for _ in range(5)] == [S.draw_mix_lambda(0.5, g2) for _ in range(5)]


def test_gmm_split_recovers_the_modes_of_a_bimodal_loss():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.15, 0.05, 600)
    noisy = rng.normal(0.75, 0.08, 400)
    loss = S.minmax(torch.tensor(np.concatenate([clean, noisy]), dtype=torch.float32))
    assert loss.min() == 0 and loss.max() == 1
    w = S.gmm_clean_prob(loss, seed=3)
    assert (w[:600] > 0.5).float().mean() > 0.99 and (w[600:] < 0.5).float().mean() > 0.99
    assert torch.equal(w, S.gmm_clean_prob(loss, seed=3))      # seeded: reproducible
    # the clean component is the lower-mean one, whatever order the mixture found them in
    assert torch.equal(S.gmm_clean_prob(1 - loss, seed=3)[:600] < 0.5, torch.ones(600, dtype=torch.bool))


def test_balanced_subset_keeps_at_most_size_over_k_per_noisy_class():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 5)
    g = torch.Generator().manual_seed(1)
    idx = S.balanced_subset(labels, 36, 3, g)
    assert torch.equal(torch.bincount(labels[idx], minlength=3), torch.tensor([12, 12, 5]))
    assert len(set(idx.tolist())) == len(idx) and torch.equal(idx, idx.sort().values)
    assert not torch.equal(idx, S.balanced_subset(labels, 36, 3, g))    # fresh each call
    assert torch.equal(S.balanced_subset(labels, 36, 3, torch.Generator().manual_seed(1)), idx)


# ------------------------------------------------------------------------------------ the schedule
def test_lambda_u_ramp_and_warmup_scale_with_the_epoch_count():
    m = make(lambda_u=25, warmup_epochs=10, rampup_epochs=16, reference_epochs=300)
    assert m.warmup_length(300) == 10 and m.rampup_length(300) == 16
    for progress, want in ((9.5, 0.0), (10.0, 0.0), (18.0, 12.5), (26.0, 25.0), (200.0, 25.0)):
        assert m.lambda_u_at(progress, 300) == pytest.approx(want)
    # 30 epochs: warm-up round(1.0) = 1 epoch, ramp 1.6 epochs
    assert m.warmup_length(30) == 1 and m.lambda_u_at(1.8, 30) == pytest.approx(25 * 0.8 / 1.6)
    assert m.warmup_length(2) == 1                                  # never less than one warm-up epoch
    c100 = make(warmup_epochs=30, reference_epochs=300)
    assert c100.warmup_length(200) == 20


def test_warmup_ends_after_the_lr_ramp_at_full_learning_rate():
    """warmup_after_ramp = k: with an lr ramp the warm-up lasts at least ceil(ramp) + k epochs (k at full lr
    after it), else the scaled official length; never longer than the run. k = 0 or no ramp: the old rule."""
    m = make(warmup_epochs=10, reference_epochs=300, warmup_after_ramp=5)
    assert m.warmup_length(100, lr_ramp=5.0) == 10          # scaled: round(3.3) = 3 < 5 + 5
    assert m.warmup_length(100, lr_ramp=4.5) == 10          # a fractional ramp counts as whole epochs
    assert m.warmup_length(300, lr_ramp=0.0) == 10          # paper scale (no ramp): the official 10
    assert m.warmup_length(200, lr_ramp=0.0) == 7           # no ramp: the scaled length, not raised to 5
    assert m.warmup_length(900, lr_ramp=5.0) == 30          # long runs keep the scaled length
    assert m.warmup_length(8, lr_ramp=5.0) == 8             # capped at the run
    assert make(warmup_epochs=10, reference_epochs=300).warmup_length(100, lr_ramp=5.0) == 3
    # the lambda_u ramp starts where the warm-up ends
    assert m.lambda_u_at(10.0, 100, lr_ramp=5.0) == 0.0 and m.lambda_u_at(10.1, 100, lr_ramp=5.0) > 0
    with pytest.raises(ConfigError, match="warmup_after_ramp"):
        make(warmup_after_ramp=-1)


@pytest.mark.parametrize("params, match", [
    ({"p_threshold": 1.0}, "p_threshold"), ({"alpha": 0}, "alpha"), ({"batch_size": 1}, "batch_size"),
    ({"conf_penalty": "yes"}, "conf_penalty"), ({"loss_history": 0}, "loss_history"),
    ({"balanced_subset_per_epoch": 30, "loss_history": 5}, "cannot be combined"),
])
def test_bad_dividemix_params(params, match):
    with pytest.raises(ConfigError, match=match):
        make(**params)


def test_bad_gss_ssl_options_name_the_choices():
    with pytest.raises(ConfigError, match="unlabeled_target 'mix'.*guess, drawn_mix, drawn"):
        make(GSSSemiSupervised, unlabeled_target="mix")
    with pytest.raises(ConfigError, match="labeled_entry"):
        make(GSSSemiSupervised, labeled_entry="pool")


@pytest.mark.parametrize("method, cls", [("dividemix", DivideMix), ("gss_ssl", GSSSemiSupervised)])
def test_yaml_resolves_the_official_table_per_dataset_and_noise(method, cls):
    from omegaconf import OmegaConf

    from nlbench.spec import resolve_method_params

    mcfg = OmegaConf.to_container(compose([f"method={method}"]).method)
    want = {  # (dataset, noise): (lambda_u, p_threshold, warmup_epochs, conf_penalty, loss_history), methods.md 2.6
        ("cifar10", "sym0.2"): (0, 0.5, 10, False, 1), ("cifar10", "sym0.5"): (25, 0.5, 10, False, 1),
        ("cifar10", "sym0.8"): (25, 0.5, 10, False, 1), ("cifar10", "sym0.9"): (50, 0.6, 10, False, 5),
        ("cifar10", "asym0.4"): (0, 0.5, 10, True, 1), ("cifar100", "sym0.2"): (25, 0.5, 30, False, 1),
        ("cifar100", "sym0.5"): (150, 0.5, 30, False, 1), ("cifar100", "sym0.9"): (150, 0.6, 30, False, 5),
        ("clothing1m", "real"): (0, 0.5, 1, True, 1), ("webvision", "real"): (0, 0.5, 1, False, 1),
        # clean: the nearest listed level (sym 20%); digits has no entry of its own
        ("cifar10", "clean"): (0, 0.5, 10, False, 1), ("cifar100", "clean"): (25, 0.5, 30, False, 1),
        ("digits", "clean"): (0, 0.5, 10, False, 1), ("digits", "sym0.2"): (25, 0.5, 10, False, 1)}
    for (ds, noise), (lu, tau, warm, pen, hist) in want.items():
        p = resolve_method_params(mcfg, ds, noise)
        assert (p["lambda_u"], p["p_threshold"], p["warmup_epochs"], p["conf_penalty"], p["loss_history"]) == \
            (lu, tau, warm, pen, hist), (ds, noise)
        assert p["alpha"] == (0.5 if ds in ("clothing1m", "webvision") else 4.0)
        assert p["batch_size"] == (32 if ds in ("clothing1m", "webvision") else 64)
        make(cls, n=40, **p)                 # every resolved set is valid for the constructor
    assert resolve_method_params(mcfg, "clothing1m", "real")["balanced_subset_per_epoch"] == 32000


@pytest.mark.parametrize("method", ["dividemix", "gss_ssl"])
def test_every_cifar_noise_takes_the_nearest_listed_lambda_u(method):
    """The official table lists lambda_u at sym 20/50/80/90% (methods.md 2.6); every other symmetric,
    instance-dependent or human noise config takes the value of the level nearest its rate
    (``params_by_rate``), and every class-dependent flip (asym) 0. Checked over all shipped noise
    configs, so that a new one cannot run at the wrong lambda_u (a command-line rate: test_doors.py)."""
    from omegaconf import OmegaConf

    from nlbench.hydra_setup import CONF_DIR
    from nlbench.spec import resolve_method_params

    mcfg = OmegaConf.to_container(compose([f"method={method}"]).method)
    levels = {"cifar10": {0.2: 0, 0.5: 25, 0.8: 25, 0.9: 50}, "cifar100": {0.2: 25, 0.5: 150, 0.8: 150, 0.9: 150}}
    checked = []
    for path in sorted((CONF_DIR / "noise").glob("*.yaml")):
        noise, ncfg = path.stem, OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        kind, rate = ncfg["kind"], ncfg["rate"]      # a rate family's own file has rate ??? (a str)
        if not isinstance(rate, float) or kind not in ("sym", "sym_other", "idn", "human", "asym", "asym_super"):
            continue
        for ds, table in levels.items():
            if kind == "human" and not noise.startswith("c10n" if ds == "cifar10" else "c100n"):
                continue
            nearest = min(table, key=lambda lv: abs(lv - rate))
            want = 0 if kind.startswith("asym") else table[nearest]
            assert resolve_method_params(mcfg, ds, noise)["lambda_u"] == want, (ds, noise, rate)
            checked.append((ds, noise))
    assert ("cifar10", "c10n_aggre") in checked and ("cifar100", "c100n") in checked and len(checked) > 40


# ---------------------------------------------------------------------------- co-divide and a step
def _digits_ctx(m, epoch, epochs=10, n=200):
    d = load_dataset("digits", data_dir=".")
    stream = DeviceStream(d.train_x[:n], m.noisy_labels, mean=d.mean, std=d.std, crop_pad=1)
    return Context(epoch=epoch, epochs=epochs, stream=stream, batch_size=64, device=torch.device("cpu"),
                   generator=torch.Generator().manual_seed(0))


def test_co_divide_each_net_trains_on_the_split_of_the_other():
    d = load_dataset("digits", data_dir=".")
    m = make(n=200, k=10, labels=torch.from_numpy(d.train_y[:200]))
    ctx = _digits_ctx(m, epoch=5)
    m.on_epoch_start(ctx)
    g = torch.Generator().manual_seed(0)            # the method's generator: one GMM seed per net
    for j in range(2):   # prob[j] is net j's GMM on its own losses
        loss = S.minmax(F.cross_entropy(ctx.infer(m.nets[j]), m.noisy_labels, reduction="none"))
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g))
        assert torch.equal(m.prob[j], S.gmm_clean_prob(loss, seed=seed)) and m.member[j].all()
    assert not torch.equal(m.prob[0], m.prob[1])
    assert torch.equal(m.labeled_mask(0), m.prob[1] > 0.5) and torch.equal(m.labeled_mask(1), m.prob[0] > 0.5)
    steps = list(m.batches(ctx))
    assert {s.net for s in steps} == {0, 1} and not any(s.warmup for s in steps)
    for s in steps:
        assert m.labeled_mask(s.net)[s.lab.idx].all() and (~m.labeled_mask(s.net)[s.unl.idx]).all()
        assert s.lab.x2 is not None and s.unl.x2 is not None
    assert torch.equal(m.selected(), m.labeled_mask(0))
    warm = list(m.batches(_digits_ctx(m, epoch=0)))
    assert all(s.warmup and s.unl is None for s in warm) and len(warm[0].lab.idx) == 128


def test_a_step_leaves_the_peer_untouched_and_uses_its_eval_mode():
    d = load_dataset("digits", data_dir=".")
    m = make(n=200, k=10, backbone="cnn_small", labels=torch.from_numpy(d.train_y[:200]))
    ctx = _digits_ctx(m, epoch=5)
    m.on_epoch_start(ctx)
    step = next(s for s in m.batches(ctx) if s.net == 1)
    net, peer = m.nets[1], m.nets[0]
    peer.train()                                   # as the last evaluation may have left it
    seen = []
    hook = peer.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
    before_peer = {k: v.clone() for k, v in peer.state_dict().items()}
    before_net = {k: v.clone() for k, v in net.state_dict().items()}
    opts = [torch.optim.SGD(n_.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) for n_ in m.nets]
    out = m.loss(step, ctx)
    for o in opts:
        o.zero_grad(set_to_none=True)
    out.loss.backward()
    for o in opts:
        o.step()
    hook.remove()
    assert seen == [False, False]                  # the peer co-guessed twice, in eval mode
    assert all(p.grad is None for p in peer.parameters())
    for k, v in peer.state_dict().items():         # weights and BN running stats
        assert torch.equal(v, before_peer[k]), k
    assert net.training
    assert not torch.equal(net.state_dict()["1.running_mean"], before_net["1.running_mean"])
    assert any(not torch.equal(v, before_net[k]) for k, v in net.state_dict().items() if "weight" in k)
    assert out.logs["lambda_u"] == pytest.approx(m.lambda_u_at(step.progress, 10))


# --------------------------------------------------------------------------------- GSS-SSL's pools
class _FixedInfer:
    """A training set whose inference pass returns fixed logits per network (the pool update's input)."""

    def __init__(self, logits_by_net):
        self.logits = logits_by_net

    def infer(self, net, *, indices=None):
        out = self.logits[id(net)]
        return out if indices is None else out[indices]


def test_gss_ssl_pool_update_uses_the_peer_and_per_set_lambdas():
    m = make(GSSSemiSupervised, n=3, k=3, labels=torch.tensor([0, 1, 2]))
    probs = {0: torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]),     # net 0
             1: torch.tensor([[0.2, 0.6, 0.2], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])}    # net 1
    stream = _FixedInfer({id(m.nets[i]): probs[i].log() for i in range(2)})
    # net 0 trains on net 1's division: samples 0, 1 labelled (w > 0.5), sample 2 unlabelled
    m.prob[1] = torch.tensor([0.9, 0.6, 0.1])
    m.prob[0] = torch.tensor([0.1, 0.9, 0.9])        # net 1: sample 0 unlabelled, 1, 2 labelled
    m.member.fill_(True)
    m.trains_on.fill_(True)
    m.divided.fill_(True)
    ctx = SimpleNamespace(epoch=5, epochs=20, infer=lambda net, idx=None: stream.infer(net, indices=idx))
    m.on_epoch_end(ctx)
    t, u = 0.25, 1 - 0.25
    # pool 0 <- net 1's predictions: sample 0 (labelled, l1 .1, l2 0): p_noisy .2, pred 1
    # sample 1 (labelled): p_noisy .25, pred 0; sample 2 (unlabelled, l1 .2, l2 .5): p_noisy .6, pred 2
    want0 = torch.tensor([[1 + 0.2 * u, 0.2 * 0.1 * t, 0],
                          [0.25 * 0.1 * t, 1 + 0.25 * u, 0],
                          [0.5 * t / 3, 0.5 * t / 3, 1 + 0.6 * u + 0.6 * 0.2 * t + 0.5 * t / 3]])
    torch.testing.assert_close(m.pools[0].pool, want0)
    # pool 1 <- net 0's predictions: sample 0 unlabelled (p_noisy .7, pred 0), samples 1, 2 labelled
    want1 = torch.tensor([[1 + 0.7 * u + 0.7 * 0.2 * t + 0.5 * t / 3, 0.5 * t / 3, 0.5 * t / 3],
                          [0, 1 + 0.8 * u + 0.8 * 0.1 * t, 0],
                          [0, 0, 1 + 0.8 * u + 0.8 * 0.1 * t]])
    torch.testing.assert_close(m.pools[1].pool, want1)


def test_gss_ssl_targets_take_the_drawn_labels():
    m = make(GSSSemiSupervised, n=4, k=3, labels=torch.tensor([0, 0, 0, 0]), unlabeled_target="drawn_mix",
             drawn_weight=0.5, labeled_entry="drawn", labeled_weight="gmm")   # gmm: a drawn label keeps the noisy label's w
    m.pools[0].pool.copy_(torch.tensor([[0.0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]))   # draws are certain
    lab = SimpleNamespace(idx=torch.tensor([0, 1]), y=torch.tensor([0, 0]))
    p_bar = torch.full((2, 3), 1 / 3)
    w = torch.tensor([0.5, 0.5])
    want = S.co_refine(torch.tensor([[0.0, 1, 0], [0, 0, 1]]), w, p_bar, 0.5)
    torch.testing.assert_close(m.labeled_targets(0, lab, w, p_bar), want)
    assert float(m._switched) == 1.0
    unl = SimpleNamespace(idx=torch.tensor([2, 3]))
    guess = torch.tensor([[0.6, 0.2, 0.2], [0.6, 0.2, 0.2]])
    want_u = S.sharpen(0.5 * torch.tensor([[0.0, 1, 0], [0, 0, 1]]) + 0.5 * guess, 0.5)
    torch.testing.assert_close(m.unlabeled_targets(0, unl, guess), want_u)
    m.unlabeled_target = "guess"
    torch.testing.assert_close(m.unlabeled_targets(0, unl, guess), S.sharpen(guess, 0.5))
    m.labeled_entry = "noisy"
    torch.testing.assert_close(m.labeled_targets(0, lab, w, p_bar),
                               S.co_refine(F.one_hot(lab.y, 3).float(), w, p_bar, 0.5))


def test_gss_ssl_drawn_label_takes_w_only_when_it_is_the_noisy_label():
    """labeled_weight=matched (default): w (the probability that the NOISY label is clean) weights a drawn
    label only when it is the noisy label; any other drawn label is weighted by its pool probability."""
    m = make(GSSSemiSupervised, n=3, k=3, labels=torch.tensor([0, 0, 1]), labeled_entry="drawn")
    assert m.labeled_weight == "matched"
    m.pools[0].pool.copy_(torch.tensor([[1.0, 3, 0], [0, 0, 2], [0, 4, 0]]))
    lab = SimpleNamespace(idx=torch.tensor([0, 1, 2]), y=torch.tensor([0, 0, 1]))
    w = torch.tensor([0.9, 0.8, 0.7])
    p_bar = torch.full((3, 3), 1 / 3)
    draws = []
    for _ in range(40):   # sample 0 draws 0 (w = 0.9) or 1 (pool prob 0.75); 1 always 2 (1.0); 2 always 1 (w)
        state = m.generator.get_state()
        y = m.pools[0].sample(lab.idx, m.generator)
        m.generator.set_state(state)
        got = m.labeled_targets(0, lab, w, p_bar)
        want_w = torch.tensor([0.9 if y[0] == 0 else 0.75, 1.0, 0.7])
        torch.testing.assert_close(got, S.co_refine(F.one_hot(y, 3).float(), want_w, p_bar, 0.5))
        draws.append(int(y[0]))
    assert {0, 1} <= set(draws)
    torch.testing.assert_close(m.pools[0].probs(torch.tensor([0, 1])),
                               torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]))


# ------------------------------------------------------------------------------------ real runs
@pytest.mark.parametrize("method, extra", [("dividemix", ["method.params.loss_history=5"]), ("gss_ssl", [])])
def test_state_survives_kill_and_resume_bit_for_bit(tmp_path, method, extra):
    common = [f"method={method}", "dataset=digits", "noise=sym0.4", "train.epochs=5", *extra]
    full = run(tmp_path, *common, name="full")
    part = run(tmp_path, *common, "interrupt_after=3", name="resumed")
    assert part["status"] == "interrupted"
    (ckpt,) = list((tmp_path / "ckpt").rglob("*.pt"))
    state = load_checkpoint(ckpt)["method"]   # checksum-verified (nlbench.trainer)
    assert state["divided"] and state["prob"].shape == (2, 1347) and 0 < state["prob"].mean() < 1
    if method == "dividemix":
        assert int(state["hist_count"]) == 2 and state["loss_hist"][:, 2:].abs().sum() == 0
    else:
        assert (state["pools.0.pool"] > 0).sum() > 1347 and not torch.equal(state["pools.0.pool"],
                                                                             state["pools.1.pool"])
    resumed = run(tmp_path, *common, name="resumed")
    assert resumed["status"] == "completed"
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert json.dumps(strip(resumed["history"])) == json.dumps(strip(full["history"]))


def test_dividemix_end_to_end_selects_clean_samples(tmp_path):
    """The post-warm-up SSL path through the real CLI stack: at E = 10 warm-up is 1 epoch, the ramp 0.53."""
    rec = run(tmp_path, "method=dividemix", "dataset=digits", "noise=sym0.6", "train.epochs=10", "seed=2")
    hist = rec["history"]
    assert "sel_precision" not in hist[0] and hist[0]["ce"] > 0             # warm-up: CE, no division
    assert all(h["sel_precision"] > 0.85 for h in hist[4:])                 # the GMM finds clean samples
    clean_share = 1 - rec["noise"]["actual_rate"]
    assert abs(hist[-1]["labeled1"] - clean_share) < 0.15 and hist[-1]["lambda_u"] == 25
    assert rec["final"]["acc_last"] > 80


def test_gss_ssl_accepts_the_parameters_of_its_parent_and_rejects_typos():
    from nlbench.spec import check_method_params

    check_method_params("gss_ssl", {"lambda_u": 0, "p_threshold": 0.6, "unlabeled_target": "guess", "optim": None})
    with pytest.raises(ConfigError, match="'lambda_uu'.*valid parameters: lambda1_labeled.*lambda_u"):
        check_method_params("gss_ssl", {"lambda_uu": 0})
