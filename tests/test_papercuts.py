"""CLI and record papercuts a new user found: run --help, unwritable results_dir, the diverged exit
code, verbosity, empty checkpoint folders, the README's CPU-only torch note."""
from __future__ import annotations

import pytest

from conftest import ROOT, SMOKE, make_results


def test_run_help_lists_groups_settings_and_exit_codes(cli):
    for cmd in (["run", "--help"], ["run", "-h"], ["validate", "--help"]):
        r = cli(cmd)
        assert r.rc == 0 and r.err == "", r.err
        assert r.out.startswith("usage: python -m nlbench run")
        for needle in ("method=gss_sb | ce", "noise.rate=", "train.<key>", "verbosity=bar  ", "quiet: the final line",
                       "hydra/launcher=joblib", "method_modules", "Exit codes", "3 a run diverged"):
            assert needle in r.out, needle
    r = cli(["runs", "--help"])
    assert r.rc == 0 and "--columns" in r.out


def test_unwritable_results_dir_is_found_before_training(tmp_path, cli):
    (tmp_path / "a_file").write_text("a file where a folder should be")
    bad = tmp_path / "a_file" / "results"
    r = cli(["run", *SMOKE, f"results_dir={bad}", f"checkpoint_dir={tmp_path / 'ckpt'}"])
    assert r.rc == 2 and len(r.error_lines()) == 1, r.err
    assert f"results_dir='{bad}' is not writable" in r.err and "Not a directory" in r.err
    assert "epoch 1/" not in r.err and r.out == ""
    assert not (tmp_path / "ckpt").exists()


def test_unwritable_results_dir_in_a_sweep_stops_it_before_member_1(tmp_path, cli):
    (tmp_path / "a_file").write_text("")
    r = cli(["run", "-m", *SMOKE, "seed=0,1", f"results_dir={tmp_path / 'a_file' / 'r'}",
             f"checkpoint_dir={tmp_path / 'ckpt'}"])
    assert r.rc == 2 and "not writable" in r.err and "epoch 1/" not in r.err and "[1/2]" not in r.err


@pytest.mark.parametrize("verbosity, epoch_lines", [("quiet", 0), ("epoch", 2), ("bar", 2)])
def test_verbosity(verbosity, epoch_lines, tmp_path, cli):
    res = make_results(tmp_path)
    r = cli(["run", *SMOKE, f"verbosity={verbosity}"], res)
    assert r.rc == 0, r.err
    assert sum(line.startswith("epoch ") for line in r.err.splitlines()) == epoch_lines
    assert r.out.startswith("completed:")          # the final line is always printed
    if verbosity == "quiet":
        assert r.err == ""
        # not trained: said even at verbosity=quiet (one line), and the final line says so too
        again = cli(["run", *SMOKE, "verbosity=quiet"], res)
        assert again.rc == 0 and again.err.startswith("not trained: a finished record of this run exists")
        assert len(again.err.splitlines()) == 1
        assert again.out.startswith("completed (not trained now: an existing record):")


def test_a_finished_run_leaves_no_empty_checkpoint_folders(tmp_path, cli):
    res = make_results(tmp_path)
    r = cli(["run", *SMOKE, "train.epochs=3"], res)   # checkpoints after epochs 1 and 2, then removed
    assert r.rc == 0, r.err
    assert not res.checkpoints.exists(), list(res.checkpoints.rglob("*"))
    # a folder that holds something else (another run's checkpoint) is kept
    other = res.checkpoints / "digits" / "sym0.4" / "gce" / "seed0-x.pt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    r = cli(["run", *SMOKE, "train.epochs=3", "seed=1"], res)
    assert r.rc == 0 and other.exists() and not (res.checkpoints / "digits" / "sym0.4" / "ce").exists()


def test_prune_empty_dirs_stops_at_the_checkpoint_dir(tmp_path):
    from nlbench.runner import prune_empty_dirs

    root = tmp_path / "ckpt"
    leaf = root / "a" / "b" / "c"
    leaf.mkdir(parents=True)
    (root / "a" / "keep.txt").write_text("x")
    prune_empty_dirs(leaf, root)
    assert not (root / "a" / "b").exists() and (root / "a").exists()
    outside = tmp_path / "elsewhere" / "d"
    outside.mkdir(parents=True)
    prune_empty_dirs(outside, root)          # not under the checkpoint dir: left alone
    assert outside.exists()


def test_readme_pins_the_cpu_only_torch_the_records_were_made_with():
    import gzip
    import json

    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if "download.pytorch.org/whl/cpu" in ln)
    pinned = line.split("torch==")[1].split()[0]
    assert line.startswith("pip install torch==") and "torchvision==" in line
    shipped = sorted((ROOT / "results").rglob("*.json.gz"))
    if shipped:   # the version a CPU user installs is the one the reference records were made with
        versions = {json.loads(gzip.decompress(p.read_bytes()))["versions"]["torch"].split("+")[0]
                    for p in shipped[:20]}
        assert versions == {pinned}, (versions, pinned)
