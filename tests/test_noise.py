"""Property tests for nlbench.noise: exact counts, flip directions, stats, determinism, isolation."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is not installed; run from a checkout
    sys.path.insert(0, str(ROOT))

from nlbench.noise import (  # noqa: E402
    CIFAR10_ASYM_MAP, NOISE, NoiseContext, NoiseResult, apply_noise, rate_of, transition_matrix,
)
from nlbench.registry import ConfigError, DataError  # noqa: E402


def _find_cifar_n() -> Path | None:
    cands = [os.environ.get("NLBENCH_DATA_DIR"), ROOT.parent / "shared" / "data", "/work/shared/data"]
    for c in cands:
        if c and (Path(c) / "cifar-n" / "CIFAR-10_human.pt").is_file():
            return Path(c)
    return None


DATA_DIR = _find_cifar_n()
needs_cifar_n = pytest.mark.skipif(
    DATA_DIR is None, reason="CIFAR-N label files (cifar-n/CIFAR-10_human.pt) not found under "
    "$NLBENCH_DATA_DIR or ../shared/data: human-label tests need the real files")

SETTINGS = settings(max_examples=40, deadline=None)


def balanced(K: int, per_class: int, seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(K), per_class)
    return np.random.default_rng(seed).permutation(y)


def ctx_for(dataset: str, K: int, **kw) -> NoiseContext:
    return NoiseContext(dataset=dataset, num_classes=K, **kw)


def run(kind, clean, rate, seed=0, dataset="cifar10", K=None, name=None, ctx=None, **options):
    K = K if K is not None else (10 if dataset == "cifar10" else 100 if dataset == "cifar100" else
                                 int(clean.max()) + 1)
    ctx = ctx or ctx_for(dataset, K)
    return apply_noise(kind, name=name or f"{kind}{rate}", clean=clean, rate=rate, seed=seed,
                       ctx=ctx, **options)


def check_stats(res: NoiseResult, clean: np.ndarray, K: int) -> None:
    """Invariants every result with known clean labels satisfies."""
    noisy = res.noisy_labels
    assert noisy.dtype == np.int64 and noisy.shape == clean.shape
    assert res.actual_rate == pytest.approx(rate_of(noisy, clean), abs=0)
    T = res.transition
    assert T.shape == (K, K) and T.dtype == np.float64
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)
    n_c = np.bincount(clean, minlength=K)
    assert np.all(np.diag(T)[n_c == 0] == 1.0)
    # actual rate == sum_c n_c (1 - T_cc) / N
    assert float(np.sum(n_c * (1 - np.diag(T))) / clean.size) == pytest.approx(res.actual_rate)
    rec = res.to_record()
    assert set(rec) == {"name", "kind", "nominal_rate", "actual_rate", "transition",
                        "label_hash", "n_noisy"}
    assert rec["n_noisy"] == int(np.sum(noisy != clean))
    assert len(rec["label_hash"]) == 16


# ------------------------------------------------------------------------------------ symmetric

@SETTINGS
@given(K=st.integers(2, 20), n=st.integers(1, 400), rate=st.floats(0, 0.99), seed=st.integers(0, 2**32))
def test_sym_counts(K, n, rate, seed):
    clean = np.random.default_rng(seed).integers(0, K, size=n)
    res = run("sym", clean, rate, seed=seed, dataset="digits", K=K)
    check_stats(res, clean, K)
    # int(r*N) samples are resampled; some may land on their own class
    assert np.sum(res.noisy_labels != clean) <= int(rate * n)


def test_sym_actual_rate_is_r_times_k_minus_1_over_k():
    clean = balanced(10, 2000)
    res = run("sym", clean, 0.5, seed=3)
    assert res.actual_rate == pytest.approx(0.5 * 9 / 10, abs=0.01)  # 45%, not 50%
    res = run("sym", clean, 0.8, seed=3)
    assert res.actual_rate == pytest.approx(0.72, abs=0.01)


@SETTINGS
@given(K=st.integers(2, 20), n=st.integers(1, 400), rate=st.floats(0, 0.99), seed=st.integers(0, 2**32))
def test_sym_other_exact(K, n, rate, seed):
    clean = np.random.default_rng(seed).integers(0, K, size=n)
    res = run("sym_other", clean, rate, seed=seed, dataset="digits", K=K)
    check_stats(res, clean, K)
    assert res.actual_rate == round(rate * n) / n
    assert res.n_noisy == round(rate * n)


def test_sym_other_uniform_over_other_classes():
    clean = balanced(5, 4000)
    T = run("sym_other", clean, 0.5, seed=1, dataset="digits", K=5).transition
    off = T[~np.eye(5, dtype=bool)]
    np.testing.assert_allclose(off, 0.5 / 4, atol=0.02)


# ----------------------------------------------------------------------------------- asymmetric

@SETTINGS
@given(rate=st.floats(0, 0.99), per=st.integers(0, 60), seed=st.integers(0, 2**32))
def test_asym_cifar10_exact_per_class(rate, per, seed):
    rng = np.random.default_rng(seed)
    clean = rng.permutation(np.repeat(np.arange(10), rng.integers(per, per + 5, size=10)))
    res = run("asym", clean, rate, seed=seed)
    check_stats(res, clean, 10)
    noisy = res.noisy_labels
    for c in range(10):
        m = clean == c
        flipped = noisy[m] != c
        if c in CIFAR10_ASYM_MAP:
            assert flipped.sum() == round(rate * m.sum())
            assert np.all(noisy[m][flipped] == CIFAR10_ASYM_MAP[c])
        else:
            assert not flipped.any()


def test_asym_cifar10_cat_dog_no_sequential_bug():
    clean = balanced(10, 1000)
    res = run("asym", clean, 0.4, seed=0)
    T = res.transition
    assert T[3, 5] == 0.4 and T[5, 3] == 0.4 and T[3, 3] == 0.6
    assert T[9, 1] == 0.4 and T[2, 0] == 0.4 and T[4, 7] == 0.4
    assert res.actual_rate == pytest.approx(0.2)


@SETTINGS
@given(rate=st.floats(0, 0.99), per=st.integers(0, 12), seed=st.integers(0, 2**32))
def test_asym_cifar100_block_next(rate, per, seed):
    rng = np.random.default_rng(seed)
    clean = rng.permutation(np.repeat(np.arange(100), rng.integers(per, per + 3, size=100)))
    res = run("asym", clean, rate, seed=seed, dataset="cifar100")
    check_stats(res, clean, 100)
    noisy = res.noisy_labels
    for c in range(100):
        m = clean == c
        flipped = noisy[m] != c
        assert flipped.sum() == round(rate * m.sum())
        assert np.all(noisy[m][flipped] == (c // 5) * 5 + (c % 5 + 1) % 5)


def _coarse_map(seed: int) -> np.ndarray:
    """A random fine -> coarse map with 20 groups of 5 (not consecutive ids)."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(20), 5))


@SETTINGS
@given(rate=st.floats(0, 0.99), seed=st.integers(0, 2**32))
def test_asym_super_next_in_superclass(rate, seed):
    f2c = _coarse_map(seed)
    rng = np.random.default_rng(seed)
    clean = rng.permutation(np.repeat(np.arange(100), rng.integers(1, 8, size=100)))
    ctx = ctx_for("cifar100", 100, coarse_labels=f2c[clean])
    res = run("asym_super", clean, rate, seed=seed, ctx=ctx)
    check_stats(res, clean, 100)
    noisy = res.noisy_labels
    for c in range(100):
        group = sorted(np.flatnonzero(f2c == f2c[c]).tolist())
        nxt = group[(group.index(c) + 1) % len(group)]
        m = clean == c
        flipped = noisy[m] != c
        assert flipped.sum() == round(rate * m.sum())
        assert np.all(noisy[m][flipped] == nxt)
        assert np.all(f2c[noisy[m]] == f2c[c])  # never leaves the superclass


def test_asym_super_needs_coarse_labels_and_all_classes():
    clean = balanced(100, 3)
    with pytest.raises(DataError, match="coarse"):
        run("asym_super", clean, 0.4, dataset="cifar100")
    f2c = _coarse_map(0)
    sub = clean[clean != 7]
    with pytest.raises(DataError, match="missing fine classes"):
        run("asym_super", sub, 0.4, ctx=ctx_for("cifar100", 100, coarse_labels=f2c[sub]))
    bad = f2c[clean].copy()
    bad[np.flatnonzero(clean == 3)[0]] = (f2c[3] + 1) % 20
    with pytest.raises(DataError, match="inconsistent"):
        run("asym_super", clean, 0.4, ctx=ctx_for("cifar100", 100, coarse_labels=bad))
    with pytest.raises(ConfigError, match="cifar100"):
        run("asym_super", balanced(10, 5), 0.4, dataset="cifar10")


@SETTINGS
@given(K=st.integers(2, 15), rate=st.floats(0, 0.99), seed=st.integers(0, 2**32))
def test_pairflip(K, rate, seed):
    rng = np.random.default_rng(seed)
    clean = rng.permutation(np.repeat(np.arange(K), rng.integers(0, 30, size=K)))
    if clean.size == 0:
        clean = np.arange(K)
    res = run("pairflip", clean, rate, seed=seed, dataset="digits", K=K)
    check_stats(res, clean, K)
    for c in range(K):
        m = clean == c
        flipped = res.noisy_labels[m] != c
        assert flipped.sum() == round(rate * m.sum())
        assert np.all(res.noisy_labels[m][flipped] == (c + 1) % K)


# ------------------------------------------------------------------------- determinism, isolation

@pytest.mark.parametrize("kind,dataset", [("sym", "cifar10"), ("sym_other", "cifar10"),
                                          ("asym", "cifar10"), ("asym", "cifar100"),
                                          ("pairflip", "digits")])
def test_seed_determinism(kind, dataset):
    K = 100 if dataset == "cifar100" else 10
    clean = balanced(K, 50)
    a = run(kind, clean, 0.4, seed=7, dataset=dataset, K=K)
    b = run(kind, clean, 0.4, seed=7, dataset=dataset, K=K)
    c = run(kind, clean, 0.4, seed=8, dataset=dataset, K=K)
    np.testing.assert_array_equal(a.noisy_labels, b.noisy_labels)
    assert a.label_hash == b.label_hash
    assert not np.array_equal(a.noisy_labels, c.noisy_labels) and a.label_hash != c.label_hash


def test_known_hash_is_stable():
    """Same (noise, seed, labels) -> same labels on every machine (PCG64 streams are stable)."""
    res = run("sym", np.arange(20) % 10, 0.5, seed=0)
    again = run("sym", np.arange(20) % 10, 0.5, seed=0)
    assert res.label_hash == again.label_hash
    import hashlib
    assert res.label_hash == hashlib.sha256(
        res.noisy_labels.astype("<i8").tobytes()).hexdigest()[:16]


def test_global_rngs_untouched():
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    before = (np.random.get_state(), random.getstate(), torch.get_rng_state().clone())
    clean10, clean100 = balanced(10, 30), balanced(100, 3)
    for kind in ("clean", "sym", "sym_other", "asym", "pairflip"):
        run(kind, clean10, 0.0 if kind == "clean" else 0.4, seed=1)
    run("asym", clean100, 0.4, seed=1, dataset="cifar100")
    run("asym_super", clean100, 0.4, seed=1,
        ctx=ctx_for("cifar100", 100, coarse_labels=_coarse_map(0)[clean100]))
    run("real", None, 0.0, ctx=ctx_for("clothing1m", 14, given_noisy=np.arange(14)))
    if DATA_DIR is not None:
        d = torch.load(DATA_DIR / "cifar-n" / "CIFAR-10_human.pt", weights_only=False)
        run("human", d["clean_label"], 0.09, label="aggre",
            ctx=ctx_for("cifar10", 10, data_dir=DATA_DIR))
    after = (np.random.get_state(), random.getstate(), torch.get_rng_state())
    assert before[0][0] == after[0][0] and np.array_equal(before[0][1], after[0][1])
    assert before[0][2:] == after[0][2:]
    assert before[1] == after[1]
    assert torch.equal(before[2], after[2])


# ------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan")])
def test_bad_rate(rate):
    with pytest.raises(ConfigError, match=repr(rate) if rate == rate else "nan"):
        run("sym", balanced(10, 5), rate)


def test_unknown_kind_lists_choices():
    with pytest.raises(ConfigError) as e:
        run("symmetric", balanced(10, 5), 0.2)
    msg = str(e.value)
    assert "'symmetric'" in msg
    for k in NOISE.names():
        assert k in msg


def test_asym_digits_is_the_mnist_map():
    clean = balanced(10, 50)
    res = run("asym", clean, 0.4, dataset="digits", K=10)
    flipped = res.noisy_labels != clean
    pairs = set(zip(clean[flipped].tolist(), res.noisy_labels[flipped].tolist()))
    assert pairs == {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}
    assert all((flipped & (clean == c)).sum() == 20 for c in (2, 3, 5, 6, 7))   # exactly round(0.4 * 50)
    assert res.actual_rate == pytest.approx(0.2)
    from nlbench.noise import expected_rate
    assert expected_rate("asym", 0.4, num_classes=10, dataset="digits") == pytest.approx(0.2)


def test_inapplicable_noise_is_an_error():
    with pytest.raises(ConfigError, match="digits") as e:
        run("asym_super", balanced(10, 5), 0.2, dataset="digits", K=10)
    assert "cifar100" in str(e.value)
    with pytest.raises(ConfigError, match="digits"):
        run("human", balanced(10, 5), 0.2, dataset="digits", K=10, label="aggre")
    with pytest.raises(ConfigError, match=r"noise=real needs a real-noise dataset \(clothing1m, webvision\)"):
        run("real", balanced(10, 5), 0.0)
    with pytest.raises(ConfigError, match="rate"):
        run("clean", balanced(10, 5), 0.2)
    with pytest.raises(ConfigError, match="clean labels"):
        run("sym", None, 0.2, K=10)


def test_unknown_option():
    with pytest.raises(ConfigError, match="bogus"):
        run("sym", balanced(10, 5), 0.2, bogus=1)


def test_bad_clean_labels():
    with pytest.raises(DataError, match="out of range"):
        run("sym", np.array([0, 1, 10]), 0.2)


def test_transition_matrix_helper():
    T = transition_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    np.testing.assert_array_equal(T, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]])
    assert rate_of(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1])) == 0.25


def test_real_noise():
    given_noisy = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    ctx = ctx_for("clothing1m", 14, given_noisy=given_noisy)
    res = apply_noise("real", name="real", clean=None, rate=0.0, seed=0, ctx=ctx)
    np.testing.assert_array_equal(res.noisy_labels, given_noisy)
    assert res.actual_rate is None and res.transition is None
    rec = res.to_record()
    assert rec["actual_rate"] is None and rec["transition"] is None and rec["n_noisy"] is None
    import json
    json.dumps(rec)


# ----------------------------------------------------------------------------------- CIFAR-N files

@pytest.fixture(scope="module")
def c10n():
    if DATA_DIR is None:
        pytest.skip("CIFAR-N label files not found under $NLBENCH_DATA_DIR or ../shared/data")
    return torch.load(DATA_DIR / "cifar-n" / "CIFAR-10_human.pt", weights_only=False)


@pytest.mark.parametrize("label,expected", [("aggre", 0.0901), ("worse", 0.4021),
                                            ("random1", 0.1723), ("random2", 0.1812),
                                            ("random3", 0.1764)])
def test_human_cifar10_rates(c10n, label, expected):
    clean = c10n["clean_label"]
    res = run("human", clean, expected, label=label, ctx=ctx_for("cifar10", 10, data_dir=DATA_DIR))
    assert res.actual_rate == pytest.approx(expected, abs=1e-4)
    check_stats(res, clean, 10)


def test_human_subset_and_misalignment(c10n):
    clean_full = c10n["clean_label"]
    idx = np.random.default_rng(0).choice(50000, size=1000, replace=False)
    ctx = ctx_for("cifar10", 10, data_dir=DATA_DIR, train_index=idx)
    res = run("human", clean_full[idx], 0.4, label="worse", ctx=ctx)
    np.testing.assert_array_equal(res.noisy_labels, c10n["worse_label"][idx])
    with pytest.raises(DataError, match="misaligned"):
        run("human", np.roll(clean_full[idx], 1), 0.4, label="worse", ctx=ctx)
    with pytest.raises(DataError, match="misaligned"):
        run("human", np.roll(clean_full, 1), 0.4, label="worse",
            ctx=ctx_for("cifar10", 10, data_dir=DATA_DIR))
    with pytest.raises(ConfigError, match="aggre"):  # unknown label lists the choices
        run("human", clean_full, 0.4, label="worst", ctx=ctx_for("cifar10", 10, data_dir=DATA_DIR))


def test_human_cifar100(c10n):
    d = torch.load(DATA_DIR / "cifar-n" / "CIFAR-100_human.pt", weights_only=False)
    clean = np.asarray(d["clean_label"])
    res = run("human", clean, 0.402, dataset="cifar100",
              ctx=ctx_for("cifar100", 100, data_dir=DATA_DIR))
    assert res.actual_rate == pytest.approx(0.402, abs=1e-4)
    # true-superclass asym with the real coarse map never leaves the superclass
    coarse = np.asarray(d["clean_coarse_label"])
    r = run("asym_super", clean, 0.4, dataset="cifar100",
            ctx=ctx_for("cifar100", 100, coarse_labels=coarse))
    f2c = np.zeros(100, dtype=np.int64)
    f2c[clean] = coarse
    assert np.all(f2c[r.noisy_labels] == coarse)
    assert r.actual_rate == pytest.approx(0.4)


def test_human_missing_file(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "cifar-n" / "CIFAR-10_human.pt")):
        run("human", balanced(10, 5), 0.1, label="aggre",
            ctx=ctx_for("cifar10", 10, data_dir=tmp_path))


# --------------------------------------------------------------------------------------- configs

CONF = sorted((ROOT / "conf" / "noise").glob("*.yaml"))


def test_configs_exist():
    names = {p.stem for p in CONF}
    for n in ["clean", "sym0.4", "symo0.4", "asym0.4", "asym_super0.4", "pair0.45", "c10n_aggre",
              "c10n_worse", "c100n", "real"]:
        assert n in names


@pytest.mark.parametrize("path", CONF, ids=[p.stem for p in CONF])
def test_config_loads(path):
    from omegaconf import OmegaConf

    from nlbench.hydra_setup import RATE_FAMILIES, register_resolvers

    register_resolvers()
    raw = OmegaConf.load(path)
    assert path.read_text().startswith("# ")
    if OmegaConf.is_missing(raw, "rate"):     # a rate family (noise=sym noise.rate=r): no preset rate
        assert path.stem in RATE_FAMILIES and raw.prefix == path.stem and raw.kind == RATE_FAMILIES[path.stem]
        return
    cfg = OmegaConf.to_container(raw, resolve=True)
    assert {"name", "kind", "rate", "options"} <= set(cfg) <= {"name", "kind", "rate", "options", "prefix",
                                                               "expected_rate"}
    assert cfg["name"] == path.stem
    assert cfg["kind"] in NOISE
    assert isinstance(cfg["rate"], float) and 0 <= cfg["rate"] < 1
    assert isinstance(cfg["options"], dict)
    # the config runs on a dataset it applies to
    kind, opts = cfg["kind"], cfg["options"]
    if kind == "human":
        if DATA_DIR is None:
            pytest.skip("CIFAR-N label files not found")
        ds = "cifar100" if opts.get("label") == "noisy" else "cifar10"
        fname = "CIFAR-100_human.pt" if ds == "cifar100" else "CIFAR-10_human.pt"
        d = torch.load(DATA_DIR / "cifar-n" / fname, weights_only=False)
        K = 100 if ds == "cifar100" else 10
        res = apply_noise(kind, name=cfg["name"], clean=np.asarray(d["clean_label"]), rate=cfg["rate"],
                          seed=0, ctx=ctx_for(ds, K, data_dir=DATA_DIR), **opts)
        assert res.actual_rate == pytest.approx(cfg["rate"], abs=1e-4)
        return
    if kind == "real":
        ctx, clean = ctx_for("clothing1m", 14, given_noisy=np.arange(14)), None
    elif kind == "asym_super":
        clean = balanced(100, 4)
        ctx = ctx_for("cifar100", 100, coarse_labels=_coarse_map(0)[clean])
    elif kind == "idn":   # instance-dependent: needs the images
        clean = balanced(10, 40)
        ctx = ctx_for("cifar10", 10, features=np.random.default_rng(0).integers(0, 256, (400, 12)).astype(np.uint8))
    else:
        clean, ctx = balanced(10, 40), ctx_for("cifar10", 10)
    res = apply_noise(kind, name=cfg["name"], clean=clean, rate=cfg["rate"], seed=0, ctx=ctx, **opts)
    assert res.name == cfg["name"] and res.kind == kind and res.nominal_rate == cfg["rate"]
