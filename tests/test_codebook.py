"""Lloyd-Max codebooks of the rotated-coordinate law, checked against closed forms and
an independent quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tqsearch.codebook import MAX_BITS, lloyd_max

# Lloyd-Max quantizer of N(0, 1): positive centroids and MSE (Max 1960; the paper's table)
GAUSSIAN_CENTROIDS = {
    1: [0.7979],
    2: [0.4528, 1.5104],
    3: [0.2451, 0.7560, 1.3439, 2.1519],
    4: [0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326],
}
GAUSSIAN_MSE = {1: 0.3634, 2: 0.1175, 3: 0.0345, 4: 0.0095}


def beta_law_quadrature(d, edges, n_grid=20_001):
    """Mass, first moment and second moment of each cell of the coordinate law.

    Independent of the library: trapezoid rule in ``t``, on a grid of its own
    inside every cell, of the density ``(1 - t^2)^((d - 3)/2)`` (smooth for
    d >= 5), normalised numerically.
    """
    cuts = np.concatenate([[-1.0], edges, [1.0]])
    mass, first, second = [], [], []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        t = np.linspace(lo, hi, n_grid)
        w = np.power(np.clip(1.0 - t * t, 0.0, None), (d - 3) / 2.0)
        mass.append(np.trapezoid(w, t))
        first.append(np.trapezoid(w * t, t))
        second.append(np.trapezoid(w * t * t, t))
    total = sum(mass)
    return np.array(mass) / total, np.array(first) / total, np.array(second) / total


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_gaussian_limit_centroids_and_mse(bits):
    d = 4096
    cb = lloyd_max(d, bits)
    positive = cb.centroids[len(cb.centroids) // 2:] * math.sqrt(d)
    np.testing.assert_allclose(positive, GAUSSIAN_CENTROIDS[bits], rtol=2e-3, atol=2e-4)
    assert cb.mse * d == pytest.approx(GAUSSIAN_MSE[bits], rel=1e-2)


def test_finite_dimension_codebook_is_narrower():
    # d = 128, 4 bits: largest centroid 2.6888 / sqrt(d), below the Gaussian 2.7326
    cb = lloyd_max(128, 4)
    assert cb.centroids[-1] * math.sqrt(128) == pytest.approx(2.6888, abs=1e-3)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_uniform_law_in_dimension_three(bits):
    # for d = 3 a coordinate of a uniform unit vector is uniform on [-1, 1]
    # (Archimedes), whose Lloyd-Max quantizer is the uniform one
    cb = lloyd_max(3, bits)
    levels = 2**bits
    expected = -1.0 + (2.0 * np.arange(levels) + 1.0) / levels
    np.testing.assert_allclose(cb.centroids, expected, atol=1e-6)
    assert cb.mse == pytest.approx((2.0 / levels) ** 2 / 12.0, rel=1e-5)


@pytest.mark.parametrize("d, bits", [(8, 2), (50, 3), (64, 4), (300, 2), (128, 5)])
def test_centroid_condition_by_independent_quadrature(d, bits):
    cb = lloyd_max(d, bits)
    mass, first, second = beta_law_quadrature(d, cb.boundaries)
    sigma = 1.0 / math.sqrt(d)
    # every centroid is the conditional mean of its cell
    np.testing.assert_allclose(cb.centroids, first / mass, atol=2e-5 * sigma)
    # the reported error is the law's error for this quantizer
    mse = float(np.sum(second - 2 * cb.centroids * first + cb.centroids**2 * mass))
    assert cb.mse == pytest.approx(mse, rel=1e-4)


@pytest.mark.parametrize("d, bits", [(2, 1), (3, 3), (50, 4), (384, 2), (1000, 8)])
def test_structure(d, bits):
    cb = lloyd_max(d, bits)
    assert cb.d == d and cb.bits == bits and cb.levels == 2**bits
    assert cb.centroids.dtype == np.float64 and cb.boundaries.dtype == np.float64
    assert cb.centroids.shape == (2**bits,) and cb.boundaries.shape == (2**bits - 1,)
    assert np.all(np.diff(cb.centroids) > 0)
    np.testing.assert_array_equal(cb.centroids, -cb.centroids[::-1])
    np.testing.assert_allclose(cb.boundaries, 0.5 * (cb.centroids[1:] + cb.centroids[:-1]),
                               rtol=1e-12, atol=1e-15)
    assert np.all(np.abs(cb.centroids) < 1.0)
    assert 0 < cb.mse < 1.0 / d
    # arrays handed out by the cache must not be modifiable
    with pytest.raises(ValueError):
        cb.centroids[0] = 0.0


@pytest.mark.parametrize("bits", range(1, MAX_BITS + 1))
def test_mse_between_shannon_bound_and_high_resolution_limit(bits):
    # d * mse * 4^b rises with b towards the Panter-Dite constant sqrt(3) pi / 2
    # (the paper's upper bound) and stays above the Shannon bound 1; a codebook
    # above the constant has not converged to the Lloyd-Max optimum.
    d = 256
    ratio = lloyd_max(d, bits).mse * d * 4.0**bits
    assert 1.0 <= ratio <= math.sqrt(3) * math.pi / 2
    if bits > 1:
        assert ratio >= lloyd_max(d, bits - 1).mse * d * 4.0 ** (bits - 1)


def test_encode_is_nearest_centroid():
    cb = lloyd_max(64, 3)
    t = np.random.default_rng(3).standard_normal(5000) / 8.0
    idx = cb.encode(t)
    nearest = np.abs(t[:, None] - cb.centroids[None, :]).argmin(axis=1)
    np.testing.assert_array_equal(idx, nearest)
    assert idx.dtype == np.uint8


def test_cached_per_dimension_and_bits():
    assert lloyd_max(96, 2) is lloyd_max(96, 2)
    assert lloyd_max(96, 2) is not lloyd_max(97, 2)


@pytest.mark.parametrize("d, bits, match", [
    (1, 2, "dimension must be at least 2"),
    (0, 2, "dimension must be at least 2"),
    (64, 0, "bits must be between 1 and 8"),
    (64, 9, "bits must be between 1 and 8"),
])
def test_bad_arguments(d, bits, match):
    with pytest.raises(ValueError, match=match):
        lloyd_max(d, bits)
