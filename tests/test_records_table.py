"""Records as a table: every resolved setting is a column, ``runs`` prints and filters it, and the
record file itself is strict JSON with its summary first."""
from __future__ import annotations

import json
import os

import pytest

from conftest import SMOKE


@pytest.fixture(scope="module")
def lr_q_sweep(tmp_path_factory):
    """A 2 x 2 sweep (train.lr x method.params.q) of GCE on digits, 1 epoch each."""
    from conftest import make_results, run_cli

    res = make_results(tmp_path_factory.mktemp("sweep"))
    r = run_cli(["run", "-m", *[a for a in SMOKE if not a.startswith("method=")], "method=gce",
                 "train.epochs=1", "train.lr=0.05,0.1", "method.params.q=0.5,0.7"], res)
    assert r.rc == 0, r.err
    return res, r


def test_load_records_has_one_column_per_setting(lr_q_sweep):
    from nlbench import store

    res, _ = lr_q_sweep
    df = store.load_records(res.results)
    assert len(df) == 4
    for col in ("method.q", "method.truncated", "method.k", "train.lr", "train.momentum", "train.milestones",
                "train.epochs", "backbone.hidden", "augment.crop_pad", "data.num_train", "data.source",
                "scale", "status", "seed", "noise_seed", "git_commit", "git_dirty", "minutes"):
        assert col in df.columns, col
    assert sorted(df["train.lr"].unique()) == [0.05, 0.1]
    assert sorted(df["method.q"].unique()) == [0.5, 0.7]
    assert set(df["data.num_train"]) == {1347} and set(df["train.epochs"]) == {1}
    assert set(df["train.milestones"]) == {()}        # a list becomes a (hashable) tuple
    # groupby on the swept hyperparameters: one group per combination, each holding one run
    g = df.groupby(["method.q", "train.lr"])["acc_last"].agg(["count", "mean"])
    assert len(g) == 4 and set(g["count"]) == {1}
    from nlbench.runner import _git

    if _git()["commit"]:     # a git checkout
        assert df["git_dirty"].isin([True, False]).all() and df["git_commit"].str.len().eq(40).all()
    else:                    # a copy without git (a tarball, an sdist): unknown, not clean
        assert df["git_dirty"].isna().all() and df["git_commit"].isna().all()
    assert ((df["minutes"] * 60 - df["wall_s"]).abs() < 1e-9).all()   # wall_s / 60, up to float rounding


def test_runs_command_filters_and_chooses_columns(lr_q_sweep, cli):
    res, _ = lr_q_sweep
    r = cli(["runs", f"results_dir={res.results}"])
    assert r.rc == 0, r.err
    header, *rows = r.out.splitlines()
    # the default view fits a 100-column terminal: method, setting, seed, status, headline, minutes
    assert header.split() == ["method", "setting", "seed", "status", "acc_last", "minutes"]
    assert len(rows) == 4 and all(row.split()[5] == "completed" for row in rows)   # setting: 3 words
    assert max(len(line) for line in r.out.splitlines()) <= 100
    # --settings: the summary plus exactly the settings that vary between the rows
    r = cli(["runs", f"results_dir={res.results}", "--settings"])
    header, *rows = r.out.splitlines()
    assert header.split() == ["method", "dataset", "noise", "scale", "seed", "status", "acc_last", "acc_best",
                              "minutes", "method.q", "train.lr"]
    # the report's spelling of the folder works too
    assert cli(["runs", "--results-dir", str(res.results)]).out == cli(["runs", f"results_dir={res.results}"]).out

    r = cli(["runs", f"results_dir={res.results}", "train.lr=0.1", "method.q=0.5", "--columns",
             "method.q,train.lr,acc_last"])
    assert r.rc == 0, r.err
    header, *rows = r.out.splitlines()
    assert header.split() == ["method.q", "train.lr", "acc_last"]
    assert len(rows) == 1 and rows[0].split()[:2] == ["0.5", "0.1"]

    r = cli(["runs", f"results_dir={res.results}", "method.q=0.5,0.7", "train.lr=0.05", "--csv",
             "--columns=method.q,status"])
    lines = r.out.splitlines()
    assert r.rc == 0 and lines[0] == "method.q,status" and sorted(lines[1:]) == ["0.5,completed", "0.7,completed"]


def test_runs_by_counts_each_group_and_sums_its_wall_time(lr_q_sweep, cli):
    import csv
    import gzip
    import io

    from nlbench import store

    res, _ = lr_q_sweep
    recs = [json.loads(p.read_text()) for p in res.records()]
    r = cli(["runs", f"results_dir={res.results}", "--by", "train.lr", "--csv"])
    assert r.rc == 0, r.err
    rows = {row["train.lr"]: row for row in csv.DictReader(io.StringIO(r.out))}
    assert sorted(rows) == ["0.05", "0.1"]
    for lr, row in rows.items():
        mine = [x for x in recs if x["effective"]["train"]["lr"] == float(lr)]
        assert (row["runs"], row["completed"], row["failed"]) == (str(len(mine)), str(len(mine)), "0")
        assert float(row["minutes"]) == pytest.approx(sum(x["wall_s"] for x in mine) / 60, rel=1e-6)
        assert float(row["acc_last"]) == pytest.approx(sum(x["final"]["acc_last"] for x in mine) / len(mine))
    total = sum(x["wall_s"] for x in recs) / 3600
    assert f"4 run(s) in 2 group(s) under {res.results}, {total:.2f} wall hours" in r.err
    # gzipped records (as shipped in results/) count the same
    one = next(iter(res.records()))
    with gzip.open(one.with_suffix(".json.gz"), "wb") as f:
        f.write(one.read_bytes())
    one.unlink()
    try:
        r2 = cli(["runs", f"results_dir={res.results}", "--by", "train.lr", "--csv"])
        assert r2.out == r.out
        assert len(store.load_records(res.results)) == 4
    finally:   # the module's fixture as it was
        one.write_bytes(gzip.decompress(one.with_suffix(".json.gz").read_bytes()))
        one.with_suffix(".json.gz").unlink()
    r3 = cli(["runs", f"results_dir={res.results}", "--by", "nope"])
    assert r3.rc == 2 and "columns: `python -m nlbench runs --columns all --csv | head -1` lists them" in r3.err


@pytest.mark.parametrize("args", [["bogus=1"], ["--columns", "acc_last,nope"]])
def test_runs_command_unknown_column_is_one_error_line(lr_q_sweep, cli, args):
    res, _ = lr_q_sweep
    r = cli(["runs", f"results_dir={res.results}", *args])
    assert r.rc == 2 and len(r.error_lines()) == 1 and r.out == ""
    # short: the closest names and where the full list is, not every column on one line
    assert "runs --help" in r.err and len(r.err) < 400, r.err


def test_runs_unknown_column_suggests_the_close_one(lr_q_sweep, cli):
    res, _ = lr_q_sweep
    r = cli(["runs", f"results_dir={res.results}", "--columns", "train.lrr"])
    assert r.rc == 2 and "did you mean train.lr," in r.err     # closest first


def test_record_is_strict_json_with_the_summary_first(tmp_results, cli):
    # lr 1e6 diverges in the first epoch: the NaN loss must be written as null
    r = cli(["run", *SMOKE, "train.lr=1e6"], tmp_results)
    (path,) = tmp_results.records()
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rec = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert rec["history"][-1]["loss"] is None
    keys = list(rec)
    assert keys[:9] == ["schema_version", "status", "message", "method", "dataset", "scale", "seed",
                        "noise_seed", "final"]
    assert keys[9] == "noise" and keys[-3:] == ["effective", "config", "history"]
    assert r.out.startswith("diverged:")


def test_sanitize_turns_non_finite_floats_into_null_everywhere():
    import numpy as np

    from nlbench.store import sanitize

    obj = {"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": (np.float32("nan"), 2),
           "e": np.float64(1.5), "f": np.int64(3), "g": True, "h": "NaN"}
    assert sanitize(obj) == {"a": None, "b": [1.0, None, {"c": None}], "d": [None, 2], "e": 1.5, "f": 3,
                             "g": True, "h": "NaN"}
    json.dumps(sanitize(obj), allow_nan=False)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes only")
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_a_record_is_as_readable_as_any_file_the_user_writes(tmp_path, mask):
    from nlbench.store import atomic_write_json

    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = (tmp_path / "r.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~mask
