"""The trainer and the run record: determinism, kill-and-resume, lr schedules, record schema, the store,
and a registry-generated smoke run of every method through the real CLI."""
from __future__ import annotations

import json
import math
import warnings

import pytest

from conftest import SMOKE, make_results, read_json, run_cli

#: history keys that measure time, not the experiment
TIMING = ("seconds", "train_seconds")


def _history(rec: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in rec["history"]]


def _run(results, *args) -> dict:
    r = run_cli(["run", *SMOKE, *args], results)
    assert r.rc == 0, r.err
    recs = results.records()
    assert len(recs) == 1, recs
    return read_json(recs[0])


@pytest.fixture(scope="module")
def reference_4ep(tmp_path_factory) -> tuple[dict, object]:
    """One uninterrupted 4-epoch ce run on digits (shared by the resume, record and store tests)."""
    res = make_results(tmp_path_factory.mktemp("ref4"))
    return _run(res, "train.epochs=4"), res


# ------------------------------------------------------------------------------------ determinism
def test_same_config_and_seed_gives_identical_history(tmp_path):
    import torch

    a = make_results(tmp_path / "a")
    b = make_results(tmp_path / "b")
    torch.manual_seed(1)                       # the global RNG state must not matter
    ra = _run(a, "train.epochs=2")
    torch.manual_seed(12345)
    rb = _run(b, "train.epochs=2")
    assert _history(ra) == _history(rb)
    assert ra["final"] == rb["final"] and ra["config_hash"] == rb["config_hash"]
    assert ra["noise"]["label_hash"] == rb["noise"]["label_hash"]
    # another seed trains differently (same noisy labels: the noise has its own seed)
    c = make_results(tmp_path / "c")
    rc = _run(c, "train.epochs=2", "seed=1")
    assert rc["noise"]["label_hash"] == ra["noise"]["label_hash"]
    assert rc["config_hash"] != ra["config_hash"]
    assert [h["loss"] for h in _history(rc)] != [h["loss"] for h in _history(ra)]


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, reference_4ep):
    ref, _ = reference_4ep
    res = make_results(tmp_path)
    r = run_cli(["run", *SMOKE, "train.epochs=4", "interrupt_after=2"], res)
    assert r.rc == 0, r.err
    assert "epoch 2/4" in r.err and "epoch 3/4" not in r.err
    assert not res.records(), "an interrupted run writes no record"
    (ckpt,) = res.checkpoint_files()
    assert ckpt.suffix == ".pt"
    assert ckpt.relative_to(res.checkpoints).with_suffix("") == \
        (res.results / "digits/sym0.4/ce" / f"seed0-{ref['config_hash']}").relative_to(res.results)

    r = run_cli(["run", *SMOKE, "train.epochs=4"], res)
    assert r.rc == 0, r.err
    assert "resumed from" in r.err and "after epoch 2" in r.err
    assert "epoch 1/4" not in r.err and "epoch 3/4" in r.err and "epoch 4/4" in r.err
    (path,) = res.records()
    rec = read_json(path)
    assert rec["status"] == "completed"
    assert rec["config_hash"] == ref["config_hash"]
    assert _history(rec) == _history(ref)
    assert rec["final"] == ref["final"]
    assert not res.checkpoint_files(), "the checkpoint is removed once the record is written"


# ------------------------------------------------------------------------------------ lr schedules
def _cfg(**kw):
    from nlbench.trainer import TrainConfig

    return TrainConfig(**{"epochs": 10, "batch_size": 32, "lr": 0.1, **kw})


def test_cosine_schedule_endpoints():
    c = _cfg(schedule="cosine", eta_min=0.001)
    assert c.lr_at(0) == pytest.approx(0.1, abs=1e-15)
    # per-epoch cosine over E epochs: epoch e uses eta_min + (lr - eta_min)(1 + cos(pi e / E)) / 2
    for e in range(10):
        assert c.lr_at(e) == pytest.approx(0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * e / 10)), rel=1e-12)
    assert c.lr_at(5) == pytest.approx(0.0505, rel=1e-12)            # half way: the mean
    assert c.lr_at(10) == pytest.approx(0.001, rel=1e-12)            # the (never used) end point
    assert all(c.lr_at(e) > c.lr_at(e + 1) for e in range(9))
    assert _cfg(schedule="constant").lr_at(7) == 0.1


def test_multistep_schedule_milestones():
    c = _cfg(schedule="multistep", milestones=[3, 6], gamma=0.1)
    lrs = [c.lr_at(e) for e in range(10)]
    # epochs 0-2 at lr, 3-5 at lr*gamma, 6-9 at lr*gamma^2 (as torch's MultiStepLR stepped per epoch)
    assert lrs == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 4, rel=1e-12)
    assert c.milestones == (3, 6)


def test_onecycle_warmup_then_cosine():
    c = _cfg(schedule="onecycle", warmup_epochs=4, epochs=14)
    # linear warm-up from lr/10 to lr over warmup_epochs
    assert [c.lr_at(e) for e in range(4)] == pytest.approx([0.01, 0.0325, 0.055, 0.0775], rel=1e-12)
    assert c.lr_at(4) == pytest.approx(0.1, rel=1e-12)
    # then cosine to eta_min=0 over the remaining 10 epochs
    assert c.lr_at(9) == pytest.approx(0.05, rel=1e-12)
    assert c.lr_at(14) == pytest.approx(0.0, abs=1e-15)


def test_schedule_in_history_matches_lr_at(reference_4ep):
    from nlbench.trainer import TrainConfig

    rec, _ = reference_4ep
    t = rec["effective"]["train"]
    cfg = TrainConfig(**t)
    assert [h["lr"] for h in rec["history"]] == [cfg.lr_at(e) for e in range(4)]


@pytest.mark.parametrize("kw, needle", [
    ({"schedule": "linear"}, "valid choices"), ({"optimizer": "lamb"}, "valid choices"),
    ({"epochs": 0}, "train.epochs"), ({"lr": 0}, "train.lr"), ({"batch_size": 1}, "train.batch_size"),
    ({"epochs": "x"}, "integer"), ({"amp": "yes"}, "true or false"), ({"checkpoint_every": 0}, "checkpoint_every"),
])
def test_train_config_rejects_bad_values(kw, needle):
    from nlbench.registry import ConfigError

    with pytest.raises(ConfigError, match=needle):
        _cfg(**kw)


# ------------------------------------------------------------------------------------ the record
def test_record_fields(reference_4ep):
    rec, res = reference_4ep
    from nlbench import store

    assert rec["schema_version"] == store.SCHEMA_VERSION
    assert rec["status"] == "completed" and rec["method"] == "ce" and rec["dataset"] == "digits"
    assert rec["scale"] == "smoke" and rec["seed"] == 0 and rec["epochs"] == 4
    n = rec["noise"]
    assert n["name"] == "sym0.4" and n["kind"] == "sym" and n["nominal_rate"] == 0.4
    assert 0.3 < n["actual_rate"] < 0.4          # sym includes the true class: about r (K-1)/K
    assert isinstance(n["label_hash"], str) and len(n["label_hash"]) == 16
    T = n["transition"]
    assert len(T) == 10 and all(len(row) == 10 and abs(sum(row) - 1) < 1e-5 for row in T)
    assert n["n_noisy"] == round(n["actual_rate"] * rec["data"]["num_train"])
    assert rec["config"]["method"]["name"] == "ce" and rec["config"]["scale"]["name"] == "smoke"
    assert rec["effective"]["train"]["epochs"] == 4
    assert set(rec["git"]) == {"commit", "dirty"}
    for k in ("python", "torch", "numpy", "device"):
        assert rec["versions"][k]
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3, 4]
    for h in rec["history"]:
        assert h["seconds"] > 0 and h["lr"] > 0 and math.isfinite(h["loss"]) and h["steps"] == 11
        assert 0 <= h["test_top1"] <= h["test_top5"] <= 100
    f = rec["final"]
    accs = [h["test_top1"] for h in rec["history"]]
    assert f["metric"] == "test_top1"
    assert f["acc_last"] == accs[-1] and f["acc_best"] == max(accs)
    assert f["best_epoch"] == accs.index(max(accs)) + 1
    assert f["acc_last10"] == pytest.approx(sum(accs) / 4) and f["n_last10"] == 4
    assert rec["wall_s"] > 0
    path = res.records()[0]
    assert path.relative_to(res.results).as_posix() == f"digits/sym0.4/ce/seed0-{rec['config_hash']}.json"


def test_load_records_dataframe_skips_corrupt_with_warning(tmp_path, reference_4ep):
    import shutil

    from nlbench import store

    rec, res = reference_4ep
    root = tmp_path / "results"
    shutil.copytree(res.results, root)
    other = {**rec, "seed": 7, "method": "gce", "final": {**rec["final"], "acc_last": 12.5}}
    store.atomic_write_json(store.record_path(root, dataset="digits", noise="sym0.4", method="gce", seed=7,
                                              config_hash="abc"), other)
    bad = root / "digits" / "sym0.4" / "ce" / "seed9-broken.json"
    bad.write_text('{"schema_version": 1, "status": "compl')
    with pytest.warns(UserWarning, match="seed9-broken.json"):
        df = store.load_records(root)
    assert len(df) == 2
    assert sorted(df["method"]) == ["ce", "gce"]
    row = df[df["method"] == "gce"].iloc[0]
    assert row["seed"] == 7 and row["acc_last"] == 12.5 and row["noise"] == "sym0.4"
    ce = df[df["method"] == "ce"].iloc[0]
    assert ce["acc_last"] == rec["final"]["acc_last"] and ce["actual_rate"] == rec["noise"]["actual_rate"]
    assert ce["scale"] == "smoke" and ce["status"] == "completed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "history" in store.load_records(root, with_history=True).columns
    assert len(store.load_records(tmp_path / "nothing-here")) == 0


def test_atomic_write_leaves_no_temp_files(tmp_path):
    from nlbench import store

    p = tmp_path / "a" / "b" / "rec.json"
    store.atomic_write_json(p, {"x": 1, "nan": float("nan")})
    store.atomic_write_json(p, {"x": 2})
    assert [q.name for q in p.parent.iterdir()] == ["rec.json"]
    assert json.loads(p.read_text()) == {"x": 2}
    # a failing write (not JSON-serialisable) leaves the old record intact and no temp file behind
    with pytest.raises(TypeError):
        store.atomic_write_json(p, {"x": object()})
    assert [q.name for q in p.parent.iterdir()] == ["rec.json"]
    assert json.loads(p.read_text()) == {"x": 2}
    assert store.read_record(tmp_path / "missing.json") is None
    assert not store.is_finished(p)             # no status: not final


# ------------------------------------------------------------------------------------ every method
def _method_names() -> list[str]:
    import methods  # noqa: F401  (registers every method)
    from nlbench.method import METHODS

    return METHODS.names()


@pytest.mark.parametrize("name", _method_names())
def test_every_registered_method_trains_at_smoke_scale(name, tmp_path):
    """Generated from the registry: a new method is smoke-tested the moment it is registered."""
    res = make_results(tmp_path)
    r = run_cli(["run", *SMOKE, f"method={name}", "train.epochs=2"], res)
    assert r.rc == 0, r.err
    (path,) = res.records()
    rec = read_json(path)
    assert rec["status"] == "completed", rec.get("message")
    assert rec["method"] == name and len(rec["history"]) == 2
    assert math.isfinite(rec["final"]["acc_last"]) and 0 <= rec["final"]["acc_last"] <= 100
    assert all(math.isfinite(h["loss"]) for h in rec["history"])
