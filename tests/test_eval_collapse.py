"""Evaluating every k epochs (``train.eval_every``) and the collapse flag of a record."""
from __future__ import annotations

import pytest

from conftest import SMOKE, make_results, read_json, run_cli
from nlbench.metrics import collapse_status
from nlbench.runner import final_metrics

TIMING = ("seconds", "train_seconds")


def _run(tmp_path, *args) -> dict:
    res = make_results(tmp_path)
    r = run_cli(["run", *SMOKE, *args], res)
    assert r.rc == 0, r.err
    (path,) = res.records()
    return read_json(path)


def test_eval_every_changes_no_training_number(tmp_path):
    """Skipping the test evaluation on some epochs must leave the training trajectory bit-identical:
    the same per-epoch losses and, on the evaluated epochs, the same accuracies."""
    every = _run(tmp_path / "a", "train.epochs=5")
    sparse = _run(tmp_path / "b", "train.epochs=5", "train.eval_every=2")
    assert [h["loss"] for h in every["history"]] == [h["loss"] for h in sparse["history"]]
    evaluated = [h["epoch"] for h in sparse["history"] if "test_top1" in h]
    assert evaluated == [2, 4, 5]                       # every 2nd epoch and always the last
    for h_all, h in zip(every["history"], sparse["history"]):
        if "test_top1" in h:
            assert h["test_top1"] == h_all["test_top1"]
    assert sparse["final"]["acc_last"] == every["final"]["acc_last"]
    assert sparse["config_hash"] != every["config_hash"]    # it changes what the record holds
    assert "eval_every" not in every["effective"]["train"] or every["effective"]["train"]["eval_every"] == 1


def test_final_metrics_count_only_evaluated_epochs():
    hist = [{"epoch": e, "loss": 1.0} for e in range(1, 13)]
    for e, acc in ((3, 50.0), (6, 70.0), (9, 60.0), (12, 55.0)):
        hist[e - 1].update({"test_top1": acc, "test_pred_top_share": 0.2})
    fin = final_metrics(hist, "test_top1")
    assert fin["acc_last"] == 55.0 and fin["acc_best"] == 70.0 and fin["best_epoch"] == 6
    assert fin["n_last10"] == 4 and fin["acc_last10"] == pytest.approx((50 + 70 + 60 + 55) / 4)   # epochs 3..12
    assert fin["collapsed"] is False and fin["collapse_reason"] is None


@pytest.mark.parametrize("row, collapsed, reason", [
    ({"test_pred_top_share": 0.95}, True, "one class takes 95% of the test predictions"),
    ({"test_pred_top_share": 0.89}, False, None),
    ({"test_pred_top_share": 0.3, "sel_classes": 1, "sel_size": 812}, True, "labelled set holds 1 class (812"),
    ({"test_pred_top_share": 0.3, "sel_classes": 0, "sel_size": 0}, True, "labelled set holds 0 classes"),
    ({"test_pred_top_share": 0.3, "sel_classes": 2, "sel_size": 40}, False, None),
    ({"loss": 1.0}, None, None),
])
def test_collapse_status(row, collapsed, reason):
    got = collapse_status(row)
    assert got["collapsed"] is collapsed
    if reason is None:
        assert got["collapse_reason"] is None
    else:
        assert reason in got["collapse_reason"]


ONE_CLASS = '''
"""A method whose test predictions are all class 0 (a collapsed network, made on purpose)."""
import torch
import torch.nn.functional as F

from nlbench.method import METHODS, Method, StepOutput


@METHODS.register("one_class")
class OneClass(Method):
    def loss(self, batch, ctx):
        return StepOutput(F.cross_entropy(self.nets[0](batch.x), batch.y))

    def combine(self, logits):
        p = torch.zeros_like(logits[0], dtype=torch.float32)
        p[:, 0] = 1.0
        return p
'''


def test_a_collapsed_run_is_flagged_in_the_record_and_the_summary_line(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "nlbtest_collapse"
    (pkg / "conf" / "method").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "methods.py").write_text(ONE_CLASS)
    (pkg / "conf" / "method" / "one_class.yaml").write_text("name: one_class\nparams: {}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    res = make_results(tmp_path / "out")
    args = [a for a in SMOKE if not a.startswith("method=")]
    r = run_cli(["run", *args, "method=one_class", "train.epochs=1", "method_modules=[nlbtest_collapse.methods]",
                 f"method_conf_dirs=[{pkg / 'conf'}]"], res)
    assert r.rc == 0, r.err
    rec = read_json(res.records()[0])
    assert rec["history"][-1]["test_pred_top_share"] == 1.0
    assert rec["final"]["collapsed"] is True
    assert "one class takes 100% of the test predictions" in rec["final"]["collapse_reason"]
    line = next(ln for ln in (r.out + r.err).splitlines() if ln.startswith("completed:"))
    assert "COLLAPSED (one class takes 100% of the test predictions)" in line
    # and an ordinary run is not flagged
    ok = _run(tmp_path / "ce", "train.epochs=2")
    assert ok["final"]["collapsed"] is False and ok["history"][-1]["test_pred_top_share"] < 0.9
