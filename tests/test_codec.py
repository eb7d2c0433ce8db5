"""The codec against the paper: distortion, QJL unbiasedness and variance, codes equal to
the NumPy reference, byte layout, encode -> decode -> encode."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference import (
    FACTOR_ATOL,
    ReferenceTurboQuant,
    codes_of_index,
    nearest_centroid,
    rotation_matrix,
)

import tqsearch
from tqsearch.codebook import lloyd_max
from tqsearch.codec import TurboQuantCodec
from tqsearch.rotation import make_rotation

# Paper, TurboQuant_mse: E ||x - x_hat||^2 for unit x at b = 1..4 bits
PAPER_MSE = {1: 0.3634, 2: 0.1175, 3: 0.0345, 4: 0.0095}
# Paper, TurboQuant_prod: d * Var(<y, x_hat> - <y, x>) at 1..4 TOTAL bits (QJL bit included)
PAPER_PROD_VAR = {1: 1.571, 2: 0.571, 3: 0.185, 4: 0.054}


def near_boundary(u, centroids, tol):
    """Entries of ``u`` within ``tol`` of a decision boundary (where float32 may flip a cell)."""
    c = np.asarray(centroids, dtype=np.float64)
    edges = 0.5 * (c[1:] + c[:-1])
    if edges.size == 0:
        return np.zeros(np.shape(u), dtype=bool)
    return (np.abs(np.asarray(u, np.float64)[..., None] - edges) < tol).any(-1)


def assert_same_cells(got, want, u, centroids, d):
    """Cell indices agree except where ``u`` sits on a boundary to float32 rounding."""
    differ = got != want
    if differ.any():
        loose = near_boundary(u, centroids, 1e-5 / math.sqrt(d))
        assert not (differ & ~loose).any(), (
            f"{int((differ & ~loose).sum())} coordinates coded to a cell that is not "
            "the nearest centroid")
        assert differ.mean() < 1e-3


# -- 1. distortion of TurboQuant_mse -------------------------------------------

@pytest.mark.parametrize("rotation", ["hadamard", "dense"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_distortion_matches_paper(units, rotation, bits):
    d = 256
    x = units(2000, d, seed=1)
    errors = []
    for metric in ("cosine", "ip"):
        index = tqsearch.TurboQuantIndex(d, bits, metric=metric, estimator="mse",
                                         rotation=rotation, seed=7)
        x_hat = index.sa_decode(index.sa_encode(x))
        assert x_hat.dtype == np.float32 and x_hat.shape == x.shape
        errors.append(((x_hat.astype(np.float64) - x) ** 2).sum(1))
    np.testing.assert_allclose(errors[0], errors[1], rtol=1e-4, atol=1e-7)
    mean = errors[0].mean()
    assert mean == pytest.approx(PAPER_MSE[bits], rel=0.03)
    # and within sampling noise of the codebook's own expected error
    se = errors[0].std() / math.sqrt(len(errors[0]))
    assert abs(mean - lloyd_max(d, bits).mse * d) < 4 * se


# -- 2. TurboQuant_prod: unbiased, variance of the paper -------------------------

@pytest.mark.parametrize("bits", [2, 3, 4])
def test_qjl_inner_products_unbiased_with_paper_variance(units, bits):
    d = 128
    errors = []
    for seed in range(3):  # three independent rotations and projections S
        index = tqsearch.TurboQuantIndex(d, bits, metric="ip", qjl=True, seed=seed)
        x = units(2000, d, seed=10 + seed)
        y = units(2000, d, seed=20 + seed)
        x_hat = index.sa_decode(index.sa_encode(x)).astype(np.float64)
        errors.append(np.einsum("ij,ij->i", y, x_hat - x))  # <y, x_hat> is the estimate
    e = np.concatenate(errors)
    assert abs(e.mean()) < 3 * e.std() / math.sqrt(len(e))
    assert d * e.var() == pytest.approx(PAPER_PROD_VAR[bits], rel=0.15)


def test_pure_qjl_reference_variance_is_pi_over_2(units):
    # 1 total bit (no codebook, QJL on the whole vector) is not an index
    # configuration (qjl needs bits >= 2), so check it on the reference,
    # with a rotation and S drawn by the library.
    d = 128
    index = tqsearch.TurboQuantIndex(d, 2, metric="ip", qjl=True, seed=4)
    ref = ReferenceTurboQuant(rotation_matrix(index.codec.rotation), np.zeros(0),
                              estimator="qjl", qjl_matrix=index.codec.qjl_matrix)
    x = units(6000, d, seed=31)
    y = units(6000, d, seed=32)
    codes = ref.encode(x)
    np.testing.assert_allclose(codes["gains"], 1.0)  # the residual is the vector itself
    e = np.einsum("ij,ij->i", y, ref.decode(codes)) - np.einsum("ij,ij->i", y, x)
    assert abs(e.mean()) < 3 * e.std() / math.sqrt(len(e))
    assert d * e.var() == pytest.approx(PAPER_PROD_VAR[1], rel=0.15)


def test_pure_qjl_through_the_codec(units):
    # The codec itself accepts 0 codebook bits (bits=1 with qjl): signs only.
    d = 128
    codec = TurboQuantCodec(d, 1, "ip", True, make_rotation("dense", d, 9), seed=9)
    assert codec.index_bits == 0 and codec.code_bytes == d // 8
    x = units(6000, d, seed=41)
    y = units(6000, d, seed=42)
    batch = codec.encode(x)
    ref = ReferenceTurboQuant(rotation_matrix(codec.rotation), np.zeros(0), estimator="qjl",
                              qjl_matrix=codec.qjl_matrix)
    signs = np.unpackbits(batch.codes, axis=1, bitorder="little")[:, :d] * 2.0 - 1
    u, _ = codec.rotated_units(x)
    proj = u.astype(np.float64) @ codec.qjl_matrix.T.astype(np.float64)
    agree = signs == ref.encode_units(u)["signs"]
    assert np.all(agree | (np.abs(proj) < 1e-4))
    x_hat = codec.decode(batch).astype(np.float64)
    # the residual is the whole vector: gamma = ||u|| = 1
    w = signs @ codec.qjl_matrix.astype(np.float64)
    y_rot = x_hat @ rotation_matrix(codec.rotation).T
    gamma = np.einsum("ij,ij->i", y_rot, w) / (np.sqrt(np.pi / 2) / d * (w * w).sum(1))
    np.testing.assert_allclose(gamma, 1.0, atol=FACTOR_ATOL)
    e = np.einsum("ij,ij->i", y, x_hat) - np.einsum("ij,ij->i", y, x)
    assert abs(e.mean()) < 3 * e.std() / math.sqrt(len(e))
    assert d * e.var() == pytest.approx(PAPER_PROD_VAR[1], rel=0.15)


# -- 3. codes equal the reference's ---------------------------------------------

def coded_units(index, ref, x):
    """The rotated unit vectors the codec quantizes, float32 (n, d), and the norms coded.

    Without centring this is the codec's own ``rotated_units(x)``; with it,
    the reference normalises (cosine) and centres in float64 and the index's
    rotation rotates the resulting unit vectors.
    """
    if ref.mean is None:
        return index.codec.rotated_units(x)
    prepared = ref.prepare(x)
    norms = np.linalg.norm(prepared, axis=1)
    unit = prepared / np.where(norms > 0, norms, 1.0)[:, None]
    return index.codec.rotation.apply(unit.astype(np.float32)), norms


def build_trained(ds, d, bits, **kwargs):
    index = tqsearch.TurboQuantIndex(d, bits, **kwargs)
    index.train(ds.xb)  # sets the centring mean (a no-op without centring)
    return index


CODE_CONFIGS = [
    # d, bits, rotation, metric, qjl, center
    (64, 1, "hadamard", "cosine", False, False),
    (64, 2, "dense", "ip", False, False),
    (50, 3, "hadamard", "l2", False, False),
    (100, 4, "dense", "cosine", False, False),
    (384, 4, "hadamard", "ip", False, False),  # beyond the size where Hadamard is a product
    (64, 5, "hadamard", "l2", False, False),
    (33, 8, "dense", "ip", False, False),
    (64, 2, "hadamard", "ip", True, False),
    (50, 4, "dense", "l2", True, False),
    (100, 3, "hadamard", "cosine", True, False),
    (64, 3, "hadamard", "l2", False, True),
    (64, 2, "dense", "cosine", False, True),
    (50, 3, "hadamard", "l2", True, True),
]


@pytest.mark.parametrize("d, bits, rotation, metric, qjl, center", CODE_CONFIGS)
def test_mse_codes_are_nearest_centroids(synthetic, d, bits, rotation, metric, qjl, center):
    ds = synthetic(d=d, nb=500, nq=1)
    index = build_trained(ds, d, bits, metric=metric, qjl=qjl, rotation=rotation,
                          estimator="mse", seed=2, center=center)
    codec = index.codec
    rows = index.sa_encode(ds.xb)
    assert rows.shape == (500, index.code_size) and rows.dtype == np.uint8
    ref = ReferenceTurboQuant.from_index(index)
    assert (ref.mean is not None) == center
    u, norms = coded_units(index, ref, ds.xb)
    want = ref.encode_units(u, norms)
    got = codes_of_index(index, rows)
    assert_same_cells(got["indices"], want["indices"], u, ref.centroids, d)
    # the reference's own float64 rotation of the raw vectors lands in the same cells
    u64, norms64 = ref.rotate(ref.prepare(ds.xb))
    assert_same_cells(got["indices"], ref.encode_units(u64)["indices"], u64, ref.centroids, d)
    if codec.has_norms:
        np.testing.assert_allclose(got["norms"], norms64, rtol=1e-5)
    if qjl:
        proj = u.astype(np.float64) @ ref.S.T
        agree = got["signs"] == want["signs"]
        assert np.all(agree | (np.abs(proj) < 1e-4 * np.abs(proj).max()))
        np.testing.assert_allclose(got["gains"], want["gains"], atol=FACTOR_ATOL)
    # decoding is the reference's decoding of the same codes
    np.testing.assert_allclose(index.sa_decode(rows), ref.decode(got), rtol=1e-4,
                               atol=1e-5 * max(1.0, float(np.abs(ds.xb).max())))


@pytest.mark.parametrize("d, bits, rotation, metric, center", [
    (64, 1, "hadamard", "ip", False), (64, 2, "dense", "cosine", None),
    (50, 3, "hadamard", "l2", None), (64, 3, "dense", "l2", False),
    (384, 4, "hadamard", "cosine", None), (64, 8, "dense", "ip", False),
])
def test_corrected_codes_are_nearest_centroids_of_a_rescaled_grid(synthetic, d, bits,
                                                                   rotation, metric, center):
    ds = synthetic(d=d, nb=400, nq=1)
    index = build_trained(ds, d, bits, metric=metric, rotation=rotation,
                          estimator="corrected", seed=5, center=center)
    codec = index.codec
    rows = index.sa_encode(ds.xb)
    got = codes_of_index(index, rows)
    ref = ReferenceTurboQuant.from_index(index)
    u, norms = coded_units(index, ref, ds.xb)
    u = u.astype(np.float64)
    scales = np.asarray(codec.scales, dtype=np.float64)
    assert scales.size >= 1 and 1.0 in scales
    tol = 1e-5 / math.sqrt(d)
    cosines = np.empty((len(u), len(scales)))
    matches = np.zeros((len(u), len(scales)), dtype=bool)
    for s, t in enumerate(scales):
        cand = nearest_centroid(u * t, ref.centroids)
        c = ref.centroids[cand]
        cosines[:, s] = (u * c).sum(1) / np.linalg.norm(c, axis=1)
        differ = cand != got["indices"]
        matches[:, s] = ~(differ & ~near_boundary(u * t, ref.centroids, tol)).any(1)
    # every vector is coded as Q(t u) for one of the scales ...
    assert matches.any(1).all()
    # ... and the scale used is the one keeping the direction best
    chosen = np.where(matches, cosines, -np.inf).max(1)
    assert np.all(chosen >= cosines.max(1) - 1e-5)
    # the per-vector factor is g = <u, c(t u)>
    c = ref.centroids[got["indices"]]
    np.testing.assert_allclose(got["gains"], (u * c).sum(1), atol=FACTOR_ATOL)
    if codec.has_norms:
        np.testing.assert_allclose(got["norms"], norms, rtol=1e-5)
    np.testing.assert_allclose(index.sa_decode(rows), ref.decode(got), rtol=1e-4,
                               atol=1e-5 * max(1.0, float(np.abs(ds.xb).max())))


def test_corrected_estimate_is_exact_for_the_vector_itself(synthetic):
    # <x, x_hat> / ||x|| = n <u, c> / <u, c> = n: exact along the vector's own direction
    ds = synthetic(d=64, nb=200, nq=1)
    index = tqsearch.TurboQuantIndex(64, 2, metric="ip", seed=1)
    x_hat = index.sa_decode(index.sa_encode(ds.xb)).astype(np.float64)
    x = ds.xb.astype(np.float64)
    np.testing.assert_allclose(np.einsum("ij,ij->i", x, x_hat), (x * x).sum(1), rtol=2e-4)


# -- byte layout -------------------------------------------------------------------

@pytest.mark.parametrize("d, bits, metric, qjl, estimator, center, expected", [
    (64, 4, "cosine", False, "mse", False, 32),
    (64, 4, "cosine", False, "corrected", False, 32 + 2),
    (64, 4, "cosine", False, "corrected", True, 32 + 4 + 2),  # centred: ||x - mu|| stored
    (64, 4, "cosine", False, "mse", True, 32 + 4),
    (64, 4, "ip", False, "mse", False, 32 + 4),
    (64, 4, "l2", False, "corrected", None, 32 + 4 + 2),
    (64, 4, "ip", True, "mse", False, 24 + 8 + 4 + 2),  # 3 index bits + 1 sign bit, norm, gamma
    (50, 3, "cosine", False, "mse", None, 19),  # ceil(150 / 8)
    (50, 3, "cosine", True, "mse", None, 13 + 7 + 2),
    (7, 1, "l2", False, "mse", None, 1 + 4),
    (33, 8, "ip", False, "corrected", None, 33 + 4 + 2),
])
def test_code_size_counts_everything(d, bits, metric, qjl, estimator, center, expected):
    index = tqsearch.TurboQuantIndex(d, bits, metric=metric, qjl=qjl, estimator=estimator,
                                     center=center)
    assert index.code_size == expected == index.sa_code_size()
    x = np.random.default_rng(0).standard_normal((3, d)).astype(np.float32)
    index.train(x)  # the centring mean (a no-op without centring)
    assert index.sa_encode(x).shape == (3, expected)
    index.add(x)
    assert index.codes().shape == (3, expected)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_documented_bit_layout(synthetic, bits):
    # coordinate j occupies bits [j*b, (j+1)*b) of the row, little-endian
    # within bytes; then the norm (float32 LE), then the 2-byte factor
    d = 50
    ds = synthetic(d=d, nb=100, nq=1)
    index = tqsearch.TurboQuantIndex(d, bits, metric="ip", estimator="corrected", seed=3)
    rows = index.sa_encode(ds.xb)
    nbytes = (d * bits + 7) // 8
    assert rows.shape[1] == nbytes + 4 + 2
    stream = np.unpackbits(rows, axis=1, bitorder="little")
    cells = stream[:, : d * bits].reshape(-1, d, bits).astype(np.int64)
    indices = (cells << np.arange(bits)).sum(-1)
    np.testing.assert_array_equal(indices, index.codec.indices(rows[:, :index.codec.code_bytes]))
    assert np.all(stream[:, d * bits: nbytes * 8] == 0)  # padding bits are zero
    norms = rows[:, nbytes:nbytes + 4].copy().view("<f4").ravel()
    np.testing.assert_allclose(norms, np.linalg.norm(ds.xb, axis=1), rtol=1e-6)
    factor = rows[:, nbytes + 4:nbytes + 6].copy().view("<u2").ravel()
    np.testing.assert_array_equal(factor, index.codec.from_bytes(rows).gains)
    # the factor bytes carry g = <u, c> (checked through the decoder)
    ref = ReferenceTurboQuant.from_index(index)
    u, _ = index.codec.rotated_units(ds.xb)
    c = ref.centroids[indices]
    np.testing.assert_allclose(codes_of_index(index, rows)["gains"], (u * c).sum(1),
                               atol=FACTOR_ATOL)


def test_bytes_round_trip(synthetic):
    ds = synthetic(d=40, nb=50, nq=1)
    for qjl in (False, True):
        index = tqsearch.TurboQuantIndex(40, 3, metric="l2", qjl=qjl, seed=1)
        index.train(ds.xb)
        rows = index.sa_encode(ds.xb)
        batch = index.codec.from_bytes(rows)
        np.testing.assert_array_equal(index.codec.to_bytes(batch), rows)


# -- 4. encode -> decode -> encode -------------------------------------------------

@pytest.mark.parametrize("rotation", ["hadamard", "dense"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_mse_cosine_codes_are_a_fixed_point(synthetic, rotation, bits):
    ds = synthetic(d=64, nb=500, nq=1)
    index = tqsearch.TurboQuantIndex(64, bits, metric="cosine", estimator="mse",
                                     rotation=rotation, seed=8)
    codes = index.sa_encode(ds.xb)
    again = index.sa_encode(index.sa_decode(codes))
    np.testing.assert_array_equal(again, codes)


@pytest.mark.parametrize("metric, center", [("ip", False), ("l2", False), ("cosine", False),
                                            ("l2", True), ("cosine", True)])
@pytest.mark.parametrize("estimator", ["mse", "corrected"])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_cell_indices_are_a_fixed_point(synthetic, metric, center, estimator, bits):
    # The per-vector factors are not a fixed point and are not meant to be:
    # x_hat = n R^T c / g has norm n ||c|| / g ("mse": g = 1), and re-coding it
    # stores that norm and the gain <c/||c||, c> = ||c||. The cells must not move
    # (with centring, x_hat - mu is still along R^T c; for cosine the decoded
    # vector is normalised again before centring, which moves it by far less
    # than a cell).
    ds = synthetic(d=64, nb=500, nq=1)
    index = build_trained(ds, 64, bits, metric=metric, estimator=estimator, seed=8,
                          center=center)
    codec = index.codec
    codes = index.sa_encode(ds.xb)
    again = index.sa_encode(index.sa_decode(codes))
    np.testing.assert_array_equal(codec.indices(again[:, :codec.code_bytes]),
                                  codec.indices(codes[:, :codec.code_bytes]))
    if codec.has_norms and not (center and metric == "cosine"):
        first = codec.from_bytes(codes)
        c = codec.centroids[codec.indices(first.codes)].astype(np.float64)
        g = codes_of_index(index, codes)["gains"] if codec.has_gains else 1.0
        expected = first.norms * np.linalg.norm(c, axis=1) / g
        np.testing.assert_allclose(codec.from_bytes(again).norms, expected, rtol=1e-4)


def test_qjl_codes_are_not_a_fixed_point(synthetic):
    # TurboQuant_prod's reconstruction adds the QJL term, an unbiased but noisy
    # estimate of the residual (norm ~ sqrt(pi/2) ||r||), so re-coding it moves
    # cells; documented here so that a change of behaviour is noticed.
    ds = synthetic(d=64, nb=200, nq=1)
    index = tqsearch.TurboQuantIndex(64, 4, metric="cosine", qjl=True, seed=8)
    codec = index.codec
    codes = index.sa_encode(ds.xb)
    again = index.sa_encode(index.sa_decode(codes))
    same = (codec.indices(again[:, :codec.index_bytes])
            == codec.indices(codes[:, :codec.index_bytes])).mean()
    assert 0.5 < same < 1.0
