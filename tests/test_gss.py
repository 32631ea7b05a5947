"""GSS: the direction pool (Eqns. 5-9) and GSS-SB through the real trainer."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from methods.gss_pool import DirectionPool
from nlbench.config import compose
from nlbench.registry import ConfigError
from nlbench.runner import execute
from nlbench.spec import build_spec
from nlbench.trainer import load_checkpoint


def run(tmp_path, *overrides, name="r"):
    cfg = compose(["progress=false", f"results_dir={tmp_path / name}", f"checkpoint_dir={tmp_path / 'ckpt'}",
                   *overrides])
    return execute(build_spec(cfg), log=lambda s: None)


def test_pool_update_matches_eqns_6_to_9_by_hand():
    noisy = torch.tensor([0, 2])
    pool = DirectionPool(noisy, 3)                      # one-hot start
    probs = torch.tensor([[0.2, 0.7, 0.1],              # sample 0: p_noisy 0.2, pred 1
                          [0.1, 0.3, 0.6]])             # sample 1: p_noisy 0.6, pred 2 (= noisy)
    pool.update(probs, epoch=5, epochs=20, lambda1=2.0, lambda2=1.0)   # e/E = 0.25
    # sample 0: noisy += 0.2*0.75 = 0.15; pred 1 += 0.2*2*0.25 = 0.1; each += 1*0.25/3
    u = 0.25 / 3
    expect = torch.tensor([[1 + 0.15 + u, 0.1 + u, u],
                           [u, u, 1 + 0.6 * 0.75 + 0.6 * 2 * 0.25 + u]])
    torch.testing.assert_close(pool.pool, expect)
    # epoch 0: only the noisy-label term, weighted by p_noisy
    pool2 = DirectionPool(noisy, 3, init="zeros")
    pool2.update(probs, epoch=0, epochs=20, lambda1=2.0, lambda2=1.0)
    torch.testing.assert_close(pool2.pool, torch.tensor([[0.2, 0, 0], [0, 0, 0.6]]))


def test_pool_update_pred_weight_reading():
    """Eqn. 7, second reading: the prediction term is weighted by max(p), not by p_noisy."""
    noisy = torch.tensor([0, 2])
    probs = torch.tensor([[0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    pool = DirectionPool(noisy, 3)
    pool.update(probs, epoch=5, epochs=20, lambda1=2.0, lambda2=1.0, pred_weight="pred")
    u = 0.25 / 3
    # sample 0: pred 1 += max p 0.7 * 2 * 0.25 = 0.35; sample 1: pred = noisy, max p = p_noisy = 0.6
    expect = torch.tensor([[1 + 0.15 + u, 0.35 + u, u],
                           [u, u, 1 + 0.6 * 0.75 + 0.6 * 2 * 0.25 + u]])
    torch.testing.assert_close(pool.pool, expect)
    with pytest.raises(ConfigError, match="pred_weight 'max'.*noisy, pred"):
        pool.update(probs, epoch=1, epochs=2, lambda1=1.0, lambda2=0.0, pred_weight="max")


def test_pool_update_per_sample_lambdas_and_subset():
    noisy = torch.tensor([1, 1, 1])
    pool = DirectionPool(noisy, 2, init="zeros")
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    pool.update(probs, epoch=1, epochs=2, lambda1=torch.tensor([0.0, 2.0]), lambda2=torch.tensor([1.0, 0.0]),
                idx=torch.tensor([0, 2]))
    # sample 0 (idx 0): noisy 1 += 0.5*0.5; pred argmax([.5,.5]) = 0 gets 0; uniform 1*0.5/2 each
    # sample 2: noisy 1 += 0.1*0.5 = 0.05; pred 0 += 0.1*2*0.5 = 0.1; no uniform; sample 1 untouched
    torch.testing.assert_close(pool.pool, torch.tensor([[0.25, 0.5], [0.0, 0.0], [0.1, 0.05]]))


def test_sampling_follows_pool_distribution_chi_square():
    d = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    pool = DirectionPool(torch.tensor([0]), 4)
    pool.pool.copy_(d)
    g = torch.Generator().manual_seed(123)
    draws = pool.sample(torch.zeros(40000, dtype=torch.long), g)
    counts = np.bincount(draws.numpy(), minlength=4)
    expected = (d / d.sum()).numpy()[0] * 40000
    assert chisquare(counts, expected).pvalue > 1e-3
    # and a wrong distribution is rejected by the same test
    assert chisquare(counts, np.full(4, 10000.0)).pvalue < 1e-6


def test_empty_pool_draws_the_noisy_label():
    pool = DirectionPool(torch.tensor([3, 1]), 5, init="zeros")
    g = torch.Generator().manual_seed(0)
    assert pool.sample(torch.tensor([0, 1, 0]), g).tolist() == [3, 1, 3]


def test_bad_pool_options():
    with pytest.raises(ConfigError, match="init"):
        DirectionPool(torch.tensor([0]), 2, init="random")


@pytest.mark.parametrize("base", ["ce", "gce"])
def test_gss_sb_with_zero_lambdas_equals_base_loss_exactly(tmp_path, base):
    common = ["dataset=digits", "noise=sym0.4", "train.epochs=4", "seed=3"]
    ref = run(tmp_path, f"method={base}", *common, name="ref")
    gss = run(tmp_path, "method=gss_sb", "method.params.lambda1=0", "method.params.lambda2=0",
              f"method.params.base_loss={base}", *common, name="gss")
    assert [h["loss"] for h in gss["history"]] == [h["loss"] for h in ref["history"]]
    assert [h["test_top1"] for h in gss["history"]] == [h["test_top1"] for h in ref["history"]]
    assert all(h["switched"] == 0 for h in gss["history"])


def test_gss_sb_switches_labels_and_records_pool_diagnostics(tmp_path):
    rec = run(tmp_path, "method=gss_sb", "dataset=digits", "noise=sym0.6", "train.epochs=10")
    hist = rec["history"]
    assert hist[0]["switched"] == 0          # epoch 0: one-hot pools == noisy labels
    assert hist[-1]["switched"] > 0.1        # later the pools switch labels
    for key in ("belief_true_clean", "belief_true_noisy", "belief_entropy_clean", "belief_entropy_noisy"):
        assert key in hist[-1]
    # the argument of the paper made visible: mislabeled samples' pools spread out more than clean ones
    assert hist[-1]["belief_entropy_noisy"] > hist[-1]["belief_entropy_clean"]
    assert hist[-1]["belief_ptrue_noisy"] > hist[0]["belief_ptrue_noisy"]


def test_gss_sb_pools_survive_checkpoint_and_resume(tmp_path):
    common = ["method=gss_sb", "dataset=digits", "noise=sym0.4", "train.epochs=5"]
    full = run(tmp_path, *common, name="full")
    part = run(tmp_path, *common, "interrupt_after=3", name="resumed")
    assert part["status"] == "interrupted"
    ckpt = list((tmp_path / "ckpt").rglob("*.pt"))
    assert len(ckpt) == 1
    state = load_checkpoint(ckpt[0])   # checksum-verified (nlbench.trainer)
    pool = state["method"]["pool.pool"]
    assert pool.shape[1] == 10 and (pool > 0).sum() > pool.shape[0]   # updated beyond one-hot
    resumed = run(tmp_path, *common, name="resumed")
    assert resumed["status"] == "completed"
    assert json.dumps(resumed["history"], sort_keys=True, default=str).count("epoch") == \
        json.dumps(full["history"], sort_keys=True, default=str).count("epoch")
    for a, b in zip(full["history"], resumed["history"]):
        for k in ("loss", "test_top1", "switched", "belief_true_noisy", "belief_entropy_noisy"):
            assert a[k] == b[k], (k, a["epoch"])
