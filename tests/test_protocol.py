"""The comparison protocol (conf/protocol.yaml, docs/protocol.md): one scoring rule for every method, a
method's selection runs and records from uncommitted trees kept out of headline cells, cells complete only
over two noise draws, 95% t intervals, and pairs ranked only when their paired differences resolve."""
from __future__ import annotations

import csv
import json
import statistics

import pytest

from nlbench.registry import ConfigError
from nlbench.report import page as rp
from nlbench.report.protocol import Paired, load_protocol, mean_ci, paired, t975
from nlbench.report.records import load_runs
from report_fixtures import write_record


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _cell(path, **kw):
    return next(r for r in _rows(path) if all(r[k] == v for k, v in kw.items()))


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in list(range(1, 61)) + [100, 1000]:
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4), df
    with pytest.raises(ValueError):
        t975(0)


def test_mean_ci_is_the_t_interval():
    v = [60.0, 62.0, 61.0, 64.0]
    m, h = mean_ci(v)
    assert m == 61.75 and h == pytest.approx(3.1824 * statistics.stdev(v) / 2, abs=1e-9)
    assert mean_ci([5.0]) == (5.0, None)
    p = Paired([(0, 0), (0, 1), (1, 0)], [1.0, 1.2, 0.8])
    assert p.resolved and p.sign == 1                     # 1.0 +- 4.30 * 0.2 / sqrt(3) = +-0.50
    assert Paired([(0, 0), (0, 1)], [5.0, 5.1]).sign == 0  # two pairs: never resolved (min 3)
    assert Paired([(0, 0), (0, 1), (1, 0)], [1.0, -1.0, 0.5]).sign == 0


def _two_net(res, method, noise, seed, ens, single, noise_seed=0, **kw):
    """A two-network record whose history holds both scores; final.acc_last is the method's official one."""
    p = write_record(res, method=method, dataset="cifar10", noise=noise, seed=seed, noise_seed=noise_seed,
                     acc_last=single, **kw)
    rec = json.loads(p.read_text())
    for h in rec["history"]:
        if "test_top1" in h:
            h.update(test_top1_ensemble=ens, test_top1_mean_nets=single, test_top1_net0=single - 0.5,
                     test_top1_net1=single + 0.5)
    p.write_text(json.dumps(rec))
    return p


def test_acc_by_rule(tmp_path):
    res = tmp_path / "results"
    _two_net(res, "coteaching", "sym0.4", 0, ens=58.0, single=56.0)
    write_record(res, method="gce", dataset="cifar10", noise="sym0.4", seed=0, acc_last=50.0, acc_best=52.0)
    runs = {r.method: r for r in load_runs(res)[0]}
    assert runs["coteaching"].acc("ensemble") == 58.0 and runs["coteaching"].acc("single") == 56.0
    assert runs["gce"].acc("ensemble") == runs["gce"].acc("single") == 50.0
    assert runs["gce"].acc("single", "best") == 52.0
    with pytest.raises(ValueError, match="unknown scoring rule 'oracle'"):
        runs["gce"].acc("oracle")


def test_every_method_is_scored_by_one_rule_with_the_other_beside(tmp_path):
    """Co-teaching's official headline is the mean of its networks; the suite's table ranks its ensemble,
    like DivideMix's, and writes the single-network table beside it."""
    res = tmp_path / "results"
    for s in (1, 2, 3):
        _two_net(res, "coteaching", "sym0.4", s, ens=58.0 + s, single=56.0 + s)
    out = tmp_path / "plots"
    rp.report(res, out, figures=False)
    head = _cell(out / "table3_cpu.csv", dataset="cifar10", method="coteaching", noise="sym0.4")
    single = _cell(out / "table3_cpu_single.csv", dataset="cifar10", method="coteaching", noise="sym0.4")
    assert (float(head["mean"]), head["rule"]) == (60.0, "ensemble")
    assert (float(single["mean"]), single["rule"]) == (58.0, "single")
    md = (out / "table3_cpu.md").read_text()
    assert "several-network methods scored on their ensemble" in md
    assert "scored as a single network" in (out / "table3_cpu_single.md").read_text()
    assert "The same table with several-network methods scored as a single network" in (out / "REPORT.md").read_text()


def test_tables_beyond_the_paper_score_by_the_same_rule(tmp_path):
    res = tmp_path / "results"
    for s in (0, 1):   # CIFAR-10N worse is in no paper table: the summary table shows it
        _two_net(res, "coteaching", "c10n_worse", s, ens=50.0 + s, single=48.0 + s)
    out = tmp_path / "plots"
    rp.report(res, out, figures=False)
    row = _cell(out / "summary_cifar10_cpu.csv", method="coteaching")
    assert float(row["last_mean"]) == 50.5                       # the ensemble, not the networks' mean
    assert "scored on their ensemble" in (out / "summary_cifar10_cpu.md").read_text()


def test_a_one_network_table_writes_no_second_rule(tmp_path):
    res = tmp_path / "results"
    for s in (1, 2):
        write_record(res, method="gce", dataset="cifar10", noise="sym0.4", seed=s, acc_last=50.0 + s)
    rp.report(res, tmp_path / "plots", figures=False)
    assert (tmp_path / "plots" / "table3_cpu.md").exists()
    assert not (tmp_path / "plots" / "table3_cpu_single.md").exists()


def test_selection_and_dirty_runs_stay_out_of_headline_cells(tmp_path):
    proto = load_protocol()
    assert proto.selection[("gss_ssl", "cifar10", "cpu", "sym0.4")] == {(0, 0), (0, 1), (0, 2)}
    res = tmp_path / "results"
    for s in range(5):   # seeds 0-2 on draw 0 chose GSS-SSL's default at scale=cpu
        write_record(res, method="gss_ssl", dataset="cifar10", noise="sym0.4", seed=s, acc_last=60.0 + s)
    for s in range(3):
        write_record(res, method="gss_ssl", dataset="cifar10", noise="sym0.4", seed=s, noise_seed=1, acc_last=70.0)
    write_record(res, method="gce", dataset="cifar10", noise="sym0.4", seed=0, acc_last=40.0)
    write_record(res, method="gce", dataset="cifar10", noise="sym0.4", seed=1, acc_last=99.0, dirty=True)
    # the same settings at scale=smoke chose nothing: all of them count
    for s in range(3):
        write_record(res, method="gss_ssl", dataset="cifar10", noise="sym0.4", seed=s, scale="smoke", acc_last=50.0)
    out = tmp_path / "plots"
    result = rp.report(res, out, figures=False)
    ssl = _cell(out / "table3_cpu.csv", dataset="cifar10", method="gss_ssl", noise="sym0.4")
    assert (ssl["n"], ssl["noise_draws"], ssl["runs"]) == ("5", "2", "noise_seed 0: seed 3, 4; noise_seed 1: seed 0, 1, 2")
    assert float(ssl["mean"]) == pytest.approx((63 + 64 + 70 * 3) / 5)
    gce = _cell(out / "table3_cpu.csv", dataset="cifar10", method="gce", noise="sym0.4")
    assert (gce["n"], float(gce["mean"])) == ("1", 40.0)
    md = (out / "table3_cpu.md").read_text()
    assert ("GSS-SSL, Symmetric 40%: left out: 3 runs that chose this method's default (noise_seed 0: seed 0, 1, 2; "
            "conf/protocol.yaml)") in md
    assert "GCE, Symmetric 40%: left out: 1 run from an uncommitted tree (noise_seed 0: seed 1;" in md
    ssl_line = next(line for line in md.splitlines() if line.startswith("| GSS-SSL |"))
    assert "n=5)" in ssl_line and "*" not in ssl_line.split("[")[0]     # 5 runs over 2 draws: complete
    assert _cell(out / "table3_smoke.csv", dataset="cifar10", method="gss_ssl", noise="sym0.4")["n"] == "3"
    # left-out runs are accounted for in their cell's note, not listed again as other runs
    assert not any("gss_ssl" in p and "sym0.4" in p for p in result.other)


def test_five_runs_on_one_draw_are_short_and_the_missing_list_asks_for_the_other(tmp_path):
    res = tmp_path / "results"
    for s in range(5):
        write_record(res, method="gce", dataset="cifar10", noise="sym0.8", seed=s, acc_last=30.0 + s)
    out = tmp_path / "plots"
    result = rp.report(res, out, figures=False)
    gce = _cell(out / "table3_cpu.csv", dataset="cifar10", method="gce", noise="sym0.8")
    assert (gce["n"], gce["noise_draws"]) == ("5", "1")
    assert "(30.04–33.96, n=5, 1 draw)*" in (out / "table3_cpu.md").read_text()
    miss = [(e.noise_seed, e.seed) for e in result.missing[("table3", "cpu")]
            if (e.method, e.dataset, e.noise) == ("gce", "cifar10", "sym0.8")]
    assert miss == [(1, 0)]


def test_runs_pair_only_on_the_same_noise_draw_and_seed(tmp_path):
    res = tmp_path / "results"
    for s in range(3):
        write_record(res, method="gce", dataset="cifar10", noise="sym0.8", seed=s, noise_seed=1, acc_last=30.0)
        write_record(res, method="sl", dataset="cifar10", noise="sym0.8", seed=s, acc_last=20.0)
    runs, _ = load_runs(res)
    a = [r for r in runs if r.method == "gce"]
    b = [r for r in runs if r.method == "sl"]
    assert paired(a, b, "ensemble").n == 0                  # same seeds, other noise draw: nothing shared
    write_record(res, method="sl", dataset="cifar10", noise="sym0.8", seed=0, noise_seed=1, acc_last=25.0)
    runs, _ = load_runs(res)
    p = paired([r for r in runs if r.method == "gce"], [r for r in runs if r.method == "sl"], "ensemble")
    assert (p.pairs, p.diffs) == ([(1, 0)], [5.0])


def test_a_bad_protocol_file_is_named(tmp_path):
    bad = tmp_path / "protocol.yaml"
    bad.write_text("headline_rule: oracle\n")
    with pytest.raises(ConfigError, match="headline_rule 'oracle' is not one of ensemble, single"):
        load_protocol(str(bad))
    bad.write_text("selection:\n  - {method: gce, dataset: cifar10}\n")
    with pytest.raises(ConfigError, match="selection entry 0 must have"):
        load_protocol(str(bad))
    bad.write_text("experiments:\n  table3: {min_runs: 0}\n")
    with pytest.raises(ConfigError, match="experiments.table3"):
        load_protocol(str(bad))


def test_a_summary_row_names_its_runs_from_uncommitted_trees(tmp_path):
    res = tmp_path / "results"
    write_record(res, method="ce", dataset="cifar10", noise="c10n_worse", seed=0, acc_last=50.0, dirty=True)
    write_record(res, method="ce", dataset="cifar10", noise="c10n_worse", seed=1, acc_last=52.0)
    rp.report(res, tmp_path / "plots", figures=False)
    row = _cell(tmp_path / "plots" / "summary_cifar10_cpu.csv", method="ce")
    assert "1 from an uncommitted tree (seed 0;" in row["note"]
