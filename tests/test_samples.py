"""Per-sample verdicts: every method's verdict scored as a mislabeled-sample detector against the truth,
the per-sample table saved beside the record, and its export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SMOKE, make_results, read_json, run_cli
from nlbench.metrics import auroc, detector_stats


def test_auroc_closed_forms():
    pos = torch.tensor([True, True, False, False])
    assert auroc(torch.tensor([0.9, 0.8, 0.1, 0.2]), pos) == 1.0
    assert auroc(torch.tensor([0.1, 0.2, 0.9, 0.8]), pos) == 0.0
    assert auroc(torch.tensor([0.5, 0.5, 0.5, 0.5]), pos) == 0.5            # ties count one half
    assert auroc(torch.tensor([0.9, 0.3, 0.5, 0.1]), pos) == 0.75           # 3 of 4 pairs ordered
    from sklearn.metrics import roc_auc_score
    g = torch.Generator().manual_seed(0)
    s, y = torch.randint(0, 5, (500,), generator=g).float(), torch.rand(500, generator=g) < 0.3
    assert auroc(s, y) == pytest.approx(roc_auc_score(y.numpy(), s.numpy()))
    assert np.isnan(auroc(s, torch.zeros(500, dtype=torch.bool)))


def test_detector_stats_by_hand():
    clean_prob = torch.tensor([0.9, 0.2, 0.4, 0.8, float("nan")])
    is_clean = torch.tensor([True, False, True, False, False])
    d = detector_stats(clean_prob, is_clean)
    # flagged (p < 0.5): samples 1 and 2; truly mislabeled among the scored: 1 and 3; sample 4 has no verdict
    assert d["det_precision"] == 0.5 and d["det_recall"] == 0.5 and d["det_flagged"] == 0.5
    assert d["det_auroc"] == pytest.approx(auroc(1 - clean_prob[:4], ~is_clean[:4]))


@pytest.mark.parametrize("method, has_label", [("gss_sb", True), ("dividemix", False), ("gss_ssl", True),
                                               ("coteaching", False), ("elr_plus", True), ("ce", None)])
def test_every_verdict_is_scored_and_saved(tmp_path, method, has_label):
    res = make_results(tmp_path)
    args = [a for a in SMOKE if not a.startswith("method=")]
    r = run_cli(["run", *args, f"method={method}", "dataset=digits", "noise=sym0.4", "train.epochs=3",
                 "save_samples=true", "sample_epochs=[1]"], res)
    assert r.rc == 0, r.err
    path = res.records()[0]
    rec = read_json(path)
    assert rec["samples"] == {"file": path.with_suffix(".samples.npz").name, "epochs": [1, 3]}
    from nlbench.samples import read_samples

    tables = read_samples(path.with_suffix(".samples.npz"))
    t = tables[3]
    n = rec["data"]["num_train"]
    assert all(len(v) == n for v in t.values())
    assert (t["index"] == np.arange(n)).all() and (t["is_noisy"] == (t["given"] != t["true"])).all()
    assert abs(t["is_noisy"].mean() - rec["noise"]["actual_rate"]) < 0.05        # the training part of the split
    assert ((0 <= t["pred_prob"]) & (t["pred_prob"] <= 1)).all()
    hit = t["pred"] == t["given"]    # the loss is -log p(given): -log max p where the argmax is the given label
    np.testing.assert_allclose(t["loss"][hit], -np.log(t["pred_prob"][hit]), rtol=1e-5)
    assert (t["loss"][~hit] >= -np.log(t["pred_prob"][~hit]) - 1e-6).all()
    last = rec["history"][-1]
    if has_label is None:            # CE has no verdict: NaN in the table, no detector numbers
        assert np.isnan(t["clean_prob"]).all() and "det_auroc" not in last
        return
    assert "det_auroc" in last and 0 <= last["det_precision"] <= 1
    # the record's detector numbers are the table's
    ok = ~np.isnan(t["clean_prob"])
    d = detector_stats(torch.from_numpy(t["clean_prob"]), torch.from_numpy(t["is_noisy"] == 0))
    assert d["det_auroc"] == pytest.approx(last["det_auroc"]) and ok.any()
    assert (t["verdict_label"] >= 0).all() == has_label


def test_export_writes_csv_and_refuses_what_was_not_saved(tmp_path):
    from nlbench.registry import ConfigError
    from nlbench.samples import export

    res = make_results(tmp_path)
    args = [a for a in SMOKE if not a.startswith("method=")]
    r = run_cli(["run", *args, "method=gss_sb", "train.epochs=2", "save_samples=true"], res)
    assert r.rc == 0, r.err
    path = res.records()[0]
    out = export(path, fmt="csv")
    import pandas as pd

    df = pd.read_csv(out)
    assert list(df.columns[:5]) == ["epoch", "index", "dataset_index", "given", "true"] and (df["epoch"] == 2).all()
    assert len(df) == read_json(path)["data"]["num_train"]
    with pytest.raises(ConfigError, match="epoch 1 was not saved; saved epochs: 2"):
        export(path, fmt="csv", epoch=1)
    with pytest.raises(ConfigError, match="format 'xlsx'.*csv, parquet"):
        export(path, fmt="xlsx")
    res2 = make_results(tmp_path / "b")
    assert run_cli(["run", *SMOKE, "train.epochs=1"], res2).rc == 0
    with pytest.raises(ConfigError, match="saved no per-sample table.*save_samples=true"):
        export(res2.records()[0])


def test_sample_epochs_outside_the_run_are_bad_input(tmp_path):
    res = make_results(tmp_path)
    r = run_cli(["run", *SMOKE, "train.epochs=2", "sample_epochs=[5]"], res)
    r.assert_bad_input(["sample_epochs", "[5]", "1..2"])
    assert not res.all_files()


def test_export_command_line(tmp_path):
    res = make_results(tmp_path)
    assert run_cli(["run", *SMOKE, "train.epochs=2", "save_samples=true"], res).rc == 0
    rec = res.records()[0]
    out = tmp_path / "t.csv"
    r = run_cli(["export", str(rec), "--format", "csv", "--out", str(out)])
    assert r.rc == 0, r.err
    assert r.out.strip() == str(out) and out.read_text().startswith("epoch,index,dataset_index,given,true")
    r = run_cli(["export", str(rec), "--bogus"])
    r.assert_bad_input(["--bogus", "--format"])
    r = run_cli(["export", str(tmp_path / "none.json")])
    r.assert_bad_input(["no run record"])
    # a record shipped compressed (<name>.json.gz) keeps its table at <name>.samples.npz, as runs write it
    import gzip
    gz = rec.with_name(rec.name + ".gz")
    gz.write_bytes(gzip.compress(rec.read_bytes()))
    rec.unlink()
    r = run_cli(["export", str(rec)])                                 # the plain name: pointed to the .gz
    r.assert_bad_input(["no run record", f"a compressed one is there: {gz}"])
    r = run_cli(["export", str(gz), "--format", "csv"])
    assert r.rc == 0, r.err
    assert r.out.strip() == str(rec.with_name(rec.name[:-len(".json")] + ".samples.csv"))
