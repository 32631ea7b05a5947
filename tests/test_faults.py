"""Faults a crash tester found (issue 43): damaged checkpoints, malformed records, SIGTERM, full disks,
leftover temp files, shared folders, unreadable data, non-finite values, durability. Each test drives the
real CLI on the smallest run (digits, scale=smoke) and simulates an OS fault only at the OS boundary."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import SMOKE, make_results, read_json, run_cli

TIMING = ("seconds", "train_seconds")


def _history(rec: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in rec["history"]]


def _only_record(res) -> dict:
    (path,) = res.records()
    return read_json(path)


@pytest.fixture(scope="module")
def twin_3ep(tmp_path_factory) -> dict:
    """An uninterrupted 3-epoch ce run: what every resumed run must equal."""
    res = make_results(tmp_path_factory.mktemp("twin3"))
    r = run_cli(["run", *SMOKE, "train.epochs=3"], res)
    assert r.rc == 0, r.err
    return _only_record(res)


def _same_run(rec: dict, twin: dict) -> bool:
    return (rec["status"] == "completed" and _history(rec) == _history(twin) and rec["final"] == twin["final"]
            and rec["config_hash"] == twin["config_hash"])


# ----------------------------------------------------------------------------- 1. damaged checkpoint
def test_a_bit_flipped_checkpoint_is_refused_and_the_run_equals_its_twin(tmp_path, twin_3ep):
    res = make_results(tmp_path)
    r = run_cli(["run", *SMOKE, "train.epochs=3", "interrupt_after=1"], res)
    assert r.rc == 0 and r.out.startswith("interrupted:"), r.err
    (ck,) = res.checkpoint_files()
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0x10          # one bit, in the torch payload (past the header)
    ck.write_bytes(bytes(data))

    r = run_cli(["run", *SMOKE, "train.epochs=3"], res)
    assert r.rc == 0, r.err
    said = [line for line in r.err.splitlines() if str(ck) in line]
    assert len(said) == 1 and "sha256" in said[0] and "starting from scratch" in said[0], r.err
    assert "resumed from" not in r.err and "epoch 1/3" in r.err
    assert _same_run(_only_record(res), twin_3ep)
    assert not res.checkpoint_files()


def test_an_intact_checkpoint_still_resumes(tmp_path, twin_3ep):
    res = make_results(tmp_path)
    assert run_cli(["run", *SMOKE, "train.epochs=3", "interrupt_after=2"], res).rc == 0
    r = run_cli(["run", *SMOKE, "train.epochs=3"], res)
    assert r.rc == 0 and "resumed from" in r.err and "after epoch 2" in r.err, r.err
    assert _same_run(_only_record(res), twin_3ep)


# ----------------------------------------------------------------------------- 9. durability
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fsynced descriptors through /proc (Linux)")
def test_checkpoints_and_records_are_fsynced_around_their_rename(tmp_path, monkeypatch):
    """Each checkpoint and the record: the temp file is fsynced before it is renamed into place, and the
    folder after (so a power loss loses at most the run in progress). The calls are observed, not replaced."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    res = make_results(tmp_path)
    r = run_cli(["run", *SMOKE, "train.epochs=2"], res)
    assert r.rc == 0, r.err
    (record,) = res.records()
    renames = [i for i, e in enumerate(events) if e[0] == "replace"]
    targets = [events[i][2] for i in renames]
    assert any(t.endswith(".pt") for t in targets) and str(record) in targets, events
    for i in renames:
        _, src, dst = events[i]
        assert ("fsync", src) in events[:i], (src, events)                      # the content, before
        assert ("fsync", str(Path(dst).parent)) in events[i + 1:], (dst, events)   # the folder entry, after


# ----------------------------------------------------------------------------- 2. malformed records
def _record_path(res, *args):
    from nlbench.config import compose
    from nlbench.spec import build_spec

    return build_spec(compose([*SMOKE, *args, *res.overrides])).record_path


@pytest.fixture(scope="module")
def finished_1ep(tmp_path_factory):
    """A finished 1-epoch record (seed 1) to sit beside the malformed one."""
    res = make_results(tmp_path_factory.mktemp("fin1"))
    assert run_cli(["run", *SMOKE, "train.epochs=1", "seed=1"], res).rc == 0
    (path,) = res.records()
    return path


def _shapes(good: Path) -> dict[str, str]:
    import json

    real = json.loads(good.read_text())
    return {"array": "[]", "number": "7", "final_only": '{"final": "oops"}',
            "final_string": json.dumps({**real, "final": "oops"}),
            "history_string": json.dumps({**real, "history": "oops"})}


SHAPE_WHY = {"array": "not a JSON object", "number": "not a JSON object", "final_only": "no schema_version",
             "final_string": "final is a string, not an object", "history_string": "history is a string"}


@pytest.mark.parametrize("shape", list(SHAPE_WHY))
def test_a_record_of_the_wrong_shape_is_named_and_skipped_everywhere(shape, tmp_path, finished_1ep):
    res = make_results(tmp_path)
    args = ["train.epochs=1"]
    bad = _record_path(res, *args)
    bad.parent.mkdir(parents=True)
    bad.write_text(_shapes(finished_1ep)[shape])
    good = bad.with_name(finished_1ep.name)   # a usable record beside it
    good.write_bytes(finished_1ep.read_bytes())

    r = run_cli(["runs", f"results_dir={res.results}"])
    assert r.rc == 0 and "Traceback" not in r.err, r.err
    warned = [line for line in r.err.splitlines() if str(bad) in line]
    assert len(warned) == 1 and SHAPE_WHY[shape] in warned[0], r.err
    assert "1 run(s)" in r.err and "completed" in r.out

    r = run_cli(["run", "--dry-run", *SMOKE, *args], res)
    assert r.rc == 0 and "to run" in r.out and "0 finished, 1 to run" in r.out, (r.out, r.err)
    assert [line for line in r.err.splitlines() if str(bad) in line and SHAPE_WHY[shape] in line], r.err

    r = run_cli(["run", "-m", *SMOKE, *args, "seed=0,1"], res)   # a sweep: seed 1 is finished, seed 0 replaces the bad file
    assert r.rc == 0, (r.out, r.err)
    assert "Traceback" not in r.err and str(bad) in r.err
    assert read_json(bad)["status"] == "completed" and "skipped-completed" in r.out

    bad.write_text(_shapes(finished_1ep)[shape])
    r = run_cli(["run", *SMOKE, *args], res)                      # a single run does the same
    assert r.rc == 0 and r.out.startswith("completed:"), (r.out, r.err)
    assert sum(str(bad) in line and SHAPE_WHY[shape] in line for line in r.err.splitlines()) == 1, r.err
    assert read_json(bad)["status"] == "completed"


# ----------------------------------------------------------------------------- 3. SIGTERM
def _start(args: list[str], res) -> "subprocess.Popen":
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    res.results.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "nlbench", "run", *args, *res.overrides], cwd=res.results.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _term_after(p, needle: str) -> tuple[str, str]:
    """Read the child's stderr until a line contains ``needle``, send SIGTERM, return (stdout, stderr)."""
    import signal

    seen = []
    for line in p.stderr:
        seen.append(line)
        if needle in line:
            p.send_signal(signal.SIGTERM)
            break
    out, err = p.communicate(timeout=120)
    return out, "".join(seen) + err


def test_sigterm_keeps_the_checkpoint_says_one_line_and_the_same_command_resumes(tmp_path):
    res = make_results(tmp_path / "run")
    args = [*SMOKE, "train.epochs=40", "threads=1", "verbosity=epoch"]
    p = _start(args, res)
    out, err = _term_after(p, "epoch 3/40")
    assert p.returncode == 143, err
    assert "Traceback" not in err and out == ""
    said = [line for line in err.splitlines() if not line.startswith(("epoch ", "data: "))]
    assert len(said) == 1 and said[0].startswith("terminated (SIGTERM)") and "rerun the same command" in said[0], err
    (ck,) = res.checkpoint_files()          # the last epoch checkpoint, no lock, no temp file
    assert ck.suffix == ".pt" and not res.records()

    r = run_cli(["run", *args], res)         # what a requeued Slurm job runs: the same command
    assert r.rc == 0 and "resumed from" in r.err, r.err
    twin = make_results(tmp_path / "twin")
    assert run_cli(["run", *args], twin).rc == 0
    assert _same_run(_only_record(res), _only_record(twin))
    assert not res.checkpoint_files()


def test_sigterm_in_a_sweep_prints_the_summary_and_releases_the_lock(tmp_path):
    res = make_results(tmp_path)
    p = _start([*SMOKE, "-m", "train.epochs=40", "seed=0,1", "threads=1", "verbosity=epoch"], res)
    out, err = _term_after(p, "epoch 3/40")
    assert p.returncode == 143, err
    assert "sweep summary (2 members, stopped)" in out, (out, err)
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("seed=")}
    assert rows == {"seed=0": "interrupted", "seed=1": "not-run"}, out
    assert [f.suffix for f in res.checkpoint_files()] == [".pt"] and not res.records()
    assert len([line for line in err.splitlines() if line.startswith("terminated (SIGTERM)")]) == 1


# ----------------------------------------------------------------------------- 4. full disk
def _fake_disk(monkeypatch, full: Path, *, when=lambda: True, free: int = 4096):
    """``shutil.disk_usage`` (the OS's statvfs) reports ``free`` bytes for folders under ``full`` while
    ``when()`` holds; everything else is asked of the real disk."""
    import shutil

    real = shutil.disk_usage

    def disk_usage(path):
        u = real(path)
        p = Path(path).absolute()
        if (p == full or full in p.parents) and when():
            return type(u)(u.total, u.total - free, free)
        return u

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


@pytest.mark.parametrize("which", ["checkpoints", "results"])
def test_a_full_disk_is_found_before_the_first_epoch(which, tmp_path, monkeypatch):
    res = make_results(tmp_path)
    _fake_disk(monkeypatch, getattr(res, which))
    r = run_cli(["run", *SMOKE, "train.epochs=3"], res)
    r.assert_bad_input([f"not enough free space in {getattr(res, which)}", "4.0 KiB free", "needs about",
                        "checkpoint_dir" if which == "checkpoints" else "results_dir"])
    assert "epoch 1/" not in r.err and "Traceback" not in r.err and r.out == ""
    assert not res.all_files()


def test_a_disk_that_fills_during_the_run_stops_it_after_the_checkpoint_and_it_resumes(tmp_path, monkeypatch,
                                                                                      twin_3ep):
    """Room for the estimate at the start; then (another job filled the disk) too little once epoch 1's
    checkpoint shows the real size: exit 2 before epoch 2 trains, the checkpoint whole, no record; with
    space again the same command resumes and equals the uninterrupted run."""
    res = make_results(tmp_path)
    _fake_disk(monkeypatch, res.checkpoints, when=lambda: bool(list(res.checkpoints.rglob("*.pt"))))
    r = run_cli(["run", *SMOKE, "train.epochs=3"], res)
    r.assert_bad_input([f"not enough free space in {res.checkpoints}", "checkpoint"])
    assert "epoch 1/3" in r.err and "epoch 2/3" not in r.err and "Traceback" not in r.err
    (ck,) = res.checkpoint_files()
    assert ck.suffix == ".pt" and not res.records()
    monkeypatch.undo()
    r = run_cli(["run", *SMOKE, "train.epochs=3"], res)
    assert r.rc == 0 and "resumed from" in r.err, r.err
    assert _same_run(_only_record(res), twin_3ep)


# ----------------------------------------------------------------------------- 5. leftovers
def test_temp_files_a_killed_run_left_are_removed_when_its_cell_starts_again(tmp_path):
    import signal
    import subprocess
    import sys

    from conftest import ROOT
    from nlbench.config import compose
    from nlbench.spec import build_spec

    res = make_results(tmp_path)
    args = [*SMOKE, "train.epochs=2", *res.overrides]
    spec = build_spec(compose(args))
    rec, ck = spec.record_path, spec.checkpoint_path
    rec.parent.mkdir(parents=True)
    ck.parent.mkdir(parents=True)
    mine = [rec.with_name(f".{rec.name}.k3x9q.tmp"), ck.with_suffix(".tmp")]
    other = build_spec(compose([*args, "seed=1"]))
    theirs = [other.record_path.with_name(f".{other.record_path.name}.a1b2c.tmp"), other.checkpoint_path.with_suffix(".tmp")]
    for p in mine + theirs:
        p.write_bytes(b"")                   # what a kill during the write leaves

    # while another process holds the cell, nothing of it is touched
    hold = ("import sys; from nlbench.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(ck.with_suffix(".lock"))], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_cli(["run", *args])
        assert r.rc == 1 and r.out.startswith("busy:")
        assert all(p.exists() for p in mine + theirs)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    r = run_cli(["run", *args])
    assert r.rc == 0, r.err
    assert not any(p.exists() for p in mine), r.err
    assert all(p.exists() for p in theirs), "another cell's files are its own business"
    assert "removed 2 temp file(s)" in r.err


# ----------------------------------------------------------------------------- 6. shared folders
@pytest.mark.parametrize("mode", [0o2777, 0o1777])
def test_a_shared_checkpoint_dir_keeps_its_permissions_after_a_run(mode, tmp_path):
    res = make_results(tmp_path)
    res.checkpoints.mkdir()
    os.chmod(res.checkpoints, mode)          # what an admin sets on a shared folder
    r = run_cli(["run", *SMOKE, "train.epochs=2"], res)
    assert r.rc == 0, r.err
    assert res.checkpoints.is_dir() and (res.checkpoints.stat().st_mode & 0o7777) == mode
    assert not list(res.checkpoints.iterdir()), "the run's own cell folders are removed"


def _deny_writes(folder: Path):
    """Make ``folder`` refuse new files for real: ``chattr +i`` (refuses root too), else chmod for a
    non-root user. Returns the undo, or skips when neither is possible here."""
    import shutil
    import subprocess

    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return lambda: os.chmod(folder, 0o755)
    pytest.skip("cannot make a folder unwritable here (root without chattr +i)")


@pytest.mark.parametrize("which", ["record", "checkpoint"])
def test_a_cell_folder_that_refuses_writes_is_found_before_training(which, tmp_path):
    """A shared results tree whose cell folder belongs to another user: exit 2 naming it, before epoch 1."""
    from nlbench.config import compose
    from nlbench.spec import build_spec

    res = make_results(tmp_path)
    spec = build_spec(compose([*SMOKE, *res.overrides]))
    cell = (spec.record_path if which == "record" else spec.checkpoint_path).parent
    cell.mkdir(parents=True)
    undo = _deny_writes(cell)
    try:
        r = run_cli(["run", *SMOKE], res)
        r.assert_bad_input([str(cell), "is not writable", "results_dir" if which == "record" else "checkpoint_dir"])
        assert "epoch 1/" not in r.err and not res.all_files()
        r = run_cli(["run", "-m", *SMOKE, "seed=0,1"], res)      # a sweep: found while validating, nothing runs
        r.assert_bad_input([str(cell), "is not writable"])
        assert "epoch 1/" not in r.err and not res.all_files()
    finally:
        undo()


# ----------------------------------------------------------------------------- 7. unreadable data
def _refuse_reading(monkeypatch, path: Path):
    """Reading ``path`` (a file, or anything inside a folder) fails with the OS's permission error: for real
    (chmod 000) for a non-root user; as root, whom chmod does not stop, where the OS would refuse it: the
    data module's ``open`` for a file, ``stat`` below a folder (what a folder without search access does)."""
    import builtins
    import errno
    import pathlib

    import nlbench.data

    if os.geteuid() != 0:
        os.chmod(path, 0)
        return

    is_file = path.is_file()

    def refused(file) -> bool:
        p = Path(file).absolute()
        return p == path.absolute() if is_file else path.absolute() in p.parents

    def deny(file):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))

    real_open, real_stat = builtins.open, pathlib.Path.stat
    monkeypatch.setattr(nlbench.data, "open", lambda f, *a, **kw: deny(f) if refused(f) else real_open(f, *a, **kw),
                        raising=False)
    if path.is_dir():
        monkeypatch.setattr(pathlib.Path, "stat", lambda self, **kw: deny(self) if refused(self) else real_stat(self, **kw))


@pytest.mark.parametrize("what", ["file", "folder"])
@pytest.mark.parametrize("sweep", [False, True])
def test_unreadable_cifar_is_one_line_exit_2_and_no_record(sweep, what, tmp_path, monkeypatch):
    from conftest import write_cifar10

    data = write_cifar10(tmp_path / "data")
    bad = data / "cifar-10-batches-py" / "data_batch_2" if what == "file" else data / "cifar-10-batches-py"
    _refuse_reading(monkeypatch, bad)
    res = make_results(tmp_path)
    args = [*SMOKE, "dataset=cifar10", f"data_dir={data}"]
    try:
        r = run_cli(["run", *(["-m", *args, "seed=0,1"] if sweep else args)], res)
    finally:
        monkeypatch.undo()
        os.chmod(bad, 0o755)
    r.assert_bad_input([str(bad), "is not readable", "Permission denied"])
    assert "corrupt" not in r.err and "Traceback" not in r.err and r.err.count("\n") == 1, r.err
    assert not res.records() and not res.checkpoint_files()


# ----------------------------------------------------------------------------- 8. values that crash later
@pytest.mark.parametrize("cmd", ["run", "validate", "dry-run", "sweep"])
@pytest.mark.parametrize("arg, needles", [
    ("method.params.lambda2=inf", ["method.params.lambda2=inf", "not a finite number"]),
    ("method.params.lambda1=nan", ["method.params.lambda1=nan", "not a finite number"]),
    ("train.lr=inf", ["train.lr=inf", "not a finite number"]),
    ("method.params.lambda1=-1", ["lambda1", "-1", "outside [0, inf]"]),   # the method's own range check
])
def test_values_that_pass_validation_and_crash_later_are_refused_up_front(cmd, arg, needles, tmp_path):
    res = make_results(tmp_path)
    args = ["method=gss_sb", *[a for a in SMOKE if not a.startswith("method=")], arg]
    argv = {"run": ["run", *args], "validate": ["validate", *args], "dry-run": ["run", "--dry-run", *args],
            "sweep": ["run", "-m", *args, "seed=0,1"]}[cmd]
    r = run_cli(argv, res)
    r.assert_bad_input(needles)
    assert "epoch 1/" not in r.err and "to run" not in r.out and not res.all_files()
