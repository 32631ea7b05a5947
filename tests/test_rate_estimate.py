"""forget_rate: estimate (Co-teaching, JoCoR): the noise rate estimated from the data after a warm-up,
never from the true labels; recorded beside the truth."""
from __future__ import annotations

import json

import pytest
import torch

from methods.small_loss import ForgetSchedule, estimate_noise_rate
from nlbench.registry import ConfigError


def _fitted_probs(n=3000, k=10, rate=0.3, seed=0):
    """Softmaxes of a network that learned the true classes (0.7 on the true class) and noisy labels
    where a share ``rate`` of the samples carries another class."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, k, (n,), generator=g)
    flip = torch.rand(n, generator=g) < rate
    noisy = torch.where(flip, (true + torch.randint(1, k, (n,), generator=g)) % k, true)
    p = torch.full((n, k), 0.3 / (k - 1))
    p[torch.arange(n), true] = 0.7
    p = p * torch.exp(0.2 * torch.randn(n, k, generator=g))   # some spread per sample
    return p / p.sum(1, keepdim=True), noisy, float(flip.float().mean())


@pytest.mark.parametrize("estimator", ["gmm", "cleanlab"])
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_estimators_recover_the_rate_of_a_network_that_fits_the_true_classes(estimator, rate):
    if estimator == "cleanlab":
        pytest.importorskip("cleanlab")
    p, noisy, truth = _fitted_probs(rate=rate)
    est = estimate_noise_rate([p, p], noisy, estimator)
    assert abs(est - truth) < 0.03, (est, truth)


def test_schedule_waits_for_the_estimate_then_ramps_as_the_official_linspace():
    s = ForgetSchedule("estimate", num_gradual=10, estimate_epoch=3)
    assert [s(e) for e in range(3)] == [0.0, 0.0, 0.0] and not s.needs_estimate(2) and s.needs_estimate(3)
    s.set_estimate(0.36)
    assert not s.needs_estimate(3) and s.logs() == {"forget_rate_est": pytest.approx(0.36)}
    assert s(3) == pytest.approx(0.36 * 3 / 9) and s(9) == pytest.approx(0.36) and s(50) == pytest.approx(0.36)
    fixed = ForgetSchedule(0.36, num_gradual=10)
    assert [fixed(e) for e in range(12)] == pytest.approx([0.36 * e / 9 for e in range(10)] + [0.36, 0.36])
    assert fixed.logs() == {} and not fixed.needs_estimate(50)
    # the estimate is state: it survives a state_dict round trip
    t = ForgetSchedule("estimate", estimate_epoch=3)
    t.load_state_dict(s.state_dict())
    assert t(50) == pytest.approx(0.36) and not t.needs_estimate(5)


@pytest.mark.parametrize("kw, match", [({"estimator": "oracle"}, "estimator 'oracle'.*gmm, cleanlab"),
                                       ({"estimate_epoch": 0}, "estimate_epoch"),
                                       ({"forget_rate": "guess"}, "forget_rate")])
def test_bad_estimate_options(kw, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        ForgetSchedule(**{"forget_rate": "estimate", **kw})


@pytest.mark.parametrize("method", ["coteaching", "jocor"])
def test_a_run_estimates_its_forget_rate_and_records_it_beside_the_truth(tmp_path, method):
    from conftest import SMOKE, make_results, read_json, run_cli

    res = make_results(tmp_path)
    args = [a for a in SMOKE if not a.startswith("method=")]
    r = run_cli(["run", *args, f"method={method}", "dataset=digits", "scale=paper", "noise=sym0.4",
                 "train.epochs=6", "method.params.forget_rate=estimate", "method.params.estimate_epoch=4"], res)
    assert r.rc == 0, r.err
    rec = read_json(res.records()[0])
    hist = rec["history"]
    assert all("forget_rate_est" not in h and h["forget_rate"] == 0 for h in hist[:4])
    est = hist[4]["forget_rate_est"]
    assert hist[5]["forget_rate_est"] == est                 # estimated once
    truth = rec["noise"]["actual_rate"]
    assert abs(est - truth) < 0.15, (est, truth)               # 4 epochs of an MLP on digits
    assert hist[4]["forget_rate"] == pytest.approx(est * 4 / 9)
    assert json.dumps(rec["effective"]["method_params"]["forget_rate"]) == '"estimate"'
