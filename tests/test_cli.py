"""The command line: run / skip / force, list, validate, multirun, divergence, and bad input.

Every bad input must exit with code 2, print exactly one ``error:`` line naming the bad value and what
would have been valid, and write nothing (no record, no checkpoint).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, SMOKE, read_json, write_cifar10


def test_subprocess_run_writes_record_then_skips_unless_forced(tmp_results, cli):
    """The one true subprocess test: ``python -m nlbench run`` on digits at scale=smoke."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "nlbench", "run", *SMOKE, *tmp_results.overrides],
                       cwd=tmp_results.results.parent, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    recs = tmp_results.records()
    assert len(recs) == 1
    rec = read_json(recs[0])
    assert rec["status"] == "completed" and rec["method"] == "ce" and rec["dataset"] == "digits"
    assert rec["scale"] == "smoke" and len(rec["history"]) == 2
    acc = rec["final"]["acc_last"]
    assert f"{acc:.2f}%" in p.stdout and str(recs[0]) in p.stdout
    assert not tmp_results.checkpoint_files(), "a finished run leaves no checkpoint"

    # rerun: skipped, the record untouched
    mtime = recs[0].stat().st_mtime_ns
    r = cli(["run", *SMOKE], tmp_results)
    assert r.rc == 0 and "not trained: a finished record of this run exists" in r.err and "epoch 1/" not in r.err
    assert f"{acc:.2f}%" in r.out and str(recs[0]) in r.out
    assert recs[0].stat().st_mtime_ns == mtime
    # force=true retrains (same config hash: force does not change the experiment)
    r = cli(["run", *SMOKE, "force=true"], tmp_results)
    assert r.rc == 0 and "not trained" not in r.err and "epoch 2/2" in r.err
    assert tmp_results.records() == recs and recs[0].stat().st_mtime_ns != mtime
    assert read_json(recs[0])["final"]["acc_last"] == acc   # and it is deterministic


def test_a_shipped_record_never_stands_in_for_a_users_run_unless_reused(tmp_results, cli):
    """The repository ships reference records as ``*.json.gz``. A user's run trains anyway and writes its
    own record beside the shipped one, which stays (every reader takes the user's); ``reuse=true`` is the
    opt-in that counts a shipped record as finished, so rerunning a shipped grid trains nothing, and says
    so even with verbosity=quiet."""
    import gzip

    assert cli(["run", *SMOKE], tmp_results).rc == 0
    (plain,) = tmp_results.records()
    acc = read_json(plain)["final"]["acc_last"]
    shipped = plain.with_name(plain.name + ".gz")
    shipped.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()                                      # what the ship step leaves: only the .json.gz

    listing = cli(["run", "--dry-run", *SMOKE, "reuse=true"], tmp_results)
    assert listing.rc == 0 and "1 runs: 1 finished, 0 to run" in listing.out and str(shipped) in listing.out
    r = cli(["run", *SMOKE, "reuse=true", "verbosity=quiet"], tmp_results)
    assert r.rc == 0 and "epoch 1/" not in r.err
    assert f"not trained: reusing the shipped reference record {shipped} (reuse=true" in r.err
    assert r.out.startswith("completed (not trained now: an existing record)") and "when recorded" in r.out
    assert f"{acc:.2f}%" in r.out and str(shipped) in r.out
    assert tmp_results.records() == [] and shipped.is_file()   # nothing written beside it

    listing = cli(["run", "--dry-run", *SMOKE], tmp_results)       # the default: the user's run is to run
    assert "1 runs: 0 finished, 1 to run" in listing.out
    r = cli(["run", *SMOKE], tmp_results)
    assert r.rc == 0 and "epoch 2/2" in r.err and "not trained" not in r.err + r.out
    assert tmp_results.records() == [plain] and shipped.is_file()   # the reference stays, the user's beside it
    assert read_json(plain)["final"]["acc_last"] == acc
    from nlbench.store import load_records
    assert list(load_records(tmp_results.results)["path"].map(lambda p: str(p).endswith(".json"))) == [True]


def test_list_prints_every_registry(cli):
    import methods  # noqa: F401
    from nlbench.config import GROUPS, group_choices
    from nlbench.backbones import BACKBONES
    from nlbench.data import DATASETS
    from nlbench.method import METHODS
    from nlbench.noise import NOISE

    r = cli(["list"])
    assert r.rc == 0
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in r.out.splitlines() if ":" in line}
    for title, reg in (("methods", METHODS), ("datasets", DATASETS), ("noise models", NOISE),
                       ("backbones", BACKBONES)):
        assert set(reg.names()) <= {s.strip() for s in lines[title].split(",")}, title
    for g in GROUPS:
        assert set(group_choices(g)) <= {s.strip() for s in lines[f"conf/{g}"].split(",")}, g
    assert "ce" in METHODS.names() and "digits" in DATASETS.names()


def test_validate_summarises_without_training(tmp_results, cli):
    r = cli(["validate", *SMOKE, "noise=sym0.4", "seed=3"], tmp_results)
    assert r.rc == 0, r.err
    assert r.out.startswith("ok: method=ce dataset=digits (1347 train) noise=sym0.4 actual_rate=0.3")
    assert "scale=smoke" in r.out and "epochs=2" in r.out and "seed3-" in r.out
    assert "epoch 1/" not in r.err
    assert not tmp_results.all_files()


def test_validate_synthetic_cifar100_superclass_noise(tmp_results, cli, cifar100_dir):
    r = cli(["validate", *SMOKE, "dataset=cifar100", "noise=asym_super0.4", f"data_dir={cifar100_dir}"],
            tmp_results)
    assert r.rc == 0, r.err
    # 8 per class x 100 classes, exactly round(0.4 * 8) = 3 flipped per class
    assert "(800 train)" in r.out and "actual_rate=0.375 " in r.out
    assert not tmp_results.all_files()


def test_multirun_writes_one_record_per_seed(tmp_results, cli):
    r = cli(["run", "-m", *SMOKE, "train.epochs=1", "seed=0,1"], tmp_results)
    assert r.rc == 0, r.err
    assert "[1/2]" in r.err and "[2/2]" in r.err
    recs = tmp_results.records()
    assert sorted(p.name.split("-")[0] for p in recs) == ["seed0", "seed1"]
    assert {read_json(p)["status"] for p in recs} == {"completed"}
    assert len({read_json(p)["config_hash"] for p in recs}) == 2


def test_diverging_run_is_recorded_as_diverged(tmp_results, cli):
    # lr 1e6 with SGD on the digits MLP: the loss is NaN within the first epoch
    r = cli(["run", *SMOKE, "train.lr=1e6"], tmp_results)
    assert r.rc == 3, r.err             # a diverged run has its own exit code
    (path,) = tmp_results.records()
    rec = read_json(path)
    assert rec["status"] == "diverged"
    assert "non-finite" in rec["message"]
    assert rec["history"][-1]["loss"] is None   # NaN, written as null
    assert r.out.startswith("diverged:") and str(path) in r.out
    assert not tmp_results.checkpoint_files()
    # a diverged run is final: rerunning skips it
    again = cli(["run", *SMOKE, "train.lr=1e6"], tmp_results)
    assert again.rc == 3 and "not trained: a finished record of this run exists" in again.err


# ------------------------------------------------------------------------------------ bad input
def _corrupt_cifar10(tmp_path):
    root = write_cifar10(tmp_path / "corrupt")
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x00garbage, not a pickle\xff" * 40)
    return root


BAD = {
    # id: (extra args, substrings the single error line must contain)
    "method": (["method=nope"], ["'nope'", "valid choices", "ce"]),
    "dataset": (["dataset=cifar11"], ["'cifar11'", "valid choices", "cifar10", "digits"]),
    "noise": (["noise=sym0.3"], ["'sym0.3'", "valid choices", "sym0.4", "asym0.4"]),
    "backbone": (["backbone=resnet19"], ["'resnet19'", "valid choices", "resnet18_cifar", "mlp"]),
    "scale": (["scale=huge"], ["'huge'", "valid choices", "smoke", "paper"]),
    "rate_high": (["noise.rate=1.5"], ["1.5", "[0, 1)"]),
    "rate_negative": (["noise.rate=-0.1"], ["-0.1", "[0, 1)"]),
    "train_key": (["train.bogus=1"], ["bogus", "valid keys", "epochs", "lr", "warmup_epochs"]),
    "train_key_plus": (["+train.bogus=1"], ["bogus", "valid keys", "epochs"]),
    "top_key": (["bogus=1"], ["'bogus'", "valid keys", "seed", "train"]),
    "train_type": (["train.epochs=abc"], ["train.epochs", "integer", "'abc'"]),
    "seed_type": (["seed=x"], ["seed", "integer", "'x'"]),
    "noise_not_for_dataset": (["noise=asym_super0.4"], ["asym_super0.4", "digits", "cifar100"]),
    "method_param": (["+method.params.bogus=1"], ["'bogus'", "valid parameters"]),
    "method_param_noplus": (["method.params.bogus=1"], ["'bogus'", "valid parameters"]),
    "empty_data_dir": (["dataset=cifar10", "data_dir={tmp}/empty"],
                       ["cifar-10-batches-py", "{tmp}/empty/cifar-10-batches-py", "data_batch_1", "NLBENCH_DATA_DIR",
                        "dataset.options.download=true"]),
    "verbosity": (["verbosity=loud"], ["'loud'", "valid choices", "quiet", "epoch", "bar"]),
    "partial_data_dir": (["dataset=cifar10", "data_dir={tmp}/partial"],
                         ["{tmp}/partial/cifar-10-batches-py", "missing", "data_batch_3", "test_batch"]),
    "corrupt_file": (["dataset=cifar10", "data_dir={tmp}/corrupt"],
                     ["corrupt", "{tmp}/corrupt/cifar-10-batches-py/data_batch_1"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, tmp_results, cli):
    (tmp_path / "empty").mkdir()
    write_cifar10(tmp_path / "partial", files=["data_batch_1", "data_batch_2"])
    _corrupt_cifar10(tmp_path)
    args, needles = BAD[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = [a for a in SMOKE if not (a.startswith("method=") and any(x.startswith("method=") for x in args))]
    r = cli(["run", *base, *args], tmp_results)
    assert r.rc == 2, (r.out, r.err)
    assert r.err.count("\n") == 1 and len(r.error_lines()) == 1, r.err   # one line, nothing else
    line = r.error_lines()[0]
    for n in needles:
        assert n.replace("{tmp}", str(tmp_path)) in line, (n, line)
    assert not tmp_results.all_files(), "bad input must write nothing"
    assert r.out == ""


def test_unknown_command_and_no_command(cli):
    r = cli(["frobnicate"])
    assert r.rc == 2
    assert r.err.strip() == r.error_lines()[0]
    assert "'frobnicate'" in r.err and all(c in r.err for c in ("run", "validate", "list"))
    assert cli([]).rc == 2
    assert cli(["--help"]).rc == 0


def test_bad_value_in_a_sweep_runs_nothing(tmp_results, cli):
    """Every combination is validated before the first run starts."""
    r = cli(["run", "-m", *SMOKE, "train.epochs=1", "noise=sym0.2,sym0.3"], tmp_results)
    assert r.rc == 2 and "'sym0.3'" in r.err
    assert not tmp_results.all_files()
