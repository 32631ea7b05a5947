"""Label-noise models: pure functions from clean labels to noisy labels, plus the stats a record needs.

Every model is registered in :data:`NOISE` under one key and has the signature
``fn(clean, rate, rng, ctx, **options) -> noisy`` where ``clean`` is (N,) int64 (or ``None`` for
real noise with unknown clean labels), ``rate`` the nominal rate, ``rng`` a ``np.random.Generator``
built from the noise seed (the *only* randomness a model may use: never the global numpy / torch /
``random`` RNGs), ``ctx`` a :class:`NoiseContext`. Noisy labels are always chosen from the *clean*
labels, never from a partly modified copy (the ELR/HanxunH cat<->dog bug, methods.md 3.2).

Call :func:`apply_noise`: it validates the kind, rate, dataset and options, seeds the generator and
returns a :class:`NoiseResult` with the actual rate, the (K, K) transition matrix and a label hash.
The same (dataset, noise, seed, clean labels) gives the same labels on every machine: only
``np.random.default_rng(seed)`` (PCG64) is used, whose streams numpy keeps stable across versions.

Conventions (methods.md section 3):

* ``sym``        DivideMix/ELR: exactly int(r*N) samples, each relabelled uniformly over all K classes
                 (the true class included), so the actual rate is about r*(K-1)/K.
* ``sym_other``  "other class": exactly round(r*N) samples, each relabelled uniformly over the K-1
                 wrong classes, so the actual rate is exactly round(r*N)/N.
* ``asym``       CIFAR-10 map 9->1, 2->0, 4->7, 3<->5; digits the MNIST map 2->7, 3->8, 5<->6, 7->1
                 (Patrini et al. 2017); CIFAR-100 index-block next class (ELR/JoCoR
                 blocks of 5 consecutive fine ids, which are *not* CIFAR superclasses); exactly
                 round(r*n_c) samples of each source class c.
* ``asym_super`` CIFAR-100 true-superclass next class (fine ids grouped by coarse label, sorted,
                 circular); exactly round(r*n_c) per class.
* ``pairflip``   Co-teaching pair flip i -> i+1 (mod K); exactly round(r*n_c) per class.
* ``idn``        instance-dependent (part-dependent) noise of Xia et al. (NeurIPS 2020), as CAL, CORES,
                 DISC and ProMix report it: a per-sample flip rate q_i ~ N(r, 0.1) truncated to [0, 1],
                 and a flip distribution that depends on the image (see :func:`idn_flip_distribution`).
* ``human``      CIFAR-10N / CIFAR-100N label files (UCSC-REAL/cifar-10-100n).
* ``real``       the labels a real-noise dataset ships (Clothing1M, WebVision).

"round" is Python's ``round`` (half to even), applied to ``rate * n`` as a float.
"""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .registry import ConfigError, DataError, Registry, check_range

__all__ = [
    "NOISE", "NoiseContext", "NoiseResult", "apply_noise", "expected_rate", "rate_of", "transition_matrix",
    "CIFAR10_ASYM_MAP", "DIGITS_ASYM_MAP", "HUMAN_LABELS",
]

NOISE: Registry[Callable[..., np.ndarray]] = Registry("noise model")

# CIFAR-10 class-dependent flips (truck->automobile, bird->airplane, deer->horse, cat<->dog).
CIFAR10_ASYM_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
# Digits (8x8, sklearn): the MNIST asymmetric map of Patrini et al. (CVPR 2017), used by the GCE and SL
# papers for MNIST: 2->7, 3->8, 5<->6, 7->1 (similar-looking digits).
DIGITS_ASYM_MAP: dict[int, int] = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}

# dataset -> (file name under data_dir/cifar-n, {option label: file key}, num_classes)
HUMAN_LABELS: dict[str, tuple[str, dict[str, str], int]] = {
    "cifar10": ("CIFAR-10_human.pt", {
        "aggre": "aggre_label", "worse": "worse_label", "random1": "random_label1",
        "random2": "random_label2", "random3": "random_label3"}, 10),
    "cifar100": ("CIFAR-100_human.pt", {"noisy": "noisy_label"}, 100),
}


@dataclass(frozen=True)
class NoiseContext:
    """What a noise model may know about the dataset besides the clean labels.

    ``train_index``: (N,) indices of these samples in the full official training set (for subsets);
    ``None`` means the samples *are* the full training set in official order.
    ``coarse_labels``: (N,) CIFAR-100 superclass ids of these samples, when known.
    ``given_noisy``: (N,) labels shipped by a real-noise dataset (Clothing1M / WebVision).
    ``features``: (N, d) the training images flattened in their stored layout (in-memory datasets
    only), for instance-dependent noise.
    """
    dataset: str
    num_classes: int
    data_dir: Path | None = None
    train_index: np.ndarray | None = None
    coarse_labels: np.ndarray | None = None
    given_noisy: np.ndarray | None = None
    features: np.ndarray | None = None


@dataclass(frozen=True)
class NoiseResult:
    """The realised noise of one run. ``actual_rate`` / ``transition`` are None when clean is unknown."""
    name: str
    kind: str
    nominal_rate: float
    noisy_labels: np.ndarray
    actual_rate: float | None
    transition: np.ndarray | None
    label_hash: str

    @property
    def n_noisy(self) -> int | None:
        """Number of samples whose noisy label differs from the clean one (None when unknown)."""
        if self.actual_rate is None:
            return None
        return int(round(self.actual_rate * len(self.noisy_labels)))

    def to_record(self) -> dict[str, Any]:
        """JSON-able summary (no per-sample labels): rates, transition (6 dp), hash, noisy count."""
        return {
            "name": self.name,
            "kind": self.kind,
            "nominal_rate": float(self.nominal_rate),
            "actual_rate": None if self.actual_rate is None else float(self.actual_rate),
            "transition": (None if self.transition is None
                           else np.round(self.transition, 6).tolist()),
            "label_hash": self.label_hash,
            "n_noisy": self.n_noisy,
        }


# ----------------------------------------------------------------------------------------- helpers

def rate_of(noisy: np.ndarray, clean: np.ndarray) -> float:
    """Fraction of samples whose noisy label differs from the clean one (0.0 for an empty set)."""
    noisy, clean = np.asarray(noisy), np.asarray(clean)
    if noisy.shape != clean.shape:
        raise ValueError(f"shape mismatch: noisy {noisy.shape} vs clean {clean.shape}")
    return float(np.mean(noisy != clean)) if noisy.size else 0.0


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, K: int) -> np.ndarray:
    """(K, K) float64 empirical transition: T[i, j] = fraction of clean-class-i samples labelled j.

    A class with no samples gets the identity row, so every row sums to 1.
    """
    clean = np.asarray(clean, dtype=np.int64)
    noisy = np.asarray(noisy, dtype=np.int64)
    counts = np.bincount(clean * K + noisy, minlength=K * K).reshape(K, K).astype(np.float64)
    n = counts.sum(axis=1, keepdims=True)
    T = np.divide(counts, n, out=np.zeros_like(counts), where=n > 0)
    empty = n[:, 0] == 0
    T[empty] = np.eye(K)[empty]
    return T


def label_hash(noisy: np.ndarray) -> str:
    """sha256 (first 16 hex chars) of the labels as little-endian int64: equal on every machine."""
    return hashlib.sha256(np.asarray(noisy).astype("<i8").tobytes()).hexdigest()[:16]


def _count(rate: float, n: int) -> int:
    """The exact number of samples to flip out of n: Python round(rate * n)."""
    return int(round(rate * n))


def _canon_dataset(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def _flip_per_class(clean: np.ndarray, rate: float, rng: np.random.Generator,
                    target: dict[int, int]) -> np.ndarray:
    """Flip exactly round(rate * n_c) samples of each source class c to target[c].

    Members are selected from the clean labels, source classes visited in ascending order.
    """
    noisy = clean.copy()
    for c in sorted(target):
        idx = np.flatnonzero(clean == c)
        m = _count(rate, idx.size)
        if m == 0:
            continue
        chosen = rng.choice(idx, size=m, replace=False)
        noisy[chosen] = target[c]
    return noisy


def _noise(name: str, *, datasets: tuple[str, ...] | None = None, needs_clean: bool = True):
    """Register a noise model; ``datasets`` limits where it applies (None = any dataset)."""
    def deco(fn):
        fn.datasets = datasets
        fn.needs_clean = needs_clean
        return NOISE.register(name)(fn)
    return deco


# ---------------------------------------------------------------------------------------- models

@_noise("clean")
def clean_noise(clean, rate, rng, ctx) -> np.ndarray:
    """No noise: the clean labels (rate must be 0)."""
    if rate != 0:
        raise ConfigError(f"noise 'clean' needs rate 0, got rate={rate!r}")
    return clean.copy()


@_noise("sym")
def sym(clean, rate, rng, ctx) -> np.ndarray:
    """DivideMix/ELR symmetric: int(r*N) samples resampled uniformly over all K classes."""
    N, K = clean.size, ctx.num_classes
    m = int(rate * N)
    noisy = clean.copy()
    chosen = rng.choice(N, size=m, replace=False)
    noisy[chosen] = rng.integers(0, K, size=m)
    return noisy


@_noise("sym_other")
def sym_other(clean, rate, rng, ctx) -> np.ndarray:
    """Symmetric to another class: round(r*N) samples, each uniform over the K-1 wrong classes."""
    N, K = clean.size, ctx.num_classes
    if K < 2:
        raise ConfigError(f"noise 'sym_other' needs at least 2 classes, got num_classes={K}")
    m = _count(rate, N)
    noisy = clean.copy()
    chosen = rng.choice(N, size=m, replace=False)
    noisy[chosen] = (clean[chosen] + rng.integers(1, K, size=m)) % K
    return noisy


def _cifar100_block_next(K: int) -> dict[int, int]:
    return {i: (i // 5) * 5 + (i % 5 + 1) % 5 for i in range(K)}


@_noise("asym", datasets=("cifar10", "cifar100", "digits"))
def asym(clean, rate, rng, ctx) -> np.ndarray:
    """CIFAR-10 class map / CIFAR-100 index-block next class / the MNIST map on digits; exactly
    round(r*n_c) per source class."""
    ds = _canon_dataset(ctx.dataset)
    expected = {"cifar10": 10, "cifar100": 100, "digits": 10}[ds]
    if ctx.num_classes != expected:
        raise ConfigError(f"noise 'asym' on {ctx.dataset} needs {expected} classes, "
                          f"got num_classes={ctx.num_classes}")
    target = {"cifar10": CIFAR10_ASYM_MAP, "digits": DIGITS_ASYM_MAP}.get(ds) or _cifar100_block_next(expected)
    return _flip_per_class(clean, rate, rng, target)


def superclass_next(clean: np.ndarray, coarse: np.ndarray, K: int) -> dict[int, int]:
    """fine -> next fine id in its superclass (ids sorted within each group, circular).

    Derived from the (fine, coarse) pairs of the given samples; every fine class 0..K-1 must occur
    (otherwise the groups, and so the map, would depend on the subset) and map to one coarse id.
    """
    fine_to_coarse: dict[int, int] = {}
    pairs = np.unique(np.stack([clean, coarse], axis=1), axis=0)
    for f, c in pairs.tolist():
        if f in fine_to_coarse:
            raise DataError(f"fine class {f} has several coarse labels "
                            f"({fine_to_coarse[f]}, {c}): coarse_labels are inconsistent")
        fine_to_coarse[f] = c
    missing = sorted(set(range(K)) - set(fine_to_coarse))
    if missing:
        raise DataError(f"noise 'asym_super' needs samples of every fine class to build the "
                        f"superclass groups; missing fine classes {missing[:10]}"
                        f"{' ...' if len(missing) > 10 else ''}")
    groups: dict[int, list[int]] = {}
    for f in sorted(fine_to_coarse):
        groups.setdefault(fine_to_coarse[f], []).append(f)
    target = {}
    for members in groups.values():
        for a, b in zip(members, members[1:] + members[:1]):
            target[a] = b
    return target


@_noise("asym_super", datasets=("cifar100",))
def asym_super(clean, rate, rng, ctx) -> np.ndarray:
    """CIFAR-100 true-superclass next class; exactly round(r*n_c) per class."""
    if ctx.coarse_labels is None:
        raise DataError("noise 'asym_super' needs the CIFAR-100 coarse (superclass) labels, "
                        "but ctx.coarse_labels is None")
    coarse = np.asarray(ctx.coarse_labels, dtype=np.int64)
    if coarse.shape != clean.shape:
        raise DataError(f"coarse_labels has shape {coarse.shape}, clean labels {clean.shape}")
    return _flip_per_class(clean, rate, rng, superclass_next(clean, coarse, ctx.num_classes))


@_noise("pairflip")
def pairflip(clean, rate, rng, ctx) -> np.ndarray:
    """Co-teaching pair flip i -> (i+1) mod K; exactly round(r*n_c) per class."""
    K = ctx.num_classes
    return _flip_per_class(clean, rate, rng, {i: (i + 1) % K for i in range(K)})


IDN_SCALES = ("raw", "unit", "l2")


def idn_flip_distribution(x: np.ndarray, clean: np.ndarray, rate: float, rng: np.random.Generator, K: int, *,
                          sd: float = 0.1, scale: str = "raw") -> tuple[np.ndarray, np.ndarray]:
    """Per-sample label distributions P (N, K) of part-dependent noise (Xia et al., NeurIPS 2020),
    and the flip rates q (N,).

    q_i ~ N(rate, sd) truncated to [0, 1]; W (K, d, K) has N(0, 1) entries; for sample i with clean
    label y_i, a_i = x_i W[y_i] (K,), the true class masked out, and
    P_i = q_i softmax(a_i) + (1 - q_i) onehot(y_i). Drawn in this order from ``rng``: q, then W.
    ``x`` (N, d) are the flattened images; ``scale`` says what the projection sees: ``raw`` the stored
    values (0-255 for CIFAR, as the public generators pass ``torch.from_numpy(data).float()``), ``unit``
    those / 255 (or / max), ``l2`` each row divided by its L2 norm (a softer, less one-hot flip
    distribution). With ``raw`` or ``unit`` and d = 3072 the logits are large, so each image flips
    almost always to one wrong class of its own: which one depends on the image.
    """
    from scipy.stats import truncnorm

    if scale not in IDN_SCALES:
        raise ConfigError(f"noise 'idn': unknown scale {scale!r}; valid choices: {', '.join(IDN_SCALES)}")
    check_range("noise 'idn' sd", sd, 0, None, lo_open=True)
    x = np.asarray(x, dtype=np.float64).reshape(len(clean), -1)
    if scale == "unit":
        x = x / max(float(x.max()), 1e-12)
    elif scale == "l2":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n, d = x.shape
    lo, hi = (0.0 - rate) / sd, (1.0 - rate) / sd
    q = truncnorm.rvs(lo, hi, loc=rate, scale=sd, size=n, random_state=rng)
    W = rng.standard_normal((K, d, K))
    P = np.zeros((n, K))
    for c in range(K):   # one matrix product per true class
        idx = np.flatnonzero(clean == c)
        if idx.size == 0:
            continue
        a = x[idx] @ W[c]
        a[:, c] = -np.inf
        a = np.exp(a - a.max(1, keepdims=True))
        P[idx] = q[idx, None] * a / a.sum(1, keepdims=True)
        P[idx, c] += 1.0 - q[idx]
    return P, q


def idn_expected_rate(rate: float, sd: float = 0.1) -> float:
    """The mean flip rate of ``idn`` noise: the mean of N(rate, sd) truncated to [0, 1]."""
    from scipy.stats import truncnorm

    return float(truncnorm.mean((0.0 - rate) / sd, (1.0 - rate) / sd, loc=rate, scale=sd))


@_noise("idn")
def idn(clean, rate, rng, ctx, *, sd: float = 0.1, scale: str = "raw") -> np.ndarray:
    """Instance-dependent (part-dependent) noise: P from :func:`idn_flip_distribution`, then one label
    per sample drawn from its row of P (inverse CDF at a uniform from ``rng``)."""
    if ctx.features is None:
        raise ConfigError(f"noise 'idn' needs the training images (an in-memory dataset: digits, cifar10, "
                          f"cifar100); dataset {ctx.dataset!r} does not provide them")
    K = ctx.num_classes
    if K < 2:
        raise ConfigError(f"noise 'idn' needs at least 2 classes, got num_classes={K}")
    if rate == 0:
        return clean.copy()
    P, _ = idn_flip_distribution(ctx.features, clean, rate, rng, K, sd=sd, scale=scale)
    u = rng.random(len(clean))
    return np.minimum((np.cumsum(P, axis=1) < u[:, None]).sum(1), K - 1).astype(np.int64)


_HUMAN_CACHE: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}


def _load_human(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-N label file not found: searched {path} "
                        f"(get it from github.com/UCSC-REAL/cifar-10-100n, data/{path.name})")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _HUMAN_CACHE:
        import torch  # lazy: the rest of this module is numpy-only
        try:
            raw = torch.load(path, weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file
            raise DataError(f"cannot read CIFAR-N label file {path}: {e}") from e
        if not isinstance(raw, dict):
            raise DataError(f"{path} does not hold a dict of label arrays")
        _HUMAN_CACHE.clear()
        _HUMAN_CACHE[key] = {k: np.asarray(v, dtype=np.int64) for k, v in raw.items()}
    return _HUMAN_CACHE[key]


@_noise("human", datasets=("cifar10", "cifar100"))
def human(clean, rate, rng, ctx, *, label: str | None = None) -> np.ndarray:
    """CIFAR-10N / CIFAR-100N human labels, mapped through ctx.train_index; rate is informational.

    ``label``: cifar10 one of aggre, worse, random1, random2, random3; cifar100 noisy (the default).
    The file's clean_label must equal ``clean`` (else the files and the images are misaligned).
    """
    ds = _canon_dataset(ctx.dataset)
    fname, keys, K = HUMAN_LABELS[ds]
    if ctx.num_classes != K:
        raise ConfigError(f"noise 'human' on {ctx.dataset} needs {K} classes, "
                          f"got num_classes={ctx.num_classes}")
    if label is None and len(keys) == 1:
        label = next(iter(keys))
    if label not in keys:
        raise ConfigError(f"noise 'human' on {ctx.dataset}: unknown label {label!r}; "
                          f"valid choices: {', '.join(keys)}")
    if ctx.data_dir is None:
        raise DataError(f"noise 'human' needs the data directory holding cifar-n/{fname}, "
                        "but ctx.data_dir is None")
    path = Path(ctx.data_dir) / "cifar-n" / fname
    data = _load_human(path)
    for k in ("clean_label", keys[label]):
        if k not in data:
            raise DataError(f"{path} has no key {k!r} (keys: {', '.join(sorted(data))})")
    file_clean, file_noisy = data["clean_label"], data[keys[label]]
    M = file_clean.size
    if ctx.train_index is None:
        if clean.size != M:
            raise DataError(f"{path} holds {M} labels but there are {clean.size} samples; "
                            "pass train_index for a subset of the training set")
        index = np.arange(M)
    else:
        index = np.asarray(ctx.train_index, dtype=np.int64)
        if index.shape != clean.shape:
            raise DataError(f"train_index has shape {index.shape}, clean labels {clean.shape}")
        if index.size and (index.min() < 0 or index.max() >= M):
            raise DataError(f"train_index out of range [0, {M}) for {path}")
    bad = np.flatnonzero(file_clean[index] != clean)
    if bad.size:
        raise DataError(f"CIFAR-N files are misaligned with the training labels: {bad.size} of "
                        f"{clean.size} clean labels differ from {path}'s clean_label (first at "
                        f"sample {int(bad[0])}, training index {int(index[bad[0]])}); the file is in "
                        "the official python-pickle training order")
    return file_noisy[index].copy()


@_noise("real", needs_clean=False)
def real(clean, rate, rng, ctx) -> np.ndarray:
    """The dataset's own (noisy) labels, e.g. Clothing1M / WebVision; clean may be unknown."""
    if ctx.given_noisy is None:
        raise ConfigError("noise=real needs a real-noise dataset (clothing1m, webvision); "
                          f"dataset {ctx.dataset!r} ships no noisy labels")
    noisy = np.asarray(ctx.given_noisy).astype(np.int64)
    if clean is not None and noisy.shape != clean.shape:
        raise DataError(f"given noisy labels have shape {noisy.shape}, clean labels {clean.shape}")
    return noisy.copy()


# ---------------------------------------------------------------------------------------- expected rate

def expected_rate(kind: str, rate: float, *, num_classes: int, dataset: str, name: str = "",
                  given: float | dict | None = None) -> float:
    """The fraction of training labels a noise config is expected to corrupt, from the config alone.

    What ``forget_rate: auto`` resolves to (the labels, clean or noisy, are never looked at):
    ``clean`` 0; ``sym`` r(K-1)/K (a resampled label keeps its class with probability 1/K: 0.36 for
    sym0.4 with K = 10); ``sym_other``, ``pairflip``, ``asym_super`` and CIFAR-100 ``asym`` r;
    CIFAR-10 ``asym`` r/2 (5 of the 10 classes flip); ``idn`` the mean of N(r, 0.1) truncated to [0, 1]. ``human`` and ``real`` noise have no formula:
    their noise yaml states ``expected_rate`` (a number, or a mapping dataset -> number, e.g. the
    published CIFAR-10N rates, Clothing1M ~0.385). ``given`` (that yaml key) wins for every kind.
    Raises ConfigError when the rate is unknown (WebVision).
    """
    if isinstance(given, dict):
        given = given.get(dataset)
    if given is not None:
        return float(check_range(f"expected_rate of noise {name or kind!r}", given, 0, 1, hi_open=True))
    r, K, ds = float(rate), int(num_classes), _canon_dataset(dataset)
    if kind == "clean":
        return 0.0
    if kind == "sym":
        return r * (K - 1) / K
    if kind in ("sym_other", "pairflip", "asym_super"):
        return r
    if kind == "asym":
        if ds in ("cifar10", "digits"):   # 5 of the 10 classes flip
            return r * len(CIFAR10_ASYM_MAP if ds == "cifar10" else DIGITS_ASYM_MAP) / 10
        return r
    if kind == "idn":
        return idn_expected_rate(r) if r > 0 else 0.0
    raise ConfigError(f"the expected noise rate of noise {name or kind!r} (kind {kind!r}) on dataset "
                      f"{dataset!r} is unknown: set the forget rate explicitly, e.g. "
                      "method.params.forget_rate=0.3, or state expected_rate in the noise yaml")


# ---------------------------------------------------------------------------------------- driver

def _options_of(fn) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _as_labels(name: str, y: Any, K: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{name} labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise DataError(f"{name} labels must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= K):
        raise DataError(f"{name} labels out of range [0, {K}): min {arr.min()}, max {arr.max()}")
    return arr


def apply_noise(kind: str, *, name: str, clean: np.ndarray | None, rate: float, seed: int,
                ctx: NoiseContext, **options: Any) -> NoiseResult:
    """Validate, draw the noisy labels with ``np.random.default_rng(seed)``, and summarise them.

    ``clean``: (N,) int labels, or None (only for ``real``). ``rate`` in [0, 1).
    Raises ConfigError for an unknown kind, a bad rate, an inapplicable dataset or unknown option
    keys; DataError for missing / misaligned data.
    """
    fn = NOISE.get(kind)
    try:
        rate = check_range("noise.rate", rate, 0.0, 1.0, hi_open=True)
    except ConfigError as e:
        raise ConfigError(f"noise {name!r}: {e}") from None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"noise seed must be a non-negative integer, got {seed!r}")
    K = int(ctx.num_classes)
    if K < 1:
        raise ConfigError(f"num_classes must be >= 1, got {ctx.num_classes!r}")
    ds = _canon_dataset(ctx.dataset)
    if fn.datasets is not None and ds not in fn.datasets:
        raise ConfigError(f"noise {name!r} (kind {kind!r}) does not apply to dataset "
                          f"{ctx.dataset!r}; it applies to: {', '.join(fn.datasets)}")
    allowed = _options_of(fn)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"noise {name!r} (kind {kind!r}): unknown option(s) {', '.join(unknown)}; "
                          f"valid options: {', '.join(sorted(allowed)) or '(none)'}")
    if clean is None:
        if fn.needs_clean:
            raise ConfigError(f"noise {name!r} (kind {kind!r}) needs the clean labels, "
                              f"but dataset {ctx.dataset!r} has none; its own labels are the noise: use noise=real")
    else:
        clean = _as_labels("clean", clean, K)

    rng = np.random.default_rng(int(seed))
    noisy = _as_labels(f"noisy ({kind})", fn(clean, rate, rng, ctx, **options), K)
    if clean is not None and noisy.shape != clean.shape:
        raise DataError(f"noise {kind!r} returned {noisy.shape} labels for {clean.shape} samples")

    if clean is None:
        actual, T = None, None
    else:
        actual = int(np.count_nonzero(noisy != clean)) / clean.size if clean.size else 0.0
        T = transition_matrix(clean, noisy, K)
    return NoiseResult(name=name, kind=kind, nominal_rate=rate, noisy_labels=noisy,
                       actual_rate=actual, transition=T, label_hash=label_hash(noisy))
