"""Every bad argument fails with the right exception and a message that says how to fix it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tqsearch import TurboQuantIndex
from tqsearch.validation import as_matrix, check_k, check_positive_int

D = 16


@pytest.fixture
def index():
    idx = TurboQuantIndex(D, 3, metric="ip", seed=0)
    idx.add(np.random.default_rng(0).standard_normal((50, D)).astype(np.float32))
    return idx


@pytest.fixture
def xq():
    return np.random.default_rng(1).standard_normal((4, D)).astype(np.float32)


# -- constructor ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"bits": 0}, ValueError, r"bits must be between 1 and 8, got bits=0"),
    ({"bits": 9}, ValueError, r"bits must be between 1 and 8, got bits=9"),
    ({"bits": -1}, ValueError, r"bits must be between 1 and 8"),
    ({"bits": 2.5}, TypeError, r"bits must be an integer, got 2.5"),
    ({"bits": 4.0}, TypeError, r"bits must be an integer"),
    ({"bits": "4"}, TypeError, r"bits must be an integer, got '4'"),
    ({"bits": True}, TypeError, r"bits must be an integer"),
    ({"bits": 1, "qjl": True}, ValueError,
     r"qjl=True needs bits >= 2 .*got bits=1; use qjl=False or more bits"),
    ({"qjl": "yes"}, TypeError, r"qjl must be True or False"),
    ({"metric": "L2"}, ValueError, r"unknown metric 'L2': use one of ip, cosine, l2"),
    ({"metric": "euclidean"}, ValueError, r"unknown metric 'euclidean'"),
    ({"rotation": "givens"}, ValueError, r"unknown rotation 'givens': use one of hadamard, dense"),
    ({"estimator": "unbiased"}, ValueError,
     r"unknown estimator 'unbiased': use one of corrected, mse"),
    ({"keep_vectors": "float64"}, ValueError,
     r"keep_vectors must be None, 'float32' or 'float16', got 'float64'"),
    ({"keep_vectors": True}, ValueError, r"keep_vectors must be None"),
    ({"seed": -1}, ValueError, r"seed must be a non-negative integer, got -1"),
    ({"seed": 1.5}, ValueError, r"seed must be a non-negative integer"),
    ({"center": True, "metric": "ip"}, ValueError,
     r"center=True applies to metric 'l2' or 'cosine', not 'ip'"),
    ({"center": "yes", "metric": "l2"}, TypeError, r"center must be True, False or None"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TurboQuantIndex(D, **kwargs)


@pytest.mark.parametrize("d, exc, match", [
    (0, ValueError, r"d must be a positive integer, got d=0"),
    (-3, ValueError, r"d must be a positive integer"),
    (1, ValueError, r"dimension must be at least 2, got d=1"),
    (16.0, TypeError, r"d must be an integer, got 16.0"),
    ("16", TypeError, r"d must be an integer"),
])
def test_bad_dimension(d, exc, match):
    with pytest.raises(exc, match=match):
        TurboQuantIndex(d)


def test_valid_integer_types_are_accepted():
    index = TurboQuantIndex(np.int64(D), np.int32(2), seed=np.uint8(3))
    assert (index.d, index.bits, index.seed) == (D, 2, 3)
    assert isinstance(index.d, int) and isinstance(index.bits, int)


# -- vectors ------------------------------------------------------------------------

BAD_MATRICES = [
    (np.zeros((3, D + 1), np.float32), ValueError,
     rf"has dimension {D + 1} but the index has dimension d={D}; pass vectors of shape \(n, {D}\)"),
    (np.zeros(D, np.float32), ValueError,
     r"must be a 2-D array of shape \(n, d\), got shape \(16,\); for a single vector use "
     r".*reshape\(1, -1\)"),
    (np.zeros((2, 2, D), np.float32), ValueError, r"must be a 2-D array .*got shape \(2, 2, 16\)"),
    (np.float32(1.0), ValueError, r"must be a 2-D array"),
    (np.array([["a"] * D]), TypeError, r"must hold real numbers, got dtype <U1; convert it"),
    (np.zeros((2, D), np.complex64), TypeError, r"must hold real numbers, got dtype complex64"),
    (np.zeros((2, D), object), TypeError, r"must hold real numbers, got dtype object"),
]


def _with(value, row, col):
    x = np.ones((5, D), np.float32)
    x[row, col] = value
    return x


NON_FINITE = [
    (_with(np.nan, 0, 3), r"contains NaN or infinite values \(first bad row: 0\)"),
    (_with(np.inf, 3, 0), r"contains NaN or infinite values \(first bad row: 3\)"),
    (_with(-np.inf, 4, 15), r"contains NaN .*first bad row: 4.*clean or drop those rows first"),
]


@pytest.mark.parametrize("x, exc, match", BAD_MATRICES)
def test_bad_vectors_on_add(index, x, exc, match):
    with pytest.raises(exc, match=r"^x " + match):
        index.add(x)
    assert index.ntotal == 50


@pytest.mark.parametrize("x, exc, match", BAD_MATRICES)
def test_bad_queries(index, x, exc, match):
    with pytest.raises(exc, match=r"^xq " + match):
        index.search(x, 3)


@pytest.mark.parametrize("x, exc, match", BAD_MATRICES)
def test_bad_vectors_on_sa_encode(index, x, exc, match):
    with pytest.raises(exc, match=match):
        index.sa_encode(x)


@pytest.mark.parametrize("x, match", NON_FINITE)
def test_non_finite_vectors(index, xq, x, match):
    with pytest.raises(ValueError, match=r"^x " + match):
        index.add(x)
    assert index.ntotal == 50  # nothing was added
    with pytest.raises(ValueError, match=r"^xq " + match):
        index.search(x, 3)
    with pytest.raises(ValueError, match=match):
        index.sa_encode(x)


def test_overflowing_float64_is_only_an_error(index):
    # values beyond float32's range become inf in the conversion: the call must
    # fail with the ValueError alone, not also emit a RuntimeWarning (which
    # `-W error` or a warnings filter would turn into a different exception)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="contains NaN or infinite values"):
            index.add(np.full((2, D), 1e39))


def test_lists_are_accepted(index, xq):
    D1, I1 = index.search(xq.tolist(), 3)
    D2, I2 = index.search(xq, 3)
    np.testing.assert_array_equal(I1, I2)


# -- search arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("k, exc, match", [
    (0, ValueError, r"k must be a positive integer, got k=0"),
    (-5, ValueError, r"k must be a positive integer, got k=-5"),
    (2.0, TypeError, r"k must be an integer, got 2.0"),
    (None, TypeError, r"k must be an integer, got None"),
    (True, TypeError, r"k must be an integer"),
])
def test_bad_k(index, xq, k, exc, match):
    with pytest.raises(exc, match=match):
        index.search(xq, k)


def test_numpy_integer_k(index, xq):
    assert index.search(xq, np.int64(3))[1].shape == (4, 3)


@pytest.mark.parametrize("n, exc, match", [
    (0, ValueError, r"n_threads must be a positive integer, got n_threads=0"),
    (-1, ValueError, r"n_threads must be a positive integer"),
    (1.5, TypeError, r"n_threads must be an integer, got 1.5"),
])
def test_bad_threads(index, xq, n, exc, match):
    with pytest.raises(exc, match=match):
        index.search(xq, 3, n_threads=n)
    with pytest.raises(exc, match=match):
        index.set_threads(n)


def test_rerank_needs_kept_vectors(index, xq):
    with pytest.raises(ValueError, match=r"rerank needs the original vectors: build the index "
                                         r"with keep_vectors='float32' or 'float16'"):
        index.search(xq, 3, rerank=4)
    # 0 and None mean no rerank
    for off in (None, 0):
        np.testing.assert_array_equal(index.search(xq, 3, rerank=off)[1], index.search(xq, 3)[1])


@pytest.mark.parametrize("rerank", [0.5, -1, True, "4", [2]])
def test_bad_rerank(xq, rerank):
    index = TurboQuantIndex(D, 3, keep_vectors="float32")
    index.add(np.ones((5, D), np.float32))
    with pytest.raises(ValueError, match=r"rerank must be a number >= 1 \(candidates per result\)"):
        index.search(xq, 3, rerank=rerank)


@pytest.mark.parametrize("subset, match", [
    ((-1, 10), r"subset \(-1, 10\) is outside 0..50"),
    ((10, 51), r"subset \(10, 51\) is outside 0..50"),
    ((30, 20), r"subset \(30, 20\) is outside 0..50"),
    ((1, 2, 3), r"subset must be a \(start, stop\) pair, got \(1, 2, 3\)"),
    (5, r"subset must be a \(start, stop\) pair, got 5"),
    (("a", "b"), r"subset must be a \(start, stop\) pair"),
    ((None, 3), r"subset must be a \(start, stop\) pair"),
])
def test_bad_subset(index, xq, subset, match):
    with pytest.raises(ValueError, match=match):
        index.search(xq, 3, subset=subset)


def test_argument_errors_come_before_empty_shortcuts(index):
    # an empty batch of queries still validates k, dimension, subset and rerank
    empty = np.empty((0, D), np.float32)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(empty, 0)
    with pytest.raises(ValueError, match="has dimension 3"):
        index.search(np.empty((0, 3), np.float32), 2)
    with pytest.raises(ValueError, match="subset"):
        index.search(empty, 2, subset=(0, 99))
    with pytest.raises(ValueError, match="rerank needs the original vectors"):
        index.search(empty, 2, rerank=2)
    with pytest.raises(ValueError, match="has dimension 3"):
        index.add(np.empty((0, 3), np.float32))


# -- codes -----------------------------------------------------------------------------

def test_bad_codes(index):
    good = index.sa_encode(np.ones((2, D), np.float32))
    with pytest.raises(TypeError, match="codes must be uint8, got int64"):
        index.sa_decode(good.astype(np.int64))
    with pytest.raises(ValueError, match=rf"codes must have shape \(n, {index.code_size}\) for "
                                         rf"this index, got \(2, {index.code_size + 1}\)"):
        index.sa_decode(np.zeros((2, index.code_size + 1), np.uint8))
    with pytest.raises(ValueError, match="codes must have shape"):
        index.sa_decode(good[0])


@pytest.mark.parametrize("start, n", [(-5, 3), (51, 2), (3, -1), (2.5, 1)])
def test_bad_reconstruct_range(index, start, n):
    # faiss: reconstruct_n(n0, ni) requires 0 <= n0 and n0 + ni <= ntotal
    with pytest.raises((ValueError, TypeError), match=r"start|range|outside|0\.\.50"):
        index.reconstruct_n(start, n)


def test_codec_calls_before_the_centring_mean_is_known():
    # A centred index takes its mean from train() or the first add(). Codes
    # made before that would be relative to a zero mean and decode wrongly
    # afterwards, so sa_encode must refuse (as faiss does for an untrained index).
    index = TurboQuantIndex(D, 3, metric="l2")
    assert index.center and not index.is_trained
    x = np.random.default_rng(2).standard_normal((20, D)).astype(np.float32) + 3
    with pytest.raises(ValueError, match="train"):
        index.sa_encode(x)


# -- the shared checks themselves --------------------------------------------------------

def test_as_matrix_converts_once():
    x = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    out = as_matrix(x, 4)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x)
    same = np.ones((2, 4), np.float32)
    assert as_matrix(same, 4) is same  # no copy when nothing needs converting
    with pytest.raises(ValueError, match="^vectors must be a 2-D array"):
        as_matrix(np.ones(4), name="vectors")


def test_positive_integer_checks():
    assert check_k(np.int16(7)) == 7 and type(check_k(np.int16(7))) is int
    assert check_positive_int(3, "n") == 3
    with pytest.raises(ValueError, match="n must be a positive integer, got n=0"):
        check_positive_int(0, "n")
    with pytest.raises(TypeError, match="n must be an integer, got False"):
        check_positive_int(False, "n")
