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
    from nlbench.runner import build_spec
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
