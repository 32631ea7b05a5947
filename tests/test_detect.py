"""The reference detectors (nlbench/detect.py): cleanlab's confident learning and the CE loss on
out-of-sample probabilities from K-fold cross-validated CE, scored against the truth."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cleanlab")


def test_kfold_is_stratified_seeded_and_covers_every_sample():
    from nlbench.detect import kfold

    labels = np.repeat(np.arange(3), [10, 7, 5])
    f = kfold(labels, 3, seed=0)
    assert set(f) == {0, 1, 2} and len(f) == 22
    for c in range(3):   # each class dealt round-robin: fold sizes differ by at most one
        counts = np.bincount(f[labels == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert (kfold(labels, 3, seed=0) == f).all() and not (kfold(labels, 3, seed=1) == f).all()


def test_detect_on_digits_finds_the_flipped_labels(tmp_path):
    from nlbench.config import compose
    from nlbench.detect import detect
    from nlbench.spec import build_spec
    from nlbench.samples import read_samples, samples_path

    cfg = compose(["method=ce", "dataset=digits", "noise=sym0.4", "device=cpu", "train.epochs=8", "progress=false",
                   f"results_dir={tmp_path}"])
    rec = detect(build_spec(cfg), folds=2, log=lambda s: None)
    fin = rec["final"]
    assert rec["method"] == "cleanlab_cv" and rec["status"] == "completed"
    # an 8-epoch MLP on half the digits separates the flipped labels well out of sample
    assert fin["det_auroc"] > 0.9 and fin["det_precision"] > 0.7 and fin["det_recall"] > 0.7
    assert fin["det_loss_auroc"] > 0.9
    assert abs(fin["noise_rate_est"] - fin["noise_rate_true"]) < 0.1
    assert fin["noise_rate_true"] == pytest.approx(rec["noise"]["actual_rate"])
    t = read_samples(samples_path(rec["_path"]))[8]
    assert (t["is_noisy"] == (t["given"] != t["true"])).all()
    again = detect(build_spec(cfg), folds=2, log=lambda s: None)           # a finished record is skipped
    assert again["final"] == fin


def test_detect_command_line(tmp_path):
    from conftest import make_results, read_json, run_cli

    res = make_results(tmp_path)
    r = run_cli(["detect", "dataset=digits", "noise=sym0.4", "device=cpu", "train.epochs=2", "progress=false",
                 "folds=2"], res)
    assert r.rc == 0, r.err
    (path,) = res.records()
    assert path.parent.name == "cleanlab_cv" and read_json(path)["final"]["folds"] == 2
    r = run_cli(["detect", "dataset=digits", "folds=1"], res)
    r.assert_bad_input(["folds=1", ">= 2"])
    r = run_cli(["detect", "dataset=digits", "stop=best"], res)
    r.assert_bad_input(["stop='best'", "last, heldout"])


def test_heldout_stop_takes_each_fold_at_its_best_noisy_heldout_epoch(tmp_path):
    """stop=heldout (the default) keeps, per fold, the probabilities of the first epoch with the highest
    accuracy on the held-out fold's noisy labels; the record says which epoch and keeps every fold's curve.
    stop=last is a record of its own, and its probabilities are those of the last epoch."""
    from nlbench.config import compose
    from nlbench.detect import detect
    from nlbench.spec import build_spec
    from nlbench.samples import read_samples, samples_path

    cfg = compose(["method=ce", "dataset=digits", "noise=sym0.6", "device=cpu", "train.epochs=12",
                   "progress=false", f"results_dir={tmp_path}"])
    held = detect(build_spec(cfg), folds=2, log=lambda s: None)
    last = detect(build_spec(cfg), folds=2, stop="last", log=lambda s: None)
    assert held["_path"] != last["_path"] and held["final"]["stop"] == "heldout" and last["final"]["stop"] == "last"
    assert last["final"]["stop_epochs"] == [12, 12] and last["history"] == []
    for k, at in enumerate(held["final"]["stop_epochs"]):
        curve = [(h["epoch"], h["heldout_noisy_top1"]) for h in held["history"] if h["fold"] == k]
        assert [e for e, _ in curve] == list(range(1, 13))          # digits evaluates every epoch
        best = max(a for _, a in curve)
        assert at == next(e for e, a in curve if a == best)
    # the kept probabilities reproduce the chosen epoch's held-out accuracy on the noisy labels
    from nlbench.detect import kfold

    t = read_samples(samples_path(held["_path"]))[12]
    fold = kfold(t["given"], 2, 0)
    for k in range(2):
        acc = 100.0 * (t["pred"][fold == k] == t["given"][fold == k]).mean()
        want = max(h["heldout_noisy_top1"] for h in held["history"] if h["fold"] == k)
        assert acc == pytest.approx(want, abs=1e-4)
