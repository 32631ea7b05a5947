"""The report beyond the paper, from real (short) runs on digits: each network beside its ensemble and
GSS-DB against GSS-SB both ways, methods scored as detectors beside cleanlab, the estimated noise rate
against the truth; and a collapsed or chance-level cell is flagged and never bold."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import SMOKE, make_results, run_cli
from report_fixtures import write_record


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def beyond(tmp_path_factory):
    base = tmp_path_factory.mktemp("beyond")
    res = make_results(base)
    args = [a for a in SMOKE if not a.startswith("method=")] + ["dataset=digits", "noise=sym0.4", "train.epochs=6",
                                                                "diagnose_train=true"]
    for extra in (["method=gss_db"], ["method=gss_sb"], ["method=coteaching"],
                  ["method=coteaching", "method.params.forget_rate=estimate", "method.params.estimate_epoch=3"],
                  ["method=ce", "val_fraction=0.2"]):
        r = run_cli(["run", *args, *extra], res)
        assert r.rc == 0, r.err
    r = run_cli(["detect", "dataset=digits", "noise=sym0.4", "device=cpu", "train.epochs=3", "folds=2"], res)
    assert r.rc == 0, r.err
    out = base / "plots"
    r = run_cli(["report", "--results-dir", str(res.results), "--out", str(out), "--no-figures"])
    assert r.rc == 0, r.err
    recs = {}
    for p in res.records():
        rec = json.loads(p.read_text())
        key = rec["method"] + ("_val" if (rec.get("effective") or {}).get("val_fraction") else "") + ("_est" if (rec.get("effective") or {}).get("method_params", {}).get("forget_rate")
                               == "estimate" else "")
        recs[key] = rec
    return out, recs


def test_networks_beside_the_ensemble_and_gss_db_vs_gss_sb_both_ways(beyond):
    out, recs = beyond
    db = recs["gss_db"]["history"][-1]
    row = next(r for r in _rows(out / "networks.csv") if r["method"] == "gss_db")
    assert float(row["net0"]) == pytest.approx(db["test_top1_net0"], abs=1e-3)
    assert float(row["net1"]) == pytest.approx(db["test_top1_net1"], abs=1e-3)
    assert float(row["ensemble"]) == pytest.approx(db["test_top1_ensemble"], abs=1e-3)
    md = (out / "networks.md").read_text()
    sb = recs["gss_sb"]["final"]["acc_last"]
    single = (db["test_top1_net0"] + db["test_top1_net1"]) / 2
    assert f"GSS-DB's ensemble {db['test_top1_ensemble']:.2f} vs GSS-SB {sb:.2f}" in md
    assert f"GSS-DB's single networks {single:.2f} vs GSS-SB ({single - sb:+.2f})" in md
    assert "networks.md" in (out / "REPORT.md").read_text()


def test_noisy_validation_table_reads_each_number_from_its_record(beyond):
    out, recs = beyond
    rows = _rows(out / "validation.csv")
    assert [r["method"] for r in rows] == ["ce"]   # only the run that held out a validation split
    row, rec = rows[0], recs["ce_val"]
    fin, last = rec["final"], rec["history"][-1]
    assert float(row["val_last"]) == pytest.approx(fin["last_val_top1"], abs=1e-4)
    assert float(row["test_at_best_val"]) == pytest.approx(fin["test_at_best_val"], abs=1e-4)
    # the test accuracy at the epoch whose noisy validation accuracy peaked (first such epoch)
    vals = [(h["val_top1"], -i, h["test_top1"]) for i, h in enumerate(rec["history"]) if "val_top1" in h]
    assert fin["test_at_best_val"] == pytest.approx(max(vals)[2], abs=1e-4)
    assert float(row["last"]) == pytest.approx(fin["acc_last"], abs=1e-4)
    p, n = fin["last_val_top1"] / 100, rec["val_split"]["num_val"]
    assert float(row["val_se"]) == pytest.approx(100 * (p * (1 - p) / n) ** 0.5, abs=1e-4)
    assert float(row["memorized"]) == pytest.approx(last["memorized"], abs=1e-4)
    assert float(row["minutes"]) == pytest.approx(rec["wall_s"] / 60, abs=1e-4)
    assert row["n"] == "1" and row["n_collapsed"] == "0" and row["records"].endswith(".json")
    assert "validation.md" in (out / "REPORT.md").read_text()


def test_methods_and_cleanlab_as_detectors(beyond):
    out, recs = beyond
    rows = _rows(out / "detection.csv")
    by = {r["method"]: r for r in rows if "forget_rate" not in r["variant"]}
    sb = recs["gss_sb"]["history"][-1]
    assert float(by["gss_sb"]["auroc"]) == pytest.approx(sb["det_auroc"], abs=1e-4)
    assert float(by["gss_sb"]["loss_auroc"]) == pytest.approx(sb["det_loss_auroc"], abs=1e-4)
    assert float(by["coteaching"]["precision"]) == pytest.approx(recs["coteaching"]["history"][-1]["det_precision"],
                                                                  abs=1e-4)
    cl = next(r for r in rows if r["method"] == "cleanlab_cv")
    det = next(p for p in recs.values() if p["method"] == "cleanlab_cv")
    assert float(cl["auroc"]) == pytest.approx(det["final"]["det_auroc"], abs=1e-4)
    assert "cleanlab_cv" in cl["records"]


def test_estimated_rate_against_truth_and_told(beyond):
    out, recs = beyond
    row, ref = _rows(out / "noise_rate.csv")
    est = recs["coteaching_est"]
    assert float(row["estimate"]) == pytest.approx(est["history"][-1]["forget_rate_est"], abs=1e-4)
    assert float(row["true_rate"]) == pytest.approx(est["noise"]["actual_rate"], abs=1e-4)
    assert float(row["told_rate"]) == pytest.approx(recs["coteaching"]["effective"]["method_params"]["forget_rate"],
                                                    abs=1e-4)
    assert float(row["acc_told"]) == pytest.approx(recs["coteaching"]["final"]["acc_last"], abs=1e-3)
    assert float(row["error"]) == pytest.approx(float(row["estimate"]) - float(row["true_rate"]), abs=1e-4)
    # confident learning's estimate, from the detector record, beside it
    det = next(p for p in recs.values() if p["method"] == "cleanlab_cv")["final"]
    assert ref["method"] == "cleanlab_cv" and "cleanlab_cv" in ref["records"]
    assert float(ref["estimate"]) == pytest.approx(det["noise_rate_est"], abs=1e-4)
    assert float(ref["true_rate"]) == pytest.approx(est["noise"]["actual_rate"], abs=1e-4)
    assert float(ref["error"]) == pytest.approx(det["noise_rate_est"] - det["noise_rate_true"], abs=1e-4)
    assert ("cleanlab, 2-fold out-of-sample, each fold early-stopped on its held-out noisy labels (seed 0)"
            in (out / "noise_rate.md").read_text())


def test_collapsed_runs_are_counted_and_chance_cells_never_bold(tmp_path):
    res = tmp_path / "results"
    paths = []
    # seeds 1-3: seed 0 at sym0.8 chose GSS-SSL's and DivideMix's defaults (conf/protocol.yaml)
    for s in range(1, 4):   # GSS-SSL at chance, two of three runs collapsed
        paths.append(write_record(res, method="gss_ssl", dataset="cifar10", noise="sym0.8", seed=s, acc_last=9.0 + s))
    for s, a in zip(range(1, 4), [30.0, 31.0, 30.5]):
        write_record(res, method="dividemix", dataset="cifar10", noise="sym0.8", seed=s, acc_last=a)
        write_record(res, method="gce", dataset="cifar10", noise="sym0.8", seed=s, acc_last=a - 10)
    write_record(res, method="ce", dataset="cifar10", noise="asym0.4", seed=0, acc_last=12.0)   # alone, at chance
    for p in paths[:2]:
        rec = json.loads(p.read_text())
        rec["final"].update(collapsed=True, collapse_reason="one class takes 100% of the test predictions")
        p.write_text(json.dumps(rec))
    out = tmp_path / "plots"
    r = run_cli(["report", "--results-dir", str(res), "--out", str(out), "--no-figures"])
    assert r.rc == 0, r.err
    md = (out / "table3_cpu.md").read_text()
    gss = next(line for line in md.splitlines() if line.startswith("| GSS-SSL |"))
    dm = next(line for line in md.splitlines() if line.startswith("| DivideMix |"))
    ce = next(line for line in md.splitlines() if line.startswith("| CE |"))
    assert "11.00 (8.52–13.48, n=3 of 5, 1 draw)* ‡2" in gss and "**" not in gss   # counted, never bold
    assert "**30.50** (29.26–31.74, n=3 of 5, 1 draw)*" in dm    # the best real cell, 10 above GCE on each seed
    assert "12.00" in ce and "**" not in ce                              # chance level (K = 10): not bold
    rows = [r for r in _rows(out / "table3_cpu.csv") if r["dataset"] == "cifar10" and r["noise"] == "sym0.8"]
    assert next(r for r in rows if r["method"] == "gss_ssl")["n_collapsed"] == "2"
    assert "partial: 10 of 350 runs, 4 of 10 methods" in md


def test_missing_run_commands_keep_the_users_data_dir(tmp_path):
    res = tmp_path / "results"
    # records made from two spellings of the folder: the commands use the one most records hold
    for seed, where in ((0, "../shared/data"), (1, "../shared/data"), (2, "/abs/shared/data")):
        p = write_record(res, method="ce", dataset="cifar10", noise="sym0.4", seed=seed, acc_last=50.0)
        rec = json.loads(p.read_text())
        rec["config"]["data_dir"] = where
        p.write_text(json.dumps(rec))
    out = tmp_path / "plots"
    r = run_cli(["report", "--results-dir", str(res), "--out", str(out), "--no-figures"])
    assert r.rc == 0, r.err
    cmds = [ln for ln in (out / "REPORT.md").read_text().splitlines() if ln.startswith("python -m nlbench run -m")]
    assert cmds and all(ln.endswith("data_dir=../shared/data") for ln in cmds)
    assert all(f"results_dir={res}" in ln for ln in cmds)


def test_variants_ranked_on_noisy_validation_never_on_test(tmp_path):
    """A method's variants are ranked by mean noisy validation accuracy over the noise settings the most
    variants share (seeds first, then settings), each on the runs every variant has; a collapsed one is out, an incomplete one unranked, equal
    scores share a rank, and the test set is ranked beside without choosing."""
    res = tmp_path / "results"

    def w(noise, seed, val, test, **kw):
        return write_record(res, method="gss_sb", dataset="cifar10", noise=noise, seed=seed, acc_last=test,
                            val_last=val, num_val=400, **kw)

    d0 = w("sym0.4", 0, 40.0, 60.0)
    w("sym0.4", 1, 42.0, 60.0), w("sym0.8", 0, 20.0, 20.0)     # default: 30.0 (its seed 1 is not shared: out)
    lam = json.loads(d0.read_text())["effective"]["method_params"]["lambda1"]
    a = {"params": {"lambda1": 0.1}}
    w("sym0.4", 0, 44.0, 50.0, **a), w("sym0.8", 0, 18.0, 24.0, **a)                       # 31.0, test 37
    w("asym0.4", 0, 90.0, 90.0, **a)               # shown beside (two variants have it), not ranked on
    b = {"params": {"lambda1": 0.3}}
    w("sym0.4", 0, 60.0, 70.0, **b)
    p = w("sym0.8", 0, 30.0, 10.0, **b)                                                     # collapsed: out
    rec = json.loads(p.read_text())
    rec["final"].update(collapsed=True, collapse_reason="one class takes 100% of the test predictions")
    p.write_text(json.dumps(rec))
    w("asym0.4", 0, 50.0, 50.0, params={"lambda1": 0.4})                                   # no shared setting
    for q, v in ((0.5, 33.0), (0.9, 33.0)):                                                 # a tie (GCE)
        write_record(res, method="gce", dataset="cifar10", noise="sym0.4", seed=0, acc_last=v, val_last=v,
                     params={"q": q})
    out = tmp_path / "plots"
    r = run_cli(["report", "--results-dir", str(res), "--out", str(out), "--no-figures"])
    assert r.rc == 0, r.err
    rows = {(x["method"], x["variant"]): x for x in _rows(out / "selection.csv")}
    default = next(k for k in rows if k[0] == "gss_sb" and k[1].startswith("default"))
    assert default[1] == f"default (lambda1={lam})" and lam not in (0.1, 0.3, 0.4)
    assert {x["ranked_on"] for x in rows.values() if x["method"] == "gss_sb"} == {"sym0.4 sym0.8"}
    # candidates are compared on the same runs: the default's seed 1 at sym0.4 has no rival, so (40 + 20) / 2
    assert float(rows[default]["val_mean"]) == pytest.approx(30.0)
    assert float(rows[default]["test_mean"]) == pytest.approx(40.0)
    assert float(rows["gss_sb", "lambda1=0.1"]["val_mean"]) == pytest.approx(31.0)
    assert (rows["gss_sb", "lambda1=0.1"]["rank"], rows[default]["rank"]) == ("1", "2")
    assert (rows["gss_sb", "lambda1=0.1"]["test_rank"], rows[default]["test_rank"]) == ("2", "1")
    assert rows["gss_sb", "lambda1=0.3"]["rank"] == "" and rows["gss_sb", "lambda1=0.3"]["n_collapsed"] == "1"
    assert rows["gss_sb", "lambda1=0.4"]["rank"] == "" and rows["gss_sb", "lambda1=0.4"]["val_mean"] == ""
    # the split's sampling error: per setting the runs' binomial SE over sqrt(runs), combined, halved
    se = lambda p: 100 * (p / 100 * (1 - p / 100) / 400) ** 0.5                              # noqa: E731
    assert float(rows[default]["split_se"]) == pytest.approx((se(40.0) ** 2 + se(20.0) ** 2) ** 0.5 / 2, abs=1e-3)
    md = (out / "selection.md").read_text()
    assert f"chooses **lambda1=0.1** (31.00); next default (lambda1={lam}) (30.00): a gap of 1.00 points, within" in md
    assert "Compared on the same runs: sym0.4: noise_seed 0 seed 0; sym0.8: noise_seed 0 seed 0; asym0.4: " \
           "noise_seed 0 seed 0." in md
    assert "The test set ranks it 2 of 2." in md
    assert "| noisy val asym0.4 (not ranked on) |" in md and "ranked on sym0.4, sym0.8**" in md
    assert rows["gss_sb", "lambda1=0.1"]["runs"] == "sym0.4:1 sym0.8:1 asym0.4:1"
    assert "collapsed: sym0.8 seed 0" in md and "not run on sym0.4, sym0.8" in md
    assert [x["rank"] for x in rows.values() if x["method"] == "gce"] == ["1", "1"]
    assert "ties 2 variants at the top (33.00)" in md and "cannot choose" in md
    assert "selection.md" in (out / "REPORT.md").read_text()
