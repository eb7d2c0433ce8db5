"""Seeded rotations: orthogonal, invertible, reproducible, and mixing every coordinate."""

from __future__ import annotations

import numpy as np
import pytest
from reference import rotation_matrix

from tqsearch.codebook import lloyd_max
from tqsearch.rotation import ROTATIONS, from_state, make_rotation

# (a dense draw is a d x d QR: the largest sizes only for the Hadamard kind)
CASES = [(kind, d) for kind in ROTATIONS for d in (2, 3, 50, 64, 100, 256, 300, 384)
         if kind == "hadamard" or d <= 256]


@pytest.mark.parametrize("kind, d", CASES)
def test_orthogonal_and_linear(kind, d):
    rot = make_rotation(kind, d, seed=5)
    R = rotation_matrix(rot)
    np.testing.assert_allclose(R @ R.T, np.eye(d), atol=2e-6)
    x = np.random.default_rng(1).standard_normal((7, d)).astype(np.float32)
    y = rot.apply(x)
    assert y.dtype == np.float32 and y.shape == (7, d)
    # apply is the matrix product (also above the size where Hadamard stops using it)
    np.testing.assert_allclose(y, x.astype(np.float64) @ R.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    np.testing.assert_allclose(rot.inverse(y), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ROTATIONS)
def test_seeded(kind):
    d = 96
    x = np.random.default_rng(2).standard_normal((4, d)).astype(np.float32)
    a = make_rotation(kind, d, 11).apply(x)
    b = make_rotation(kind, d, 11).apply(x)
    c = make_rotation(kind, d, 12).apply(x)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


@pytest.mark.parametrize("kind, d", [("hadamard", 64), ("hadamard", 100), ("hadamard", 300),
                                     ("dense", 64), ("dense", 100)])
def test_state_round_trip(kind, d):
    rot = make_rotation(kind, d, 3)
    state = {k: np.array(v) for k, v in rot.state().items()}
    again = from_state(kind, d, state)
    x = np.random.default_rng(4).standard_normal((5, d)).astype(np.float32)
    np.testing.assert_array_equal(again.apply(x), rot.apply(x))
    np.testing.assert_array_equal(again.inverse(x), rot.inverse(x))


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown rotation 'givens'"):
        make_rotation("givens", 8, 0)
    with pytest.raises(ValueError, match="unknown rotation"):
        from_state("givens", 8, {})


HAAR_CASES = [("hadamard", 64), ("hadamard", 100), ("hadamard", 256), ("hadamard", 384),
              ("dense", 100)]


@pytest.mark.parametrize("kind, d", HAAR_CASES)
def test_entries_follow_the_haar_law(kind, d):
    # Columns of R are the rotated basis vectors. For a uniformly random
    # rotation each entry has E[d u^2] = 1 and E[d^2 u^4] = 3 d / (d + 2); a
    # rotation that leaves some coordinates unmixed has far heavier tails.
    kurtosis = np.mean([(rotation_matrix(make_rotation(kind, d, s)) ** 4).mean() * d * d
                        for s in range(3)])
    assert kurtosis == pytest.approx(3 * d / (d + 2), abs=0.3)


@pytest.mark.parametrize("kind, d", HAAR_CASES)
def test_structured_inputs_quantize_like_random_ones(kind, d):
    # TurboQuant's error guarantee holds for every input only if the rotation
    # spreads every input over all coordinates: one-hot and sparse vectors must
    # be coded about as well as random ones (4 bits: d * mse ~ 0.0095).
    rot = make_rotation(kind, d, 1)
    cb = lloyd_max(d, 4)
    rng = np.random.default_rng(0)
    sparse = np.zeros((1000, d))
    for row in sparse:
        row[rng.choice(d, 4, replace=False)] = rng.standard_normal(4)
    sparse /= np.linalg.norm(sparse, axis=1, keepdims=True)
    expected = cb.mse * d
    for x in (np.eye(d), sparse):
        u = rot.apply(x.astype(np.float32)).astype(np.float64)
        c = cb.centroids[np.abs(u[:, :, None] - cb.centroids).argmin(-1)]
        err = ((u - c) ** 2).sum(1)
        assert err.mean() < 1.2 * expected
        assert err.max() < 15 * expected  # an unmixed one-hot input: ~80x
