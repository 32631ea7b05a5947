"""The contract doors of multi-network methods: per-(dataset, noise) hyperparameters, forget_rate auto,
a method's own optimiser plan and parameter groups, per-network evaluation with a headline, and the
mode of a peer network used under no_grad."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nlbench.config import compose
from nlbench.data import load_dataset
from nlbench.method import Batch, Method, OptimPlan, StepOutput
from nlbench.noise import NoiseContext, apply_noise, expected_rate
from nlbench.registry import ConfigError
from nlbench.runner import execute
from nlbench.spec import _check_params_by_noise, build_spec, resolve_method_params
from nlbench.stream import DeviceStream
from nlbench.trainer import TrainConfig, Trainer, load_checkpoint


def spec(*overrides):
    return build_spec(compose(["progress=false", *overrides]))


# ------------------------------------------------------------------------------ params_by_noise
def test_resolve_method_params_precedence():
    mcfg = {"params": {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "optim": {"lr": 0.1, "decay_start": 0.4}},
            "params_by_dataset": {"cifar10": {"b": 2, "c": 2, "d": 2, "e": 2, "optim": {"decay_start": 0.5}}},
            "params_by_noise": {"sym0.8": {"c": 3, "d": 3, "e": 3}, "cifar10/sym0.8": {"d": 4, "e": 4}},
            "params_cli": {"e": 5}}
    assert resolve_method_params(mcfg, "cifar10", "sym0.8") == \
        {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "optim": {"lr": 0.1, "decay_start": 0.5}}
    # the dataset-qualified key applies to its dataset only; the plain noise key to every dataset
    assert resolve_method_params(mcfg, "cifar100", "sym0.8") == \
        {"a": 1, "b": 1, "c": 3, "d": 3, "e": 5, "optim": {"lr": 0.1, "decay_start": 0.4}}
    assert resolve_method_params(mcfg, "cifar10", "sym0.4")["d"] == 2


def test_rate_levels_and_families_sit_between_dataset_and_named_noise():
    mcfg = {"params": {"a": 1, "b": 1, "c": 1, "d": 1},
            "params_by_dataset": {"cifar10": {"a": 2, "b": 2, "c": 2, "d": 2}},
            "params_by_rate": {"cifar10": {0.2: {"b": 3, "c": 3, "d": 3}, 0.5: {"b": 4, "c": 4, "d": 4}}},
            "params_by_noise": {"asym": {"c": 5, "d": 5}, "cifar10/asym": {"d": 6}, "asym0.4": {"d": 7}}}
    noise = lambda prefix, rate: {"name": f"{prefix}{rate:g}", "prefix": prefix, "rate": rate}
    # the level nearest the rate; a tie (0.35) goes to the higher level
    assert [resolve_method_params(mcfg, "cifar10", noise("sym", r))["b"] for r in (0.0, 0.3, 0.35, 0.4, 0.9)] \
        == [3, 3, 4, 4, 4]
    # a family key covers every rate of it, above the level, below the named noise
    assert resolve_method_params(mcfg, "cifar10", noise("asym", 0.3)) == {"a": 2, "b": 3, "c": 5, "d": 6}
    assert resolve_method_params(mcfg, "cifar10", noise("asym", 0.4))["d"] == 7
    assert resolve_method_params(mcfg, "cifar100", noise("asym", 0.3)) == {"a": 1, "b": 1, "c": 5, "d": 5}
    # a name alone: a rate family's name gives its rate, another name its conf/noise file's rate
    assert resolve_method_params(mcfg, "cifar10", "sym0.45")["b"] == 4
    assert resolve_method_params(mcfg, "cifar10", "c10n_aggre")["b"] == 3       # 9.0% -> the 20% level
    assert resolve_method_params(mcfg, "cifar10", "c10n_worse")["b"] == 4       # 40.2% -> the 50% level


@pytest.mark.parametrize("method, overrides, key, want", [
    # DivideMix's official table at a rate given on the command line: the nearest listed level
    ("dividemix", ["dataset=cifar10", "noise=sym", "noise.rate=0.3"], "lambda_u", 0),
    ("dividemix", ["dataset=cifar10", "noise=sym", "noise.rate=0.35"], "lambda_u", 25),
    ("dividemix", ["dataset=cifar100", "noise=sym", "noise.rate=0.3"], "lambda_u", 25),
    ("dividemix", ["dataset=cifar10", "noise=sym", "noise.rate=0.88"], "p_threshold", 0.6),
    ("dividemix", ["dataset=cifar10", "noise=idn", "noise.rate=0.25"], "lambda_u", 0),
    ("gss_ssl", ["dataset=cifar10", "noise=symo", "noise.rate=0.3"], "lambda_u", 0),
    # class-dependent flips at any rate: DivideMix's asym entry, ELR+'s asym config, JoCoR's 0.9
    ("dividemix", ["dataset=cifar10", "noise=asym", "noise.rate=0.35"], "conf_penalty", True),
    ("dividemix", ["dataset=cifar10", "noise=asym", "noise.rate=0.35"], "lambda_u", 0),
    ("elr_plus", ["dataset=cifar10", "noise=asym", "noise.rate=0.35"], "lam", 1.0),
    ("elr_plus", ["dataset=cifar10", "noise=sym", "noise.rate=0.35"], "lam", 3.0),
    ("jocor", ["dataset=cifar10", "noise=sym", "noise.rate=0.7"], "co_lambda", 0.65),
    ("jocor", ["dataset=cifar10", "noise=sym", "noise.rate=0.6"], "co_lambda", 0.9),
    ("jocor", ["dataset=cifar10", "noise=asym", "noise.rate=0.7"], "co_lambda", 0.9),
])
def test_a_command_line_rate_takes_its_nearest_official_setting(method, overrides, key, want):
    assert spec(f"method={method}", *overrides).method_params[key] == want


def test_jocor_lambda_per_dataset_and_noise_and_command_line_wins():
    lam = lambda *o: spec("method=jocor", *o).method_params["co_lambda"]
    assert lam("dataset=cifar10", "noise=sym0.4") == 0.9
    assert lam("dataset=cifar10", "noise=sym0.8") == 0.65
    assert lam("dataset=cifar100", "noise=sym0.8") == 0.85
    assert lam("dataset=cifar10", "noise=sym0.8", "method.params.co_lambda=0.5") == 0.5
    assert lam("dataset=cifar10", "noise=sym0.8", "+method.params.co_lambda=0.4") == 0.4
    s = spec("method=jocor", "dataset=cifar100", "noise=sym0.4")
    assert s.method_params["optim"]["decay_start"] == 0.5 and s.method_params["optim"]["lr"] == 0.001
    # a nested key on the command line merges into the yaml's mapping
    s = spec("method=coteaching", "method.params.optim.lr=0.002")
    assert s.method_params["optim"]["lr"] == 0.002 and s.method_params["optim"]["beta1_decayed"] == 0.1


def test_params_by_noise_key_must_name_a_noise():
    _check_params_by_noise("m", {"params_by_noise": {"sym0.8": {}, "cifar10/asym0.4": {}, "cifar10/asym": {}},
                                 "params_by_rate": {"cifar10": {0.2: {}, 1: {}}}})
    for bad in ("sym0.33", "cifar11/sym0.8", "asymm"):
        with pytest.raises(ConfigError, match=f"params_by_noise key '{bad}'.*valid noises"):
            _check_params_by_noise("m", {"params_by_noise": {bad: {}}})
    for by_rate, msg in [({"cifar11": {0.2: {}}}, "params_by_rate key 'cifar11' names no dataset.*valid datasets"),
                         ({"cifar10": {1.5: {}}}, "level 1.5 is not a noise rate"),
                         ({"cifar10": {"high": {}}}, "level 'high' is not a noise rate"),
                         ({"cifar10": {0.2: 3}}, r"params_by_rate.cifar10.0.2 must be a mapping"),
                         ({"cifar10": {}}, "must map noise levels to parameters")]:
        with pytest.raises(ConfigError, match=msg):
            _check_params_by_noise("m", {"params_by_rate": by_rate})


# ------------------------------------------------------------------------------ expected rate
@pytest.mark.parametrize("kind, rate, K, dataset, expect", [
    ("clean", 0.0, 10, "cifar10", 0.0),
    ("sym", 0.4, 10, "cifar10", 0.36),
    ("sym", 0.8, 100, "cifar100", 0.792),
    ("sym_other", 0.4, 10, "cifar10", 0.4),
    ("pairflip", 0.45, 10, "cifar10", 0.45),
    ("asym", 0.4, 10, "cifar10", 0.2),          # 5 of the 10 classes flip
    ("asym", 0.4, 100, "cifar100", 0.4),
    ("asym_super", 0.4, 100, "cifar100", 0.4),
])
def test_expected_rate_formulas(kind, rate, K, dataset, expect):
    assert expected_rate(kind, rate, num_classes=K, dataset=dataset) == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize("kind, rate, K, dataset", [
    ("sym", 0.4, 10, "cifar10"), ("sym", 0.8, 10, "cifar10"), ("sym_other", 0.6, 10, "cifar10"),
    ("asym", 0.4, 10, "cifar10"), ("asym", 0.3, 100, "cifar100"), ("pairflip", 0.45, 10, "cifar10")])
def test_expected_rate_matches_the_realised_rate(kind, rate, K, dataset):
    clean = np.repeat(np.arange(K), 20000 // K)
    res = apply_noise(kind, name="x", clean=clean, rate=rate, seed=0, ctx=NoiseContext(dataset=dataset, num_classes=K))
    assert res.actual_rate == pytest.approx(expected_rate(kind, rate, num_classes=K, dataset=dataset), abs=0.01)


def test_expected_rate_of_human_and_real_noise_comes_from_the_yaml():
    assert expected_rate("human", 0.4021, num_classes=10, dataset="cifar10", given=0.4021) == 0.4021
    assert expected_rate("real", 0.0, num_classes=14, dataset="clothing1m", given={"clothing1m": 0.385}) == 0.385
    with pytest.raises(ConfigError, match="'real'.*'webvision' is unknown.*forget_rate"):
        expected_rate("real", 0.0, num_classes=50, dataset="webvision", given={"clothing1m": 0.385})
    with pytest.raises(ConfigError, match="unknown"):
        expected_rate("human", 0.4, num_classes=10, dataset="cifar10")
    # through the configs: CIFAR-10N's published rate; WebVision fails before any run starts
    assert spec("method=ce", "dataset=cifar10", "noise=c10n_worse").noise["expected_rate"] == 0.4021
    with pytest.raises(ConfigError, match="webvision.*forget rate explicitly"):
        spec("method=coteaching", "dataset=webvision", "noise=real")
    s = spec("method=coteaching", "dataset=webvision", "noise=real", "method.params.forget_rate=0.3")
    assert s.method_params["forget_rate"] == 0.3


def test_record_shows_the_resolved_forget_rate(tmp_path):
    rec = execute(spec("method=jocor", "scale=smoke", "train.epochs=1", f"results_dir={tmp_path}/r",
                       f"checkpoint_dir={tmp_path}/c"), log=lambda s: None)
    assert rec["config"]["method"]["params"]["forget_rate"] == "auto"
    assert rec["effective"]["method_params"]["forget_rate"] == pytest.approx(0.36)   # sym0.4, 10 classes
    assert rec["effective"]["optim_plan"]["kind"] == "adam"
    h = rec["history"][0]
    for k in ("test_top1_net0", "test_top1_net1", "test_top1_ensemble", "sel_precision", "sel_recall"):
        assert k in h
    assert h["test_top1"] == pytest.approx((h["test_top1_net0"] + h["test_top1_net1"]) / 2)
    assert rec["final"]["headline"] == "mean_nets"


# ------------------------------------------------------------------------------ optimiser plan
def test_official_coteaching_plan_numbers():
    from methods.small_loss import OFFICIAL_PLAN

    plan = OptimPlan.from_dict(OFFICIAL_PLAN)
    E = 200                         # bhanML/Co-teaching main.py: epoch_decay_start 80 of 200
    lr = [plan.lr_at(e, E) for e in range(E)]
    b1 = [plan.betas_at(e, E)[0] for e in range(E)]
    assert lr[:80] == [0.001] * 80 and b1[:80] == [0.9] * 80
    assert b1[80:] == [0.1] * 120
    assert lr[80:] == pytest.approx([0.001 * (200 - e) / 120 for e in range(80, 200)], rel=1e-12)
    assert lr[199] == pytest.approx(0.001 / 120)
    c100 = OptimPlan.from_dict({**OFFICIAL_PLAN, "decay_start": 0.5})   # CIFAR-100: 100 of 200
    assert c100.decay_epoch(200) == 100 and c100.betas_at(99, 200)[0] == 0.9 and c100.betas_at(100, 200)[0] == 0.1
    assert plan.decay_epoch(30) == 12                                     # scale=cpu: scales with E
    with pytest.raises(ConfigError, match="valid keys"):
        OptimPlan.from_dict({"lrate": 0.1})
    with pytest.raises(ConfigError, match="valid choices: adam, sgd"):
        OptimPlan(kind="lamb")


class TwoNetCE(Method):
    """Two networks on plain CE; ``groups`` says how their parameters group into optimisers."""
    num_networks = 2

    def __init__(self, *, joint=False, **base):
        super().__init__(**base)
        self.joint = joint

    def param_groups(self):
        return [list(self.nets.parameters())] if self.joint else super().param_groups()

    def loss(self, batch, ctx):
        return StepOutput(sum(F.cross_entropy(n(batch.x), batch.y) for n in self.nets))


def _digits_trainer(method_cls, epochs=5, checkpoint=None, interrupt_after=None, headline="ensemble", **kw):
    d = load_dataset("digits", data_dir=".")
    y = torch.from_numpy(d.train_y)
    stream = DeviceStream(d.train_x, y, mean=d.mean, std=d.std, batch_size=128)
    test = DeviceStream(d.test_x, torch.from_numpy(d.test_y), mean=d.mean, std=d.std)
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
            for _ in range(method_cls.num_networks)]
    m = method_cls(nets=nets, num_classes=10, noisy_labels=y, generator=torch.Generator().manual_seed(0), **kw)
    tr = Trainer(m, stream, {"test": test.eval_batches}, TrainConfig(epochs=epochs, batch_size=128, lr=0.05),
                 device=torch.device("cpu"), data_seed=0, clean_labels=y, checkpoint=checkpoint, progress=False,
                 interrupt_after=interrupt_after, log=lambda s: None, headline=headline)
    return m, tr, test


def test_trainer_applies_the_plan_per_epoch_and_checkpoints_it(tmp_path):
    plan = {"kind": "adam", "lr": 0.003, "decay_start": 0.4, "beta1_decayed": 0.1}
    m, tr, _ = _digits_trainer(TwoNetCE, optim=plan, checkpoint=tmp_path / "c.pt", interrupt_after=3)
    assert [type(o) for o in tr.optimizers] == [torch.optim.Adam] * 2          # one per network
    res = tr.fit()
    state = load_checkpoint(tmp_path / "c.pt")   # checksum-verified (nlbench.trainer)
    assert state["optim_plan"] == OptimPlan.from_dict(plan).to_dict()
    _, tr2, _ = _digits_trainer(TwoNetCE, optim=plan, checkpoint=tmp_path / "c.pt")
    hist = tr2.fit().history
    # E = 5, decay from round(0.4 * 5) = 2: lr 0.003, 0.003, then 0.003 * (5 - e) / 3
    assert [h["lr"] for h in hist] == pytest.approx([0.003, 0.003, 0.003, 0.002, 0.001], rel=1e-12)
    assert [h["beta1"] for h in hist] == [0.9, 0.9, 0.1, 0.1, 0.1]
    assert all(g["betas"] == (0.1, 0.999) and g["lr"] == pytest.approx(0.001) for o in tr2.optimizers
               for g in o.param_groups)
    assert [h["lr"] for h in res.history] == [h["lr"] for h in hist[:3]]
    # no plan: the protocol's SGD and schedule
    _, tr3, _ = _digits_trainer(TwoNetCE, epochs=2)
    assert [type(o) for o in tr3.optimizers] == [torch.optim.SGD] * 2 and "beta1" not in tr3.schedule(0)


def test_one_optimiser_over_both_networks():
    m, tr, _ = _digits_trainer(TwoNetCE, joint=True, epochs=1)
    (opt,) = tr.optimizers
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in m.nets.parameters()}


# ------------------------------------------------------------------------------ per-network evaluation
def test_per_network_accuracies_and_the_headline():
    m, tr, test = _digits_trainer(TwoNetCE, epochs=2, headline="net1")
    tr.fit()
    out = tr.evaluate()
    assert m.training                                    # evaluation restores train mode
    x, y = test.normalise(test.x), test.y
    m.eval()
    with torch.no_grad():
        acc = [100.0 * (m.nets[i](x).argmax(1) == y).float().mean().item() for i in range(2)]
        ens = 100.0 * (m.predict(x).argmax(1) == y).float().mean().item()
    assert out["test_top1_net0"] == pytest.approx(acc[0]) and out["test_top1_net1"] == pytest.approx(acc[1])
    assert out["test_top1_ensemble"] == pytest.approx(ens)
    assert out["test_top1_mean_nets"] == pytest.approx(sum(acc) / 2)
    assert out["test_top1"] == out["test_top1_net1"] and out["test_top5"] == out["test_top5_net1"]
    with pytest.raises(ConfigError, match="headline 'net2'.*ensemble, mean_nets, net0, net1"):
        _digits_trainer(TwoNetCE, epochs=1, headline="net2")


# ------------------------------------------------------------------------------ peer mode
class PeerUser(Method):
    """Network 0 learns from network 1's predictions under no_grad, with network 1 in ``peer_train`` mode."""
    num_networks = 2

    def __init__(self, *, peer_train: bool, **base):
        super().__init__(**base)
        self.peer_train = peer_train
        self.seen_modes: list[bool] = []

    def loss(self, batch, ctx):
        peer = self.nets[1]
        peer.train(not self.peer_train)         # whatever state an earlier pass left it in
        with torch.no_grad(), self.mode(peer, train=self.peer_train):
            self.seen_modes.append(peer.training)
            target = F.softmax(peer(batch.x), 1)
        assert peer.training is (not self.peer_train)   # restored
        logp = F.log_softmax(self.nets[0](batch.x), 1)
        return StepOutput(-(target * logp).sum(1).mean() + F.cross_entropy(self.nets[1](batch.x), batch.y))


@pytest.mark.parametrize("peer_train", [False, True])
def test_peer_under_no_grad_runs_in_the_mode_the_method_says(peer_train):
    m, tr, _ = _digits_trainer(PeerUser, epochs=2, peer_train=peer_train)
    tr.fit()
    assert m.seen_modes and set(m.seen_modes) == {peer_train}
    # the mode decides the numbers: eval uses running statistics, train the batch's
    net = m.nets[1]
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        net.eval()
        ref_eval = net(x)
        net.train()
        with Method.mode(net, train=False):
            out_eval = net(x)
        rm = net[2].running_mean.clone()
        with Method.mode(net, train=True):
            out_train = net(x)
    assert torch.equal(out_eval, ref_eval) and not torch.allclose(out_train, ref_eval)
    assert not torch.equal(net[2].running_mean, rm)   # a train-mode pass updates the running statistics
    assert net.training
