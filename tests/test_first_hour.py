"""What a newcomer meets in the first hour (issue 43): hints that lead to a command that works, and
errors that name the way out."""
from __future__ import annotations

import pytest

from conftest import SMOKE


@pytest.mark.parametrize("noise, hint", [
    ("sym04", "did you mean noise=sym0.4?"),                  # the point left out
    ("asym03", "did you mean noise=asym0.3?"),
    ("sym40", "40 is not one (did you mean noise=sym0.4?)"),  # a percentage
    ("sym1.2", "a noise rate is a fraction in [0, 1), and 1.2 is not one"),
    ("sym0.35", "for any rate use noise=sym noise.rate=0.35"),
])
def test_a_noise_hint_suggests_a_command_that_works(cli, tmp_results, noise, hint):
    r = cli(["validate", *SMOKE, f"noise={noise}"], tmp_results)
    r.assert_bad_input([f"unknown noise {noise!r}", hint])
    if "did you mean noise=" in hint:     # the suggestion itself validates
        fixed = hint.split("did you mean noise=")[1].rstrip("?)")
        assert cli(["validate", *SMOKE, f"noise={fixed}"], tmp_results).rc == 0
    if "noise.rate=" in hint:
        assert cli(["validate", *SMOKE, "noise=sym", "noise.rate=0.35"], tmp_results).rc == 0
    assert "did you mean noise=sym0.012" not in r.err


def test_a_top_level_key_that_lives_under_train_is_pointed_there(cli, tmp_results):
    r = cli(["validate", *SMOKE, "lr=0.1"], tmp_results)
    r.assert_bad_input(["unknown config key 'lr'", "did you mean train.lr?"])
    assert "interrupt_after" not in r.err          # a testing aid, not a user's key
    assert cli(["validate", *SMOKE, "train.lr=0.1"], tmp_results).rc == 0
    r = cli(["validate", *SMOKE, "seedd=1"], tmp_results)
    r.assert_bad_input(["unknown config key 'seedd' (did you mean seed?)"])


def test_an_unknown_method_names_the_way_to_add_ones_own(cli, tmp_results):
    r = cli(["validate", "method=gss_sbb", "scale=smoke", "device=cpu"], tmp_results)
    r.assert_bad_input(["unknown method 'gss_sbb' (did you mean gss_sb?)", "method_modules=[", "method_conf_dirs=["])


def test_threads_default_to_what_is_fast_for_the_run_and_the_machine():
    from nlbench.cpu import auto_threads

    assert auto_threads(small=True, cores=16, load=0.0) == 1          # digits' MLP: too small to split
    assert auto_threads(small=False, cores=2, load=0.1) == 2          # an idle machine: every core
    assert auto_threads(small=False, cores=2, load=1.2) == 1          # one core busy: one thread
    assert auto_threads(small=False, cores=2, load=5.0) == 1          # never 0
    assert auto_threads(small=False, cores=16, load=3.6) == 12
    assert auto_threads(small=False, cores=4, load=None) == 4         # no load average: torch's default


def test_a_run_records_the_threads_it_chose(cli, tmp_results):
    import json

    r = cli(["run", *SMOKE, "train.epochs=1", "verbosity=quiet"], tmp_results)
    assert r.rc == 0, r.err
    rec = json.loads(tmp_results.records()[0].read_text())
    assert rec["versions"]["torch_threads"] == 1                      # scale=smoke: one thread


def test_machine_load_is_the_busy_share_of_every_core_now(monkeypatch):
    import os

    from nlbench import cpu as launch

    samples = iter([(100, 1000), (150, 1100)])            # 50 of 100 jiffies busy across all CPUs
    monkeypatch.setattr(launch, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert launch.machine_load(sample_s=0.0) == 1.0       # one of two cores busy
    monkeypatch.setattr(launch, "_cpu_times", lambda: None)   # no /proc/stat: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (0.25, 0.5, 0.75))
    assert launch.machine_load(sample_s=0.0) == 0.25


def test_a_failed_start_leaves_no_folder_behind(cli, tmp_path):
    made = tmp_path / "new"
    r = cli(["run", "dataset=cifar10", f"data_dir={tmp_path / 'nowhere'}", "scale=smoke", "device=cpu",
             f"results_dir={made / 'results'}", f"checkpoint_dir={made / 'checkpoints'}"])
    r.assert_bad_input(["cifar-10-batches-py not found"])
    assert not (made / "results").exists() and not (made / "checkpoints").exists()
    kept = tmp_path / "kept"                      # a results_dir that was there before stays
    kept.mkdir()
    r = cli(["run", "dataset=cifar10", f"data_dir={tmp_path / 'nowhere'}", "scale=smoke", "device=cpu",
             f"results_dir={kept}", f"checkpoint_dir={made / 'checkpoints'}"])
    assert r.rc == 2 and kept.is_dir() and list(kept.iterdir()) == []


def test_report_takes_results_dir_as_runs_spells_it(cli, tmp_path):
    from report_fixtures import write_record

    write_record(tmp_path / "res", method="ce", dataset="digits", noise="sym0.4", seed=0, acc_last=50.0,
                 scale="paper")
    r = cli(["report", f"results_dir={tmp_path / 'res'}", f"out={tmp_path / 'plots'}", "--no-figures"])
    assert r.rc == 0, r.err
    assert (tmp_path / "plots" / "REPORT.md").is_file()


def test_runs_can_show_which_module_registered_the_method(cli, tmp_results):
    assert cli(["run", *SMOKE, "train.epochs=1", "verbosity=quiet"], tmp_results).rc == 0
    r = cli(["runs", f"results_dir={tmp_results.results}", "--columns", "method,method_module"])
    assert r.rc == 0, r.err
    assert r.out.splitlines()[1].split() == ["ce", "methods.ce"]
