"""One process per run: a second process that reaches a running cell leaves it alone, a dead holder
never blocks, and a finished run leaves no lock file behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, SMOKE

pytest.importorskip("fcntl")

from nlbench.runlock import RunBusy, RunLock  # noqa: E402

HOLD = ("import sys; from nlbench.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.read()")


def _holder(path):
    """A separate process that takes the lock on ``path`` and keeps it until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, cwd=ROOT)
    assert p.stdout.readline().strip() == "held"
    return p


def test_the_second_holder_is_refused_and_told_who_holds_it(tmp_path):
    path = tmp_path / "a" / "seed0.lock"
    first = RunLock(path).acquire()
    with pytest.raises(RunBusy) as e:
        RunLock(path).acquire()
    assert f"pid {os.getpid()}" in str(e.value) and str(path) in str(e.value)
    first.release()
    assert not path.exists()
    with RunLock(path):   # free again once released
        assert path.exists()
    assert not path.exists()


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    path = tmp_path / "seed0.lock"
    p = _holder(path)
    with pytest.raises(RunBusy, match=f"pid {p.pid}"):
        RunLock(path).acquire()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert path.exists(), "kill -9 leaves the file behind"
    with RunLock(path):   # ... but not the lock
        pass
    assert not path.exists()


def test_a_run_whose_cell_is_held_elsewhere_writes_nothing_and_a_later_run_finishes(tmp_results, cli):
    from nlbench.config import compose
    from nlbench.spec import build_spec

    args = [*SMOKE, "threads=1", *tmp_results.overrides]
    lock = build_spec(compose(args)).checkpoint_path.with_suffix(".lock")
    p = _holder(lock)
    try:
        r = cli(["run", *args])
        assert r.rc == 1 and r.out.startswith("busy:"), (r.out, r.err)
        assert f"pid {p.pid}" in r.out and "left alone" in r.out
        assert not tmp_results.records() and tmp_results.checkpoint_files() == [lock]

        r = cli(["run", "-m", *args, "seed=0,1"])   # in a sweep: the held member is left, the other runs
        assert r.rc == 1 and "1 member(s) were running in another process" in r.err, r.err
        assert "skipped-busy" in r.out and len(tmp_results.records()) == 1
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    r = cli(["run", "-m", *args, "seed=0,1"])   # the holder died: its stale file blocks nothing
    assert r.rc == 0, r.err
    assert len(tmp_results.records()) == 2 and not list(tmp_results.checkpoints.rglob("*"))


def test_runs_unfinished_lists_resumable_and_running_cells(tmp_results, cli):
    """A run stopped after epoch 1 of 2 shows as resumable with its epoch; while another process holds its
    lock it shows as running with that process; once it finishes it is gone from the list."""
    from nlbench.config import compose
    from nlbench.spec import build_spec

    args = [*SMOKE, "threads=1", *tmp_results.overrides]
    r = cli(["run", *args, "interrupt_after=1"])   # stops as if killed after epoch 1, checkpoint kept
    assert r.out.startswith("interrupted:"), (r.out, r.err)
    spec = build_spec(compose(args))
    cell = spec.checkpoint_path.relative_to(tmp_results.checkpoints).with_suffix("").as_posix()
    ck = [f"checkpoint_dir={tmp_results.checkpoints}"]
    r = cli(["runs", "--unfinished", *ck])
    assert r.rc == 0 and cell in r.out, (r.out, r.err)
    header = r.out.splitlines()[0].split()
    row = dict(zip(header, next(line for line in r.out.splitlines() if cell in line).split()))
    assert row["state"] == "resumable" and row["epoch"] == f"1/{spec.train.epochs}"
    # one epoch done of two at its pace so far: the minutes left equal the minutes spent (1 decimal each)
    assert float(row["eta_min"]) == pytest.approx(float(row["minutes"]) * (spec.train.epochs - 1), abs=0.11)
    assert not spec.checkpoint_path.with_suffix(".lock").exists(), "looking at a lock never creates one"
    # a second stopped run of the same cell with another lr: the setting that tells them apart is shown
    args2 = [*args, "train.lr=0.123"]
    assert cli(["run", *args2, "interrupt_after=1"]).out.startswith("interrupted:")
    r2 = cli(["runs", "--unfinished", *ck])
    head2 = r2.out.splitlines()[0].split()
    assert head2[-1] == "train.lr" and "method.q" not in head2, head2   # only what differs between the rows
    lrs = sorted(line.split()[-1] for line in r2.out.splitlines()[1:])
    assert lrs == sorted([str(spec.train.lr), "0.123"]), r2.out
    spec2 = build_spec(compose(args2))
    spec2.checkpoint_path.unlink()
    p = _holder(spec.checkpoint_path.with_suffix(".lock"))
    try:
        r = cli(["runs", "--unfinished", *ck])
        assert f"running (pid {p.pid}" in r.out, r.out
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert cli(["run", *args]).rc == 0
    r = cli(["runs", "--unfinished", *ck])
    assert r.rc == 0 and cell not in r.out and "no unfinished runs" in r.err
    r = cli(["runs", "--unfinished", "--csv"])
    r.assert_bad_input(["'--csv'", "checkpoint_dir=PATH"])
