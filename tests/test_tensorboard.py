"""logger=tensorboard: every per-epoch number of the record as TensorBoard scalars, read back from the
event file; the config as hparams; nothing written without the option."""
from __future__ import annotations

import pytest

from conftest import SMOKE, make_results, read_json, run_cli

pytest.importorskip("tensorboard")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_scalars_equal_the_record_and_hparams_hold_the_config(tmp_path):
    res = make_results(tmp_path / "out")
    tb = tmp_path / "tb"
    args = [a for a in SMOKE if not a.startswith("method=")]
    r = run_cli(["run", *args, "method=coteaching", "dataset=digits", "noise=sym0.4", "train.epochs=3",
                 "logger=tensorboard", f"tb_dir={tb}"], res)
    assert r.rc == 0, r.err
    path = res.records()[0]
    rec = read_json(path)
    run_dir = tb / path.relative_to(res.results).with_suffix("")
    acc = _events(run_dir)
    tags = set(acc.Tags()["scalars"])
    for key in ("test_top1", "test_top1_net0", "test_top1_ensemble", "lr", "loss", "forget_rate", "sel_precision",
                "sel_recall"):
        assert key in tags, key
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        want = [(h["epoch"], h[key]) for h in rec["history"]]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    # the hparams plugin holds the run's config
    from tensorboard.plugins.hparams import plugin_data_pb2

    hp = None
    for ev_dir in [run_dir, *[p for p in run_dir.iterdir() if p.is_dir()]]:
        a = _events(ev_dir)
        try:
            content = a.PluginTagToContent("hparams")
        except KeyError:
            content = {}
        for raw in content.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(raw)
            if data.HasField("session_start_info"):
                hp = data.session_start_info.hparams
    assert hp is not None
    assert hp["method"].string_value == "coteaching" and hp["dataset"].string_value == "digits"
    assert hp["method_params.forget_rate"].number_value == pytest.approx(rec["effective"]["method_params"]["forget_rate"])


def test_without_the_option_nothing_is_written(tmp_path):
    res = make_results(tmp_path / "out")
    r = run_cli(["run", *SMOKE, "train.epochs=1", f"tb_dir={tmp_path / 'tb'}"], res)
    assert r.rc == 0, r.err
    assert not (tmp_path / "tb").exists()


def test_unknown_logger_is_one_error_line(tmp_path):
    res = make_results(tmp_path / "out")
    r = run_cli(["run", *SMOKE, "logger=wandb"], res)
    r.assert_bad_input(["'wandb'", "none, tensorboard"])
