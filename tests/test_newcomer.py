"""What a newcomer hit in a first hour (issue 23), each as a property of the suite: help and list that
come at once, records that say what they do not know, the data copy named once, both spellings of
an experiment, a short ``runs`` table, outside methods that fail with their own error and are
labelled in the report, plain messages, and a full checkpoint disk that ends a run in one line."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SMOKE, make_results, read_json, run_cli
from fixtures_plugins import write_plugin

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_help_and_list_import_only_what_they_need():
    """``--help`` and ``run --help`` print before torch is imported; ``list`` imports the methods
    (torch) but not scikit-learn or SciPy, which only DivideMix's split and the mixup draw use."""
    code = """
import contextlib, io, sys
from nlbench.__main__ import main
heavy = ("torch", "sklearn", "scipy", "pandas", "matplotlib")
out = io.StringIO()
with contextlib.redirect_stdout(out):
    for args in (["--help"], ["run", "--help"], ["validate", "--help"], ["runs", "--help"], ["report", "--help"]):
        assert main(args) == 0, args
print("help:", sorted(m for m in heavy if m in sys.modules))
with contextlib.redirect_stdout(out):
    assert main(["list"]) == 0
print("list:", sorted(m for m in heavy if m in sys.modules))
"""
    p = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "help: []" in p.stdout
    assert "list: ['torch']" in p.stdout


def test_run_help_shows_plus_experiment_and_both_spellings_work(cli, tmp_results):
    r = cli(["run", "--help"])
    assert r.rc == 0 and "+experiment=digits | " in r.out
    assert max(len(line) for line in r.out.splitlines()) <= 100       # a terminal's width
    for key in ("threads=", "logger=", "save_samples=", "val_fraction=", "verbosity=bar"):   # with defaults
        assert key in r.out, key
    lists = {}
    for spelling in ("+experiment=table3", "experiment=table3"):
        r = cli(["run", "-m", spelling, "scale=smoke", "method=gce", "--dry-run"], tmp_results)
        assert r.rc == 0, r.err
        lists[spelling] = [line.split(" -> ")[-1] for line in r.out.splitlines()]   # the record paths
    assert lists["+experiment=table3"] == lists["experiment=table3"]
    assert len(lists["experiment=table3"]) > 2 and "/gce/" in lists["experiment=table3"][0]


def _git_init(path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "f.txt").write_text("x")
    subprocess.run([*git, "-C", str(path), "add", "f.txt"], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-q", "-m", "x"], check=True)


def test_a_copy_without_git_records_null_commit_and_null_dirty(tmp_path):
    from nlbench.runner import _git

    plain = tmp_path / "tarball"          # an unpacked tarball or sdist: no .git
    plain.mkdir()
    assert _git(plain) == {"commit": None, "dirty": None}
    repo = tmp_path / "repo"
    _git_init(repo)
    inside = repo / "unpacked"            # a copy unpacked inside someone else's repository
    inside.mkdir()
    assert _git(inside) == {"commit": None, "dirty": None}
    clean = _git(repo)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (repo / "f.txt").write_text("changed")
    dirty = _git(repo)
    assert {k: dirty[k] for k in ("commit", "dirty")} == {"commit": clean["commit"], "dirty": True}
    # a dirty run keeps a fingerprint of its uncommitted changes: the sha256 of `git diff HEAD`
    diff = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--no-ext-diff", "--binary"],
                          capture_output=True, check=True).stdout
    assert dirty["diff_sha256"] == hashlib.sha256(diff).hexdigest() and dirty["diff_files"] == ["f.txt"]
    (repo / "f.txt").write_text("changed otherwise")
    assert _git(repo)["diff_sha256"] != dirty["diff_sha256"]


def test_validate_and_run_name_the_data_copy_once(cli, tmp_results):
    r = cli(["validate", "-m", *SMOKE, "seed=0,1"], tmp_results)
    assert r.rc == 0, r.err
    lines = [line for line in r.err.splitlines() if line.startswith("data:")]   # stdout: the ok lines only
    assert lines == ["data: digits: embedded (sklearn.datasets.load_digits)"]
    assert [line[:3] for line in r.out.splitlines()] == ["ok:", "ok:"]
    r = cli(["run", *SMOKE, "train.epochs=1", "verbosity=epoch"], tmp_results)
    assert r.rc == 0, r.err
    assert sum(line.startswith("data: digits") for line in r.err.splitlines()) <= 1   # once per process


def test_validate_says_when_cifar_files_fail_the_official_md5s(cli, tmp_results, shared_data):
    from nlbench.data import load_dataset

    md5_ok = load_dataset("cifar10", data_dir=shared_data).meta["md5_ok"]
    r = cli(["validate", *SMOKE, "dataset=cifar10", f"data_dir={shared_data}"], tmp_results)
    assert r.rc == 0, r.err
    (line,) = [line for line in r.err.splitlines() if line.startswith("data:")]
    assert str(shared_data) in line
    assert ("differ from the official MD5s" in line) == (md5_ok is False)
    assert ("MD5 verified" in line) == (md5_ok is True)


def test_runs_shows_only_settings_that_take_two_values(tmp_path, cli):
    from nlbench import store
    from nlbench.runs import SETTING_PREFIXES, SUMMARY
    from report_fixtures import golden_results

    res = tmp_path / "results"
    golden_results(res)
    df = store.load_records(res)
    r = cli(["runs", f"results_dir={res}", "--settings"])
    assert r.rc == 0, r.err
    header = r.out.splitlines()[0].split()
    settings = [c for c in header if c.startswith(SETTING_PREFIXES)]
    assert header[:len(SUMMARY)] == SUMMARY
    for c in settings:   # each shown setting has two values among the rows that have it
        assert df[c].dropna().astype(str).nunique() > 1, c
    hidden = [c for c in df.columns if c.startswith(SETTING_PREFIXES) and c not in header]
    for c in hidden:     # and none of the hidden ones does
        assert df[c].dropna().astype(str).nunique() <= 1, c
    assert "method.lambda1" in settings            # the Figure 3 ablation sweeps it
    assert "method.q" not in header                # GCE's q is 0.7 in every GCE record
    r = cli(["runs", f"results_dir={res}", "--columns", "all"])
    assert len(r.out.splitlines()[0].split()) == len(df.columns)


def test_minutes_are_rounded_in_the_sweep_summary_and_runs():
    from nlbench.sweep import Outcome, summary_table

    text = summary_table([Outcome("seed=0", "completed", 91.5, 0.08328, "r.json"),
                          Outcome("seed=1", "completed", 90.0, 12.5, "s.json")])
    minutes = [line.split()[3] for line in text.splitlines()[1:]]
    assert minutes == ["0.08", "12.50"]


# ------------------------------------------------------------------------------- outside methods
BASE = [a for a in SMOKE if not a.startswith("method=")] + ["train.epochs=1"]


def test_outside_method_errors_name_the_module_or_the_missing_yaml(tmp_path, tmp_results, cli, monkeypatch):
    pkg = write_plugin(tmp_path / "site", "nlbtest_newcomer", "newcomer_ce")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # a wrong module path: the import error, not "unknown method"
    r = cli(["run", *BASE, "method=newcomer_ce", "method_modules=[nlbtest_newcomer.nope]",
             f"method_conf_dirs=[{pkg / 'conf'}]"], tmp_results)
    r.assert_bad_input(["method_modules", "'nlbtest_newcomer.nope'", "ModuleNotFoundError"])
    # the module is right but its yaml folder was not given: say that the yaml is missing
    r = cli(["run", *BASE, "method=newcomer_ce", "method_modules=[nlbtest_newcomer.methods]"], tmp_results)
    r.assert_bad_input(["'newcomer_ce'", "nlbtest_newcomer.methods", "method/newcomer_ce.yaml", "method_conf_dirs"])
    assert not tmp_results.all_files()
    # list takes the same settings
    r = cli(["list", "method_modules=[nlbtest_newcomer.methods]", f"method_conf_dirs=[{pkg / 'conf'}]"])
    assert r.rc == 0, r.err
    lines = dict(line.split(": ", 1) for line in r.out.splitlines())
    assert "newcomer_ce" in lines["methods"].split(", ") and "newcomer_ce" in lines["conf/method"].split(", ")
    cli(["list", "colour=blue"]).assert_bad_input(["'colour=blue'", "method_modules"])


def test_report_labels_an_outside_method_with_its_overrides(tmp_path, cli, monkeypatch):
    from nlbench.report import report

    pkg = write_plugin(tmp_path / "site", "nlbtest_label", "label_ce")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    res = make_results(tmp_path)
    plugin = ["method_modules=[nlbtest_label.methods]", f"method_conf_dirs=[{pkg / 'conf'}]"]
    for extra in (["method=label_ce", *plugin], ["method=ce"]):
        r = run_cli(["run", *BASE, *extra], res)      # train.epochs=1, where smoke has 2
        assert r.rc == 0, r.err
    out = report(res.results, tmp_path / "plots", figures=False)
    md = out.tables["summary_digits_smoke.md"]
    assert "label_ce (train.epochs=1)" in md and "CE (train.epochs=1)" in md


# ------------------------------------------------------------------------------------- messages
def test_results_dir_that_is_a_file_is_named_as_a_file(tmp_path, cli):
    f = tmp_path / "results.txt"
    f.write_text("not a folder")
    r = cli(["run", *SMOKE, f"results_dir={f}", f"checkpoint_dir={tmp_path / 'ck'}"])
    r.assert_bad_input([f"results_dir='{f}'", "is a file, not a folder"])
    cli(["runs", f"results_dir={f}"]).assert_bad_input(["is a file, not a folder"])
    assert f.read_text() == "not a folder"


@pytest.mark.parametrize("args, needles", [
    (["noise=sym", "noise.rate=1.5"], ["noise rate 1.5 is outside [0, 1)"]),
    (["method=gss_bs"], ["unknown method 'gss_bs' (did you mean gss_sb?)", "valid choices"]),
    (["method=dividemx"], ["did you mean dividemix?"]),
])
def test_plain_messages(args, needles, cli, tmp_results):
    cli(["run", *[a for a in SMOKE if not a.startswith(args[0].split("=")[0] + "=")], *args],
        tmp_results).assert_bad_input(needles)
    assert not tmp_results.all_files()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to make a real full disk")
def test_a_full_checkpoint_disk_is_one_line_and_leaves_no_partial_file(tmp_path, cli):
    """The checkpoint's temporary file is pointed at /dev/full, where every write fails with ENOSPC as
    on a full disk: the run ends with one error line naming the folder, no traceback, no partial
    file, a failed record; a finished record beside it is untouched."""
    from nlbench.config import compose
    from nlbench.spec import build_spec

    res = make_results(tmp_path)
    done = run_cli(["run", *SMOKE, "seed=1"], res)
    assert done.rc == 0, done.err
    (finished,) = res.records()
    before = (finished.read_bytes(), finished.stat().st_mtime_ns)

    args = [*SMOKE, "train.epochs=3", *res.overrides]
    tmp = build_spec(compose(args)).checkpoint_path.with_suffix(".tmp")
    tmp.parent.mkdir(parents=True)
    tmp.symlink_to("/dev/full")
    r = cli(["run", *args])
    assert r.rc == 1, r.err
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0] and str(tmp.parent) in errors[0]
    assert "Traceback" not in r.err and "unexpected pos" not in r.err
    assert not os.path.lexists(tmp) and not list(tmp.parent.glob("*.pt"))
    failed = [read_json(p) for p in res.records() if p != finished]
    assert [f["status"] for f in failed] == ["failed"] and "no space left on device" in failed[0]["message"]
    assert (finished.read_bytes(), finished.stat().st_mtime_ns) == before
