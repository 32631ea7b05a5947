"""Shared fixtures: the real CIFAR-10 copy, isolated results/checkpoint dirs, an in-process CLI runner,
and writers of small synthetic CIFAR files in the official python layouts."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout even when the package is not installed
    sys.path.insert(0, str(ROOT))

#: lines the torch.compile test of every method reports, printed in the session summary
COMPILE_REPORT = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[COMPILE_REPORT] = []


def pytest_terminal_summary(terminalreporter, config):
    lines = config.stash.get(COMPILE_REPORT, [])
    if lines:
        terminalreporter.section("torch.compile per method (CPU, smoke scale; tests/test_gpu_paths.py)")
        for line in lines:
            terminalreporter.write_line(line)


#: the overrides every CLI test uses: the ce baseline (the config default names another method),
#: the smoke scale and no progress bar
SMOKE = ["method=ce", "scale=smoke", "progress=false", "device=cpu"]


def shared_data_dir() -> Path:
    """``$NLBENCH_TEST_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("NLBENCH_TEST_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding ``cifar-10-batches-py/`` (the shared JPEG-derived CIFAR-10 copy)."""
    d = shared_data_dir()
    if not (d / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"real CIFAR-10 copy not found under {d}: set NLBENCH_TEST_DATA")
    return d


@dataclass
class Results:
    """Isolated output folders; ``overrides`` points a run at them."""

    results: Path
    checkpoints: Path

    @property
    def overrides(self) -> list[str]:
        return [f"results_dir={self.results}", f"checkpoint_dir={self.checkpoints}"]

    def records(self) -> list[Path]:
        return sorted(self.results.rglob("*.json")) if self.results.exists() else []

    def checkpoint_files(self) -> list[Path]:
        return sorted(p for p in self.checkpoints.rglob("*") if p.is_file()) if self.checkpoints.exists() else []

    def all_files(self) -> list[Path]:
        return [p for d in (self.results, self.checkpoints) if d.exists() for p in d.rglob("*") if p.is_file()]


def make_results(base: Path) -> Results:
    return Results(base / "results", base / "checkpoints")


@pytest.fixture
def tmp_results(tmp_path, monkeypatch) -> Results:
    """results_dir / checkpoint_dir under tmp_path, also via the env vars (so subprocesses and runs that
    forget the overrides never write into the repository)."""
    r = make_results(tmp_path)
    monkeypatch.setenv("NLBENCH_RESULTS_DIR", str(r.results))
    monkeypatch.setenv("NLBENCH_CHECKPOINT_DIR", str(r.checkpoints))
    return r


@dataclass
class CliResult:
    rc: int
    out: str
    err: str
    records: list = field(default_factory=list)

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def assert_bad_input(self, needles) -> None:
        """Exit 2 with exactly one ``error:`` line that contains every needle."""
        assert self.rc == 2 and len(self.error_lines()) == 1, self.err
        for n in needles:
            assert n in self.err, (n, self.err)


def run_cli(args: list[str], results: Results | None = None) -> CliResult:
    """``nlbench.__main__.main(args)`` in this process, stdout/stderr captured.

    When ``results`` is given its overrides are appended to ``run``/``validate``/``detect`` commands.
    """
    from nlbench.__main__ import main

    args = list(args)
    if results is not None and args and args[0] in ("run", "validate", "detect"):
        args += results.overrides
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return CliResult(rc, out.getvalue(), err.getvalue(),
                     results.records() if results is not None else [])


@pytest.fixture
def cli():
    return run_cli


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------- synthetic CIFAR files
def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar100(root: Path, *, per_class_train: int = 8, per_class_test: int = 1, seed: int = 0,
                   coarse_of=lambda f: f % 20) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` in the official layout; returns ``root``.

    Fine label f has coarse label ``coarse_of(f)`` (default f % 20: deliberately *not* the index
    blocks f // 5, so code that confuses the two is caught). Training samples are shuffled.
    """
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        fine = rng.permutation(np.repeat(np.arange(100), per))
        obj = {"filenames": [f"img_{i}.png" for i in range(len(fine))], "batch_label": f"{split} batch",
               "fine_labels": fine.tolist(), "coarse_labels": [coarse_of(int(f)) for f in fine],
               "data": _images(rng, len(fine))}
        with open(d / split, "wb") as f:
            pickle.dump(obj, f)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)]}
    with open(d / "meta", "wb") as f:
        pickle.dump(meta, f)
    return root


def write_cifar10(root: Path, *, n_per_batch: int = 20, seed: int = 0, files=None) -> Path:
    """Write small ``root/cifar-10-batches-py`` files (``files``: which; default all seven)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        if files is not None and name not in files:
            continue
        labels = (np.arange(n_per_batch) % 10).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({"data": _images(rng, n_per_batch), "labels": labels, "batch_label": name,
                         "filenames": [f"{name}_{i}.png" for i in range(n_per_batch)]}, f)
    if files is None or "batches.meta" in files:
        with open(d / "batches.meta", "wb") as f:
            pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                         "horse", "ship", "truck"], "num_vis": 3072}, f)
    return root


@pytest.fixture
def cifar100_dir(tmp_path) -> Path:
    """A data_dir holding a synthetic CIFAR-100 (8 train / 1 test image per fine class)."""
    return write_cifar100(tmp_path / "data")
