"""Any noise rate: a rate family's run name and record path derive from kind prefix and rate, so the
name can never disagree with the rate that was trained."""
from __future__ import annotations

import pytest

from conftest import SMOKE


def _spec(*overrides):
    from nlbench.config import compose
    from nlbench.spec import build_spec

    return build_spec(compose([*SMOKE, *overrides]))


@pytest.mark.parametrize("overrides, name, kind, rate", [
    (["noise=sym", "noise.rate=0.3"], "sym0.3", "sym", 0.3),
    (["noise=sym0.2", "noise.rate=0.3"], "sym0.3", "sym", 0.3),      # the rate wins: renamed, not mislabelled
    (["noise=symo", "noise.rate=0.35"], "symo0.35", "sym_other", 0.35),
    (["noise=pair", "noise.rate=0.45"], "pair0.45", "pairflip", 0.45),
    (["noise=asym", "noise.rate=0.25"], "asym0.25", "asym", 0.25),
    (["noise=sym0.4"], "sym0.4", "sym", 0.4),
])
def test_rate_family_name_comes_from_prefix_and_rate(overrides, name, kind, rate, tmp_path):
    spec = _spec(*overrides, f"results_dir={tmp_path}")
    assert spec.noise["name"] == name and spec.noise["kind"] == kind and spec.noise["rate"] == rate
    assert spec.record_path.relative_to(tmp_path).parts[:3] == ("digits", name, "ce")


def test_every_shipped_preset_keeps_its_name():
    from nlbench.config import compose, group_choices
    from nlbench.hydra_setup import RATE_FAMILIES

    for choice in group_choices("noise"):
        cfg = compose([f"noise={choice}"] + (["noise.rate=0.3"] if choice in RATE_FAMILIES else []))
        want = f"{choice}0.3" if cfg.noise.get("prefix") == choice else choice
        assert cfg.noise.name == want, choice


def test_same_rate_same_record_whichever_preset_it_came_from():
    a, b = _spec("noise=sym", "noise.rate=0.4"), _spec("noise=sym0.4")
    assert a.record_path == b.record_path and a.config_hash == b.config_hash


def test_sweep_over_rates_files_each_rate_apart(tmp_results, cli):
    r = cli(["run", "-m", *SMOKE, "train.epochs=1", "noise=sym", "noise.rate=0.1,0.3"], tmp_results)
    assert r.rc == 0, r.err
    assert sorted(p.parent.parent.name for p in tmp_results.records()) == ["sym0.1", "sym0.3"]
    from conftest import read_json

    for p in tmp_results.records():
        n = read_json(p)["noise"]
        assert n["name"] == p.parent.parent.name and f"sym{n['nominal_rate']:g}" == n["name"]


@pytest.mark.parametrize("args, needles", [
    (["noise=sym"], ["noise=sym needs a rate", "noise.rate="]),
    (["noise=sym0.2", "noise.name=sym0.2", "noise.rate=0.3"], ["'sym0.2'", "disagrees", "'sym0.3'"]),
    (["noise=c10n_worse", "noise.rate=0.5"], ["'c10n_worse'", "fixed rate", "noise=sym"]),
    (["noise=sym0.3"], ["'sym0.3'", "valid choices", "noise=sym noise.rate=0.3"]),
])
def test_a_name_rate_mismatch_is_an_error_that_writes_nothing(args, needles, tmp_results, cli):
    r = cli(["run", *SMOKE, *args], tmp_results)
    r.assert_bad_input(needles)
    assert not tmp_results.all_files()


def test_validate_prints_rates_with_few_digits(tmp_results, cli):
    r = cli(["validate", *SMOKE, "noise=sym", "noise.rate=0.3"], tmp_results)
    assert r.rc == 0, r.err
    rate = r.out.split("actual_rate=")[1].split()[0]
    assert len(rate) <= 6 and abs(float(rate) - 0.2754) < 1e-4, rate   # 371 of 1347 labels changed
