"""The report: golden tables from fixture records, figures by the data they plot, the missing-run
listing, experiments as config, and the failure modes (empty folder, malformed record, mixed scales,
data copies and code versions that must never be averaged together).

Regenerate the golden files after an intended change with ``NLBENCH_UPDATE_GOLDEN=1 pytest tests/test_report.py``
and review the diff.
"""
from __future__ import annotations

import csv
import os
import shlex
import statistics
from pathlib import Path

import pytest

from nlbench import report as rp
from nlbench.experiments import as_dict, expand
from report_fixtures import COMMIT, golden_results, write_record

GOLDEN = Path(__file__).parent / "golden" / "report"
GOLDEN_FILES = ["table3_cpu.md", "table3_cpu.tex", "table3_cpu.csv", "table4_cpu.md", "table4_cpu.tex",
                "table4_cpu.csv", "summary_cifar10_cpu.md", "summary_cifar10_cpu.csv", "summary_digits_paper.md",
                "summary_digits_paper.csv", "digits_paper.md", "digits_paper.csv"]


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    golden_results(base / "results")
    return base, rp.report(base / "results", base / "plots")


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def cell(table: list[dict], **kw) -> dict:
    hits = [r for r in table if all(r[k] == v for k, v in kw.items())]
    assert len(hits) == 1, (kw, hits)
    return hits[0]


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_tables_match_golden_files_byte_for_byte(golden, name):
    got = (golden[0] / "plots" / name).read_text()
    if os.environ.get("NLBENCH_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / name).write_text(got)
    assert got == (GOLDEN / name).read_text()


def test_table3_cells_mean_std_seeds_diverged_and_paper(golden):
    t = rows(golden[0] / "plots" / "table3_cpu.csv")
    gce = cell(t, dataset="cifar10", method="gce", noise="sym0.2")
    vals = [80.1, 80.5, 79.9, 80.3, 80.7]      # the noise_seed=3 run of this cell is another experiment
    assert float(gce["mean"]) == pytest.approx(statistics.mean(vals), abs=1e-4)
    assert float(gce["std"]) == pytest.approx(statistics.stdev(vals), abs=1e-4)
    # 5 runs, but all on one noise draw: short of the protocol's 5 runs over 2 draws
    assert (gce["n"], gce["n_asked"], gce["noise_draws"], gce["best"], gce["paper_mean"]) == \
        ("5", "5", "1", "0", "88.7700")
    assert float(gce["ci95_half_width"]) == pytest.approx(2.7764 * statistics.stdev(vals) / 5 ** 0.5, abs=1e-4)
    sl = cell(t, dataset="cifar10", method="sl", noise="sym0.2")
    # the higher mean, but on 2 shared runs with GCE: unresolved, so not bold
    assert (sl["n"], sl["n_asked"], sl["best"]) == ("2", "5", "0")
    ce = cell(t, dataset="cifar10", method="ce", noise="sym0.4")   # seed 7 is not one the experiment asks for
    assert (ce["n"], ce["n_diverged"], ce["runs"], float(ce["mean"])) == ("2", "1", "noise_seed 0: seed 0, 1", 61.0)
    md = (golden[0] / "plots" / "table3_cpu.md").read_text()
    # t_{0.975,1} = 12.7062: 81.2 +- 12.7062 * 0.2828 / sqrt(2)
    assert "81.20 (78.66–83.74, n=2 of 5, 1 draw)* [88.98]" in md and "61.00 (48.29–73.71, n=2 of 5, 1 draw)* †1" in md
    assert "**" not in md.split("**CIFAR-100**")[0].split("| Method")[1]   # nothing in CIFAR-10 is resolved
    assert "scale=cpu" in md and "data: local copy" in md and "data: official files (MD5 verified)" in md
    c100 = cell(t, dataset="cifar100", method="gce", noise="asym0.4")
    assert (c100["data"], c100["mean"], c100["paper_mean"]) == ("official", "45.2500", "49.7500")


def test_table4_reads_each_split(golden):
    t = rows(golden[0] / "plots" / "table4_cpu.csv")
    assert cell(t, dataset="clothing1m", method="gce")["mean"] == "68.5000"
    wv = {r["metric"]: r["mean"] for r in t if r["dataset"] == "webvision" and r["method"] == "sl"}
    assert wv == {"webvision_top1": "55.0000", "webvision_top5": "70.0000", "imagenet_top1": "53.0000",
                  "imagenet_top5": "67.0000"}


def test_every_run_shows_up_once(golden):
    base, res = golden
    paths = {p.relative_to(base / "results").as_posix() for p in (base / "results").rglob("*.json")}
    assert res.n_runs == len(paths) == 31
    assert res.used | res.other == paths and not res.used & res.other
    summary = rows(base / "plots" / "summary_cifar10_cpu.csv")
    assert {(r["method"], r["noise"], r["variant"], r["seeds"]) for r in summary} == {
        ("ce", "sym0.4", "", "7"), ("gce", "sym0.2", "noise_seed=3", "0")}
    digits = rows(base / "plots" / "summary_digits_paper.csv")   # the digits table takes CE's default runs
    assert [r["method"] for r in digits] == ["gss_sb"] and cell(digits, method="gss_sb")["variant"] == "lambda1=1.0"
    ce = cell(rows(base / "plots" / "digits_paper.csv"), method="ce", noise="sym0.6")
    assert (float(ce["mean"]), ce["n"], ce["n_asked"], ce["runs"]) == (63.0, "2", "3", "noise_seed 0: seed 0, 1")


def test_figures_plot_the_right_runs(golden):
    figs = golden[1].figures
    f1 = figs["fig1_cpu_nonofficial"]
    last = f1[f1.epoch == f1.epoch.max()].set_index("series")   # the scale's last epoch
    assert set(last.index) == {"CE", "GSS-SB", "CE, clean labels (upper bound)"}
    assert last.loc["GSS-SB", "mean"] == pytest.approx(66.4) and last.loc["GSS-SB", "n"] == 5
    assert last.loc["CE", "n"] == 2                           # the diverged run has no curve
    assert last.loc["CE, clean labels (upper bound)", "mean"] == pytest.approx(70.5)
    f3 = figs["fig3_cpu_nonofficial"].set_index(["panel", "value"])
    assert f3.loc[("lambda1", 0.0), "mean"] == pytest.approx(41.0) and f3.loc[("lambda1", 0.0), "n"] == 2
    assert f3.loc[("lambda1", 2.0), "mean"] == pytest.approx(66.4) and f3.loc[("lambda2", 1.0), "n"] == 5
    assert f3.loc[("lambda2", 0.0), "mean"] == pytest.approx(51.0) and len(f3) == 4
    f4 = figs["fig4_cpu_nonofficial"].set_index(["noise", "method"])
    assert f4.loc[("sym0.6", "gss_sb"), "mean"] == pytest.approx(56.0) and len(f4) == 2
    mem = figs["dynamics/memorization_cifar10_cpu_nonofficial_sym0.4"]
    end = mem[mem.epoch == mem.epoch.max()].set_index("series")["mean"]
    assert set(end.index) == {"CE", "GSS-SB"} and end["CE"] == pytest.approx(60.0)
    pool = figs["dynamics/gss_pool_cifar10_cpu_nonofficial_sym0.4"]
    assert set(pool.series) == {"GSS-SB"} and {"belief_true_noisy", "belief_entropy_clean"} <= set(pool.key)
    sel = figs["dynamics/selection_cifar10_cpu_nonofficial_sym0.2"]
    assert set(sel.series) == {"SL"}
    for stem in ("fig1_cpu_nonofficial", "fig3_cpu_nonofficial", "fig4_cpu_nonofficial"):
        for ext in ("png", "pdf"):
            assert (golden[0] / "plots" / f"{stem}.{ext}").stat().st_size > 1000


def test_regenerating_a_figure_rewrites_the_same_bytes(golden, tmp_path):
    """No creation date inside a PDF (or PNG): the same records give the same files, so a regenerated
    plots/ shows no spurious change."""
    base = golden[0]
    rp.report(base / "results", tmp_path, figures=True)
    for stem in ("fig1_cpu_nonofficial", "fig4_cpu_nonofficial"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{stem}.{ext}").read_bytes() == (base / "plots" / f"{stem}.{ext}").read_bytes()


def test_missing_listing_commands_make_exactly_the_missing_runs(golden):
    base, res = golden
    report_md = (base / "plots" / "REPORT.md").read_text()
    missing = res.missing[("table3", "cpu")]
    # only what completes each cell (5 runs over 2 noise draws, conf/protocol.yaml), seed by seed on both
    # draws: 140 empty cells x 5, less GCE and GSS-SB (5 runs on draw 0: 1 each), SL, CE and GSS-SB sym0.6
    # (2 runs: 3 each) and CIFAR-100 GCE (1 run: 4)
    assert len(missing) == 140 * 5 - 2 * 4 - 3 * 2 - 1
    keys = {(e.method, e.dataset, e.noise, e.noise_seed, e.seed) for e in missing}
    assert ("ce", "cifar10", "sym0.4", 0, 2) not in keys        # diverged: present, failed
    assert {k for k in keys if k[:3] == ("ce", "cifar10", "sym0.4")} == {("ce", "cifar10", "sym0.4", 1, s)
                                                                          for s in (0, 1, 2)}
    assert {k for k in keys if k[:3] == ("gce", "cifar10", "sym0.2")} == {("gce", "cifar10", "sym0.2", 1, 0)}
    assert {k for k in keys if k[:3] == ("sl", "cifar10", "sym1.0")} == set()
    assert [k[3:] for k in sorted(k for k in keys if k[:3] == ("gce", "cifar10", "sym0.6"))] == \
        [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    for (item, scale), miss in res.missing.items():
        lines = rp.missing_commands(miss, scale, "")
        made = set()
        for line in lines:
            assert line in report_md or item not in ("table3", "fig3")
            args = shlex.split(line)
            assert args[:5] == ["python", "-m", "nlbench", "run", "-m"]
            made |= {frozenset(as_dict(c).items()) for c in expand(args[5:])}
        assert made == {frozenset(as_dict(e.combo).items()) for e in miss}, item
    assert "python -m nlbench run -m +experiment=fig3 scale=cpu dataset=cifar10 noise=sym0.4 method=gss_sb " \
           "method.params.lambda1=0.0 method.params.lambda2=1.0 seed=2,3,4" in report_md


def test_empty_results_dir_is_a_clear_error(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    for d in ("empty", "absent"):
        r = cli(["report", "--results-dir", str(tmp_path / d), "--out", str(tmp_path / "plots")])
        assert r.rc == 2 and r.error_lines() == [r.err.strip()]
        assert f"no run records under {tmp_path / d}" in r.err
    assert not (tmp_path / "plots").exists()


def test_malformed_records_are_skipped_and_named(tmp_path, cli):
    res = tmp_path / "results"
    write_record(res, method="ce", dataset="digits", noise="sym0.4", seed=0, scale="smoke", acc_last=50.0)
    (res / "bad.json").write_text("{not json")
    (res / "foreign.json").write_text('{"a": 1}')
    good = next(res.rglob("seed0-*.json"))
    (res / "nofinal.json").write_text(good.read_text().replace('"acc_last"', '"acc_lost"'))
    r = cli(["report", "--results-dir", str(res), "--out", str(tmp_path / "plots"), "--no-figures"])
    assert r.rc == 0, r.err
    for name, why in (("bad.json", "not valid JSON"), ("foreign.json", "no schema_version"),
                      ("nofinal.json", "final.acc_last is missing")):
        assert f"skipped {res / name}: " in r.err and why in r.err
    md = (tmp_path / "plots" / "REPORT.md").read_text()
    assert "## Skipped files" in md and "`bad.json`" in md and "**1 run records**" in md
    assert "50.00" in (tmp_path / "plots" / "digits_smoke.md").read_text()   # now a cell of the digits table
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "bad.json").write_text("[]")
    r = cli(["report", "--results-dir", str(only_bad), "--out", str(tmp_path / "p2")])
    assert r.rc == 2 and "bad.json (not a JSON object)" in r.err


def test_scales_data_copies_and_code_versions_are_never_merged(tmp_path):
    res = tmp_path / "results"
    kw = dict(method="gce", dataset="cifar10", noise="sym0.2")
    write_record(res, seed=0, scale="cpu", acc_last=80.0, **kw)
    write_record(res, seed=0, scale="smoke", acc_last=20.0, **kw)
    write_record(res, seed=1, scale="cpu", acc_last=90.0, md5_ok=True, **kw)
    # one seed, two code versions, two numbers: two variants, never their mean
    write_record(res, seed=2, scale="cpu", acc_last=70.0, commit="a" * 40, **kw)
    write_record(res, seed=2, scale="cpu", acc_last=72.0, commit="b" * 40, subdir="copy", **kw)
    # the same record copied twice counts once
    write_record(res, seed=3, scale="cpu", acc_last=74.0, commit="a" * 40, **kw)
    write_record(res, seed=3, scale="cpu", acc_last=74.0, commit="a" * 40, subdir="copy2", **kw)
    out = rp.report(res, tmp_path / "plots", figures=False)
    assert sorted(k for k in out.tables if k.startswith("table3")) == ["table3_cpu.md", "table3_smoke.md"]
    smoke = cell(rows(tmp_path / "plots" / "table3_smoke.csv"), dataset="cifar10", method="gce", noise="sym0.2")
    assert (smoke["mean"], smoke["n"]) == ("20.0000", "1")
    cpu = [r for r in rows(tmp_path / "plots" / "table3_cpu.csv") if r["method"] == "gce" and r["noise"] == "sym0.2" and r["dataset"] == "cifar10"]
    got = {(r["data"], r["variant"]): (r["mean"], r["n"], r["seeds"]) for r in cpu}
    assert got == {("official", ""): ("90.0000", "1", "1"),
                   ("nonofficial", "aaaaaaaaaa"): ("72.0000", "2", "2 3"),
                   ("nonofficial", "bbbbbbbbbb"): ("72.0000", "1", "2"),
                   ("nonofficial", COMMIT[:10]): ("80.0000", "1", "0")}
    md = out.tables["table3_cpu.md"]
    assert "GCE (aaaaaaaaaa)" in md and "the same seed gave different numbers" in md


def test_experiment_cli_dry_run_and_errors(tmp_results, cli):
    r = cli(["run", "-m", "+experiment=table3", "scale=cpu", "method=ce,gce", "seed=0", "--dry-run"], tmp_results)
    assert r.rc == 0, r.err
    lines = [line for line in r.out.splitlines() if line.startswith("[")]
    # 2 methods x 7 noises x 2 datasets x 2 noise draws (seed=0 narrows the seeds, not the draws)
    assert len(lines) == 2 * 7 * 2 * 2 and all("to run" in line for line in lines)
    assert sum("noise_seed=1" in line for line in lines) == 28
    assert "56 runs: 0 finished, 56 to run" in r.out and not tmp_results.records()
    r = cli(["run", "+experiment=table3", "scale=cpu"], tmp_results)
    assert r.rc == 2 and "defines a sweep; run it with -m" in r.err
    r = cli(["run", "-m", "+experiment=table9"], tmp_results)
    assert r.rc == 2 and "unknown experiment 'table9'" in r.err and "table3" in r.err
    combos = expand(["+experiment=fig3", "scale=cpu"])
    pairs = {(as_dict(c)["method.params.lambda1"], as_dict(c)["method.params.lambda2"]) for c in combos}
    assert len(combos) == 45 and len(pairs) == 9 and ("2.0", "1.0") in pairs


def test_experiment_default_point_is_the_table3_run():
    """Figure 3's (2.0, 1.0) and Figure 1/4's sym0.4 GSS-SB runs are Table 3's runs: one config, one record."""
    from nlbench.config import compose
    from nlbench.spec import build_spec

    base = ["dataset=cifar10", "noise=sym0.4", "method=gss_sb", "seed=0", "scale=cpu"]
    hashes = {build_spec(compose([f"+experiment={e}", *base, *extra])).config_hash
              for e, extra in (("table3", []), ("fig1", []), ("fig4", []),
                               ("fig3", ["method.params.lambda1=2.0", "method.params.lambda2=1.0"]))}
    assert len(hashes) == 1


def test_help_says_what_it_reads_and_writes(cli):
    r = cli(["report", "--help"])
    assert r.rc == 0
    for word in ("--results-dir", "NLBENCH_RESULTS_DIR", "REPORT.md", "table3_<scale>", "paper_data", "never trains"):
        assert word in r.out


def test_paper_numbers_ship_with_the_package():
    vals = rp.paper_values()
    assert vals[("table3", "cifar10", "gss_ssl", ("sym", 0.4))] == (94.20, 0.11)
    assert vals[("table4", "webvision", "dividemix", ("ilsvrc12_top5",))] == (90.76, None)
    assert sum(k[0] == "table3" for k in vals) == 98 and sum(k[0] == "table4" for k in vals) == 35


def test_a_run_with_a_noisy_val_split_never_fills_a_paper_cell():
    """val_fraction enters a record's config only when set: it must still tell the run apart."""
    from nlbench.report import config_matches as config_agrees

    expected = {"method": "ce", "seed": 0, "train": {"lr": 0.05}}
    assert config_agrees({"method": "ce", "seed": 0, "train": {"lr": 0.05}}, expected)
    assert not config_agrees({"method": "ce", "seed": 0, "train": {"lr": 0.05}, "val_fraction": 0.1}, expected)
    assert config_agrees({"method": "ce", "seed": 0, "train": {"lr": 0.05}, "val_fraction": 0.0}, expected)


def test_summary_merges_performance_keys_and_separates_a_val_split(tmp_path):
    """Runs that differ only in how fast they ran (inference batch) share a cell; a run that held out a
    noisy validation split trained on less data and is its own variant."""
    res = tmp_path / "results"
    kw = dict(method="gce", dataset="digits", noise="sym0.5", scale="cpu")   # a noise outside the digits table
    write_record(res, seed=0, acc_last=80.0, extra=("+train.infer_batch_size=64",), **kw)
    write_record(res, seed=1, acc_last=84.0, **kw)
    write_record(res, seed=2, acc_last=70.0, extra=("val_fraction=0.1",), **kw)
    rp.report(res, tmp_path / "plots", figures=False)
    got = {r["variant"]: (r["last_mean"], r["n"], r["seeds"])
           for r in rows(tmp_path / "plots" / "summary_digits_cpu.csv") if r["method"] == "gce"}
    assert got == {"": ("82.0000", "2", "0 1"), "val_fraction=0.1": ("70.0000", "1", "2")}


def test_auto_settings_match_the_numbers_they_resolved_to(tmp_path):
    """forget_rate: auto is resolved per noise at run time, so a record holds a number: that number is the
    default, not a variant. A float that does differ is shown without binary noise."""
    res = tmp_path / "results"
    # a Table 3 cell: CIFAR-10 sym0.4 resolves auto to 0.36 (= 0.4 * 9 / 10); 0.4 is another experiment
    write_record(res, seed=0, acc_last=60.0, method="jocor", dataset="cifar10", noise="sym0.4",
                 params={"forget_rate": 0.36})
    write_record(res, seed=1, acc_last=50.0, method="jocor", dataset="cifar10", noise="sym0.4",
                 params={"forget_rate": 0.4})
    rp.report(res, tmp_path / "plots", figures=False)
    jc = cell(rows(tmp_path / "plots" / "table3_cpu.csv"), dataset="cifar10", method="jocor", noise="sym0.4")
    assert (jc["mean"], jc["n"], jc["seeds"]) == ("60.0000", "1", "0")
    kw = dict(method="coteaching", dataset="digits", noise="sym0.5", scale="cpu")   # outside the digits table
    write_record(res, seed=0, acc_last=80.0, params={"forget_rate": 0.5 * 9 / 10}, **kw)   # as a run records it
    write_record(res, seed=1, acc_last=84.0, params={"forget_rate": 0.45}, **kw)          # as a user types it
    write_record(res, seed=2, acc_last=70.0, params={"forget_rate": 0.1 + 0.2}, **kw)
    rp.report(res, tmp_path / "plots", figures=False)
    got = {r["variant"]: (r["last_mean"], r["n"]) for r in rows(tmp_path / "plots" / "summary_digits_cpu.csv")}
    assert got == {"": ("82.0000", "2"), "forget_rate=0.3": ("70.0000", "1")}, got


def test_ranking_against_the_paper_counts_only_resolved_pairs(tmp_path):
    """Per Table 3 column: our order and the paper's of the methods that have both. A pair agrees or
    disagrees with the paper only where the 95% t interval of its paired differences (same noise_seed
    and seed, at least 3) excludes zero; the rest are unresolved and listed apart."""
    from nlbench.report.tables import paper_values

    res = tmp_path / "results"

    def w(method, noise, accs, first=1):   # seeds 1, 2, ...: seed 0 chose DivideMix's default (conf/protocol.yaml)
        for s, a in enumerate(accs, start=first):
            write_record(res, method=method, dataset="cifar10", noise=noise, seed=s, acc_last=a)

    w("gce", "sym0.4", [70.0, 72.0, 71.0]), w("coteaching", "sym0.4", [74.0, 76.0, 75.5])   # +4, +4, +4.5
    w("dividemix", "sym0.4", [73.0], first=3)                                              # 1 shared run
    w("gce", "sym0.8", [50.0, 52.0, 51.0]), w("jocor", "sym0.8", [47.0, 49.0, 48.5])       # -3, -3, -2.5
    w("ce", "sym0.8", [99.0])                                     # no published value: not ranked
    out = tmp_path / "plots"
    rp.report(res, out, figures=False)
    pv = paper_values()
    p = {(m, r): pv[("table3", "cifar10", m, ("sym", r))][0] for m in ("gce", "coteaching", "dividemix", "jocor")
         for r in (0.4, 0.8)}
    assert p["dividemix", 0.4] > p["coteaching", 0.4] > p["gce", 0.4] and p["jocor", 0.8] > p["gce", 0.8]
    md = (out / "table3_cpu_ranking.md").read_text()
    assert "| CIFAR-10 Symmetric 40% | 3 | Co-teaching > DivideMix > GCE | DivideMix > Co-teaching > GCE | 1 | 0 | 2 |" in md
    assert "| CIFAR-10 Symmetric 80% | 2 | GCE > JoCoR | JoCoR > GCE | 0 | 1 | 0 |" in md
    h = 4.3027 * statistics.stdev([-3.0, -3.0, -2.5]) / 3 ** 0.5          # t_{0.975, 2}
    assert (f"CIFAR-10 Symmetric 80%: JoCoR - GCE = -2.83 ± {h:.2f} over 3 shared runs (the paper: "
            f"{p['jocor', 0.8]:.2f} > {p['gce', 0.8]:.2f})") in md.split("Unresolved pairs")[0]
    assert (f"CIFAR-10 Symmetric 40%: DivideMix - Co-teaching = -2.50 over 1 shared runs (the paper: "
            f"{p['dividemix', 0.4]:.2f} > {p['coteaching', 0.4]:.2f})") in md.split("Unresolved pairs")[1]
    assert "CE" not in md.split("| methods |")[1].split("\n\n")[0].replace("Co-teaching", "").replace("GCE", "")
    verdicts = {(r["noise"], r["paper_above"], r["paper_below"]): (r["verdict"], r["n_pairs"])
                for r in rows(out / "table3_cpu_ranking.csv")}
    assert verdicts == {("sym0.4", "coteaching", "gce"): ("agrees", "3"),
                        ("sym0.4", "dividemix", "gce"): ("unresolved", "1"),
                        ("sym0.4", "dividemix", "coteaching"): ("unresolved", "1"),
                        ("sym0.8", "jocor", "gce"): ("disagrees", "3")}
    assert "Ranking against the paper" in (out / "REPORT.md").read_text()


def test_a_table_heading_says_what_its_runs_trained(tmp_path):
    """The scale's description is written for CIFAR; the heading adds the protocol the records ran (digits
    at scale=paper is an MLP on 1,347 images, not a ResNet), with the noisy validation share, each distinct
    protocol once."""
    from nlbench.report.tables import protocol_words, scale_words

    res = tmp_path / "results"
    write_record(res, method="ce", dataset="digits", noise="sym0.4", seed=0, acc_last=80.0, scale="paper")
    write_record(res, method="ce", dataset="digits", noise="sym0.4", seed=1, acc_last=81.0, scale="paper")
    write_record(res, method="ce", dataset="cifar10", noise="sym0.4", seed=0, acc_last=40.0, scale="cpu",
                 val_last=30.0, num_val=500)
    runs, _ = rp.load_runs(res)
    digits = [r for r in runs if r.dataset == "digits"]
    cifar = [r for r in runs if r.dataset == "cifar10"]
    e = digits[0].effective
    want_digits = (f"{e['backbone']} (" + ", ".join(f"{k} {v}" for k, v in sorted(e["backbone_options"].items()))
                   + f"), {e['train']['epochs']} epochs, 5,000 training images, no augmentation")
    assert protocol_words(digits) == want_digits            # two runs, one protocol: said once
    got = protocol_words(cifar)
    assert "5,500 training images (10% held out: noisy validation)" in got, got   # 5,000 trained + 500 held out
    assert got.endswith(", crop+flip"), got
    assert scale_words("paper", digits).endswith("; as run: " + want_digits)
    assert protocol_words(digits + cifar).count(" | ") == 1


def test_a_scale_is_described_by_its_newest_record(tmp_path):
    """Records keep the scale description they ran under; after the wording changes, the heading and the
    report's scale list use the newest record's (by finished_at), whatever order the files load in."""
    import json

    from nlbench.report.page import _scale_descriptions
    from nlbench.report.tables import scale_words

    res = tmp_path / "results"
    for seed, (desc, when) in enumerate([("new words", "2026-12-02T07:00:00+0000"),
                                         ("old words", "2026-11-01T07:00:00+0000"),
                                         ("", "2026-12-03T07:00:00+0000")]):   # newest, but no description
        path = write_record(res, method="ce", dataset="digits", noise="sym0.4", seed=seed, acc_last=80.0,
                            scale="paper")
        rec = json.loads(path.read_text())
        rec["finished_at"] = when
        if desc:
            rec["config"]["scale"] = {"name": "paper", "description": desc}
        path.write_text(json.dumps(rec))
    runs, _ = rp.load_runs(res)
    assert scale_words("paper", runs).startswith("scale=paper (new words); as run: ")
    assert scale_words("paper", list(reversed(runs))).startswith("scale=paper (new words)")
    assert _scale_descriptions(runs) == [("paper", "new words")]


def test_a_dynamics_figure_with_one_empty_panel_draws_the_other(tmp_path):
    """CE logs the CE-loss detector but has no verdict of its own: the detection figure's verdict panel is
    empty, and the loss panel's spread over two seeds must still be drawn (an empty panel once turned the
    numbers into objects and matplotlib's fill_between raised)."""
    import json

    from nlbench.report.figures import dynamics

    res = tmp_path / "results"
    for seed in (0, 1):
        path = write_record(res, method="ce", dataset="cifar10", noise="sym0.4", seed=seed, acc_last=40.0)
        rec = json.loads(path.read_text())
        for h in rec["history"]:
            h["det_loss_auroc"] = 0.8 + 0.01 * seed + 0.001 * h["epoch"]
        path.write_text(json.dumps(rec))
    runs, _ = rp.load_runs(res)
    df = dynamics("detection", [("CE", runs)], tmp_path / "fig", subtitle="test")
    assert (tmp_path / "fig.png").stat().st_size > 0
    loss = df[df.key == "det_loss_auroc"]
    assert set(loss.n) == {2} and (df.key == "det_auroc").sum() == 0
    assert loss["std"].dtype == "float64"
    assert abs(loss["std"].iloc[0] - 0.01 / 2 ** 0.5) < 1e-9          # sample sd of two values 0.01 apart


def test_figures_3_and_4_draw_one_seed_and_diverged_cells(tmp_path):
    """A one-seed cell has no spread (NaN, never an object column that a later change could trip on) and an
    all-diverged cell has no mean; both figures still draw and say n."""
    from nlbench.report.figures import fig3, fig4

    res = tmp_path / "results"
    write_record(res, method="gss_sb", dataset="cifar10", noise="sym0.4", seed=0, acc_last=50.0)
    write_record(res, method="gss_sb", dataset="cifar10", noise="sym0.4", seed=0, acc_last=40.0,
                 params={"lambda1": 0.0})
    write_record(res, method="gss_db", dataset="cifar10", noise="sym0.6", seed=0, acc_last=0.0, status="diverged")
    runs, _ = rp.load_runs(res)
    d3 = fig3(runs, tmp_path / "f3", subtitle="t", n_asked=5)
    d4 = fig4([r for r in runs if r.param("lambda1") != 0.0], tmp_path / "f4", subtitle="t", n_asked=5)  # the
    # report hands each figure only the runs its experiment asks for: no ablation in Figure 4
    for df in (d3, d4):
        assert df["mean"].dtype == "float64" and df["std"].dtype == "float64"
        assert df["std"].isna().all()
    assert sorted(d3[d3.panel == "lambda1"].value) == [0.0, 2.0]          # the ablation and the default
    assert set(d3["mean"]) == {40.0, 50.0}
    div = d4[d4.method == "gss_db"].iloc[0]
    assert div["mean"] != div["mean"] and div.n_diverged == 1                  # NaN: no mean
    assert (tmp_path / "f3.png").exists() and (tmp_path / "f4.png").exists()
