"""Diagnostics computed outside the methods: exact values on hand-made examples."""
import math

import pytest
import torch

from nlbench.metrics import belief_stats, confidence_stats, selection_stats, topk_correct


def test_topk_correct():
    p = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    y = torch.tensor([1, 2, 1])
    assert topk_correct(p, y, 1).item() == 1
    assert topk_correct(p, y, 2).item() == 3
    assert topk_correct(p, y, 5).item() == 3   # k capped at K


def test_selection_precision_recall():
    sel = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    clean = torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    s = selection_stats(sel, clean)
    assert s == pytest.approx({"sel_frac": 0.6, "sel_precision": 2 / 3, "sel_recall": 2 / 3})


def test_belief_stats_split_clean_and_mislabeled():
    beliefs = torch.tensor([[3.0, 1.0], [1.0, 1.0], [0.0, 2.0]])   # rows normalise to .75/.25, .5/.5, 0/1
    true = torch.tensor([0, 1, 1])
    is_clean = torch.tensor([True, False, True])
    s = belief_stats(beliefs, true, is_clean)
    h75 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert s["belief_true_clean"] == 1.0
    assert s["belief_true_noisy"] == 0.0          # argmax of a tie is class 0, true is 1
    assert s["belief_ptrue_clean"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["belief_ptrue_noisy"] == pytest.approx(0.5)
    assert s["belief_entropy_clean"] == pytest.approx(h75 / 2, abs=1e-6)
    assert s["belief_entropy_noisy"] == pytest.approx(math.log(2))


def test_confidence_stats():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    noisy = torch.tensor([0, 0, 0, 1])
    true = torch.tensor([0, 0, 1, 0])            # samples 2 and 3 are mislabeled
    s = confidence_stats(probs, noisy, true)
    assert s["conf_clean"] == pytest.approx((0.9 + 0.4) / 2)
    assert s["conf_noisy"] == pytest.approx((0.2 + 0.3) / 2)
    assert s["fit_true_clean"] == 0.5 and s["fit_true_noisy"] == 1.0 and s["memorized"] == 0.0
