"""torch.compile as a performance setting (issue 11): when ``train.compile`` resolves to a compile mode,
that it stays out of record names and report cells, that bad values are named, and a real compiled
CPU run that trains to the same numbers as the eager one."""
from __future__ import annotations

import shutil

import pytest
import torch

from nlbench.registry import ConfigError
from nlbench.report import comparable
from nlbench.trainer import COMPILE_AUTO_MIN_EPOCHS, TrainConfig, compile_mode_for

from conftest import SMOKE, make_results, read_json, run_cli

CPU, CUDA = torch.device("cpu"), torch.device("cuda")   # a device object needs no GPU


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 200, "batch_size": 128, "lr": 0.01, **kw})


def test_auto_compiles_only_long_cuda_runs():
    assert compile_mode_for(_cfg(), CPU) is None                 # the CPU stays eager under auto
    assert compile_mode_for(_cfg(), CUDA) == "default"
    assert compile_mode_for(_cfg(epochs=COMPILE_AUTO_MIN_EPOCHS - 1), CUDA) is None   # does not pay back
    assert compile_mode_for(_cfg(epochs=COMPILE_AUTO_MIN_EPOCHS), CUDA) == "default"


def test_explicit_compile_wins_on_every_device_and_carries_the_mode():
    assert compile_mode_for(_cfg(compile=True, epochs=2), CPU) == "default"
    assert compile_mode_for(_cfg(compile=True, compile_mode="reduce-overhead"), CUDA) == "reduce-overhead"
    assert compile_mode_for(_cfg(compile=False), CUDA) is None
    assert compile_mode_for(_cfg(compile=False, compile_mode="max-autotune"), CUDA) is None


@pytest.mark.parametrize("kw, needles", [
    ({"compile": "yes"}, ["train.compile", "'yes'", "true, false or auto"]),
    ({"compile_mode": "fast"}, ["train.compile_mode", "'fast'", "reduce-overhead", "max-autotune"]),
])
def test_bad_compile_values_are_named(kw, needles):
    with pytest.raises(ConfigError) as e:
        _cfg(**kw)
    for n in needles:
        assert n in str(e.value)


def test_cli_bad_compile_mode_exits_2(cli, tmp_results):
    cli(["run", *SMOKE, "train.compile_mode=fastest"], tmp_results).assert_bad_input(
        ["train.compile_mode", "fastest", "reduce-overhead"])
    assert tmp_results.all_files() == []


def test_compile_keeps_record_names_and_report_cells():
    from nlbench.config import compose
    from nlbench.spec import build_spec

    eager = build_spec(compose(SMOKE))
    graphs = build_spec(compose([*SMOKE, "train.compile=true", "train.compile_mode=reduce-overhead"]))
    assert eager.train.compile == "auto" and graphs.train.compile is True
    # the name the same config had before compile became a performance setting (computed at deec358)
    assert eager.config_hash == graphs.config_hash == "7eb3f09e8d"
    assert comparable({"train": {"compile": True, "compile_mode": "reduce-overhead", "lr": 0.1}}) \
        == comparable({"train": {"compile": False, "lr": 0.1}})


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on the CPU needs a C compiler (inductor); none on PATH")
def test_compiled_cpu_run_trains_like_eager_and_records_its_mode(tmp_path):
    """A real run with ``train.compile=true`` (inductor on the CPU): the record says it was compiled, and
    the numbers match the eager run's up to kernel rounding (same labels, same draws, same schedule)."""
    args = [*SMOKE, "train.epochs=3"]
    recs = {}
    for name, extra in (("eager", []), ("compiled", ["train.compile=true"])):
        res = make_results(tmp_path / name)
        r = run_cli(["run", *args, *extra], res)
        assert r.rc == 0, r.err
        (path,) = res.records()
        recs[name] = read_json(path)
    assert recs["eager"]["runtime"] == {"compiled": None, "cuda_graphs": False}
    assert recs["compiled"]["runtime"] == {"compiled": "default", "cuda_graphs": False}
    assert recs["compiled"]["config_hash"] == recs["eager"]["config_hash"]
    for he, hc in zip(recs["eager"]["history"], recs["compiled"]["history"], strict=True):
        assert hc["loss"] == pytest.approx(he["loss"], rel=1e-3, abs=1e-4)
        assert abs(hc["test_top1"] - he["test_top1"]) <= 2.0   # a few of the ~360 test digits may flip
