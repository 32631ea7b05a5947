"""Multiruns that finish: every member validated before the first trains, a crashing member recorded
as failed while the sweep goes on, a summary table, exit codes; and the same sweeps on Hydra's
launchers (joblib with two workers, submitit_local), each on tiny digits runs."""
from __future__ import annotations

import os

import pytest

from conftest import ROOT, SMOKE, read_json
from fixtures_plugins import write_plugin

BASE = [a for a in SMOKE if not a.startswith("method=")] + ["train.epochs=2"]


@pytest.fixture
def crash_plugin(tmp_path_factory, monkeypatch):
    """The crashable CE method from a temporary package, importable here and in launcher workers."""
    site = tmp_path_factory.getbasetemp() / "sweep_plugin_site"
    if not (site / "nlbtest_sweep").exists():
        write_plugin(site, "nlbtest_sweep", "crash_ce")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return ["method=crash_ce", "method_modules=[nlbtest_sweep.methods]",
            f"method_conf_dirs=[{site / 'nlbtest_sweep' / 'conf'}]"]


def _summary(out: str) -> dict[str, list[str]]:
    """member -> the other cells of its row in the sweep summary table."""
    lines = out.split("sweep summary")[1].splitlines()[1:]
    assert lines[0].split()[:4] == ["member", "status", "acc_last", "minutes"], lines[0]
    rows = [line.split("  ") for line in lines[1:] if line.strip()]
    return {r[0].strip(): [c.strip() for c in r[1:] if c.strip()] for r in rows}


def test_a_bad_member_stops_the_sweep_before_anything_trains(tmp_path, tmp_results, cli):
    """Member 2 of 2 needs CIFAR-10 files that are not there: found before member 1 trains."""
    (tmp_path / "empty").mkdir()
    r = cli(["run", "-m", *SMOKE, "dataset=digits,cifar10", f"data_dir={tmp_path / 'empty'}"], tmp_results)
    assert r.rc == 2 and len(r.error_lines()) == 1, r.err
    assert "dataset=cifar10" in r.err and "cifar-10-batches-py" in r.err and "dataset.options.download=true" in r.err
    assert "epoch 1/" not in r.err and not tmp_results.all_files()


def test_a_crashing_member_is_recorded_as_failed_and_the_sweep_goes_on(crash_plugin, tmp_results, cli,
                                                                      monkeypatch):
    args = ["run", "-m", *BASE, *crash_plugin, "method.params.fail_at_epoch=1,-1", "seed=0"]
    r = cli(args, tmp_results)
    assert r.rc == 1, r.err
    rows = _summary(r.out)
    assert rows["method.params.fail_at_epoch=1"][0] == "failed"
    assert rows["method.params.fail_at_epoch=-1"][0] == "completed"
    assert "crash on purpose at epoch 2" in r.err and "Traceback" in r.err
    recs = {read_json(p)["effective"]["method_params"]["fail_at_epoch"]: p for p in tmp_results.records()}
    failed = read_json(recs[1])
    assert failed["status"] == "failed" and failed["message"] == "RuntimeError: crash on purpose at epoch 2"
    assert any("crash on purpose" in line for line in failed["traceback"])
    assert list(failed)[:2] == ["schema_version", "status"] and failed["final"] == {}
    assert tmp_results.checkpoint_files(), "the failed run keeps its checkpoint (epoch 1) to resume from"

    # the rerun skips the finished member and retries the failed one, resuming after epoch 1
    monkeypatch.setenv("NLBENCH_TEST_NO_CRASH", "1")
    r = cli(args, tmp_results)
    assert r.rc == 0, r.err
    rows = _summary(r.out)
    assert rows["method.params.fail_at_epoch=1"][0] == "completed"
    assert rows["method.params.fail_at_epoch=-1"][0] == "skipped-completed"
    assert "resumed from" in r.err and "epoch 2/2" in r.err
    assert read_json(recs[1])["status"] == "completed" and len(read_json(recs[1])["history"]) == 2
    assert not tmp_results.checkpoint_files() and not list(tmp_results.checkpoints.rglob("*"))


def test_a_single_crashing_run_writes_a_failed_record_and_exits_1(crash_plugin, tmp_results, cli):
    r = cli(["run", *BASE, *crash_plugin, "method.params.fail_at_epoch=0"], tmp_results)
    assert r.rc == 1 and r.out.startswith("failed:") and "crash on purpose at epoch 1" in r.out
    (path,) = tmp_results.records()
    assert read_json(path)["status"] == "failed"


def test_hydra_argument_without_multirun_is_an_error(tmp_results, cli):
    r = cli(["run", *SMOKE, "hydra/launcher=joblib"], tmp_results)
    assert r.rc == 2 and "add -m" in r.err and not tmp_results.all_files()


def test_gpu_for_job_is_round_robin():
    from nlbench.launch import gpu_for_job

    assert [gpu_for_job(n, 4) for n in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    # 2 GPUs and n_jobs=4: the first four jobs put two runs on each GPU
    assert sorted(gpu_for_job(n, 2) for n in range(4)) == [0, 0, 1, 1]
    assert gpu_for_job(5, 1) is None and gpu_for_job(0, 0) is None


def test_threads_per_job_splits_the_cores():
    from nlbench.launch import threads_per_job

    assert threads_per_job(None, 8) is None and threads_per_job(1, 8) is None   # one job at a time
    assert [threads_per_job(n, 16) for n in (2, 4, 5, 16, 32)] == [8, 4, 3, 1, 1]
    assert threads_per_job(-1, 8) == 1 and threads_per_job(-2, 8) == 1 and threads_per_job(-7, 8) == 4


def test_threads_option_sets_torch_threads_for_the_run_only(tmp_results, cli):
    import torch

    r = cli(["run", *SMOKE, "threads=0"], tmp_results)
    assert r.rc == 2 and "threads=0" in r.err and "positive" in r.err
    before = torch.get_num_threads()
    from nlbench.config import compose
    from nlbench.runner import execute
    from nlbench.spec import build_spec

    spec = build_spec(compose([*SMOKE, "threads=1", f"results_dir={tmp_results.results}",
                               f"checkpoint_dir={tmp_results.checkpoints}", "verbosity=quiet"]))
    rec = execute(spec)
    assert rec["versions"]["torch_threads"] == 1
    assert torch.get_num_threads() == before      # a library call leaves the process as it found it


# ------------------------------------------------------------------------------------ launchers
def _launcher_sweep(cli, tmp_path, tmp_results, crash_plugin, launcher: list[str]):
    args = ["run", "-m", *[a for a in SMOKE if not a.startswith("method=")], *crash_plugin, "train.epochs=1", "method.params.fail_at_epoch=0,-1",
            f"sweep_dir={tmp_path / 'sweeps'}", *launcher]
    r = cli(args, tmp_results)
    assert r.rc == 1, (r.out, r.err)          # one member crashes on purpose
    rows = _summary(r.out)
    assert rows["method.params.fail_at_epoch=0"][0] == "failed"
    assert rows["method.params.fail_at_epoch=-1"][0] == "completed"
    recs = [read_json(p) for p in tmp_results.records()]
    assert sorted(r["status"] for r in recs) == ["completed", "failed"]
    assert all(len(r["history"]) == 1 for r in recs if r["status"] == "completed")
    # Hydra wrote its job folders under sweep_dir, not next to the records or in the working folder
    assert list((tmp_path / "sweeps").rglob("multirun.yaml"))
    assert not (ROOT / "multirun").exists() and not (ROOT / "sweeps").exists()
    return recs


def test_joblib_launcher_two_workers(crash_plugin, tmp_path, tmp_results, cli):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    recs = _launcher_sweep(cli, tmp_path, tmp_results, crash_plugin,
                           ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert {r["config"]["method_modules"][0] for r in recs} == {"nlbtest_sweep.methods"}


def test_submitit_local_launcher(crash_plugin, tmp_path, tmp_results, cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _launcher_sweep(cli, tmp_path, tmp_results, crash_plugin,
                    ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"])
    assert list((tmp_path / "sweeps").rglob("*_log.out")), "submitit keeps each job's log under sweep_dir"


def test_sweeps_declared_in_a_config_file_are_expanded(tmp_path, tmp_results, cli):
    """An experiment file's hydra.sweeper.params is a sweep, as under Hydra; the command line wins."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "two_seeds.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n      noise_seed: 3,4\n")
    r = cli(["run", "-m", *SMOKE, "train.epochs=1", f"method_conf_dirs=[{conf}]", "+experiment=two_seeds",
             "noise_seed=5"], tmp_results)
    assert r.rc == 0, r.err
    recs = [read_json(p) for p in tmp_results.records()]
    assert sorted((x["seed"], x["noise_seed"]) for x in recs) == [(0, 5), (1, 5)]
