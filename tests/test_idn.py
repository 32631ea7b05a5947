"""Instance-dependent (part-dependent) noise, ``noise=idn<r>``: rate, dependence on the image,
reproducibility, and the closed form of its flip distribution."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from nlbench.noise import NoiseContext, apply_noise, expected_rate, idn_expected_rate, idn_flip_distribution
from nlbench.registry import ConfigError


def _images(n=4000, d=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, d)).astype(np.uint8), rng.integers(0, 10, size=n)


def _draw(x, clean, rate=0.4, seed=0, **opts):
    ctx = NoiseContext(dataset="cifar10", num_classes=10, features=x)
    return apply_noise("idn", name=f"idn{rate}", clean=clean, rate=rate, seed=seed, ctx=ctx, **opts)


@pytest.mark.parametrize("rate", [0.2, 0.4])
@pytest.mark.parametrize("scale", ["raw", "l2"])
def test_actual_rate_is_the_mean_flip_rate(rate, scale):
    x, clean = _images()
    res = _draw(x, clean, rate, scale=scale)
    # N = 4000 Bernoulli(q_i) flips with mean q ~ tau: 4 standard errors is about 0.031
    assert abs(res.actual_rate - idn_expected_rate(rate)) < 0.031
    assert 0 <= idn_expected_rate(rate) - rate < 0.006                 # truncation at 0: +0.0055 at 0.2
    assert expected_rate("idn", rate, num_classes=10, dataset="cifar10") == pytest.approx(idn_expected_rate(rate))


def test_truncation_raises_the_mean_at_small_rates():
    assert idn_expected_rate(0.05) > 0.08          # N(0.05, 0.1) truncated at 0 has a mean above 0.05


def test_flip_distribution_closed_form():
    """P_i = q_i softmax(x_i W[y_i]) with the true class masked, plus 1 - q_i on the true class."""
    x, clean = _images(n=300)
    P, q = idn_flip_distribution(x, clean, 0.4, np.random.default_rng(3), 10, scale="l2")
    np.testing.assert_allclose(P.sum(1), 1.0)
    np.testing.assert_allclose(P[np.arange(300), clean], 1 - q)
    assert ((0 <= q) & (q <= 1)).all() and abs(q.mean() - 0.4) < 0.03 and 0.07 < q.std() < 0.13
    # the same draws by hand: q first, then W
    rng = np.random.default_rng(3)
    from scipy.stats import truncnorm
    q2 = truncnorm.rvs(-4.0, 6.0, loc=0.4, scale=0.1, size=300, random_state=rng)
    W = rng.standard_normal((10, 48, 10))
    xi = x[0] / np.linalg.norm(x[0].astype(float))
    a = xi @ W[clean[0]]
    a[clean[0]] = -np.inf
    want = q2[0] * np.exp(a - a[np.isfinite(a)].max()) / np.exp(a - a[np.isfinite(a)].max()).sum()
    want[clean[0]] = 1 - q2[0]
    np.testing.assert_allclose(P[0], want, rtol=1e-10)


def test_the_noise_depends_on_the_image():
    """Two copies of one image (same class) get the same distribution over the wrong classes; other
    images of that class get other ones."""
    x, clean = _images(n=200)
    x[1], clean[1] = x[0], clean[0]
    P, q = idn_flip_distribution(x, clean, 0.4, np.random.default_rng(0), 10, scale="l2")
    wrong = lambda i: np.delete(P[i], clean[i]) / q[i]          # noqa: E731
    np.testing.assert_allclose(wrong(0), wrong(1), rtol=1e-10)
    same_class = [i for i in range(2, 200) if clean[i] == clean[0]]
    assert all(not np.allclose(wrong(0), wrong(i)) for i in same_class)
    # with raw pixels the flip is nearly one class per image, and it is not one class for the whole class
    P_raw, _ = idn_flip_distribution(x, clean, 0.4, np.random.default_rng(0), 10, scale="raw")
    targets = {int(np.argmax(np.delete(P_raw[i], clean[i]))) for i in same_class}
    assert len(targets) > 3


def test_reproducible_and_seeded():
    x, clean = _images(n=1000)
    a, b = _draw(x, clean, seed=5), _draw(x, clean, seed=5)
    assert a.label_hash == b.label_hash and np.array_equal(a.noisy_labels, b.noisy_labels)
    assert _draw(x, clean, seed=6).label_hash != a.label_hash
    assert np.array_equal(_draw(x, clean, rate=0.0).noisy_labels, clean)


def test_bad_idn_input_names_the_choices():
    x, clean = _images(n=50)
    with pytest.raises(ConfigError, match="scale 'pixels'.*raw, unit, l2"):
        _draw(x, clean, scale="pixels")
    with pytest.raises(ConfigError, match="needs the training images"):
        apply_noise("idn", name="idn0.4", clean=clean, rate=0.4, seed=0,
                    ctx=NoiseContext(dataset="clothing1m", num_classes=10))


def test_idn_through_the_cli_validate_line(tmp_path):
    r = run_cli(["validate", "method=ce", "noise=idn0.4", "device=cpu"])
    assert r.rc == 0, r.err
    line = r.out.strip().splitlines()[-1]
    assert "noise=idn0.4" in line and "actual_rate=0.4" in line
    r2 = run_cli(["validate", "method=ce", "noise=idn", "noise.rate=0.3", "device=cpu"])
    assert r2.rc == 0 and "noise=idn0.3" in r2.out
