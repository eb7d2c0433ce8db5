"""The exact score of one row from the codebook (kernels/rescore16) against its definition.

``level_sum`` (4-bit codes), ``level_sum_pairs`` (2-bit) and ``level_sum_quads``
(1-bit) promise a fixed order of additions: compared bit for bit with their
NumPy twin, and to float32 rounding with the float table sum they replace, for
every position in a block, code lengths with and without partial steps and
groups, and dimensions that leave a nibble's last coordinates empty.
"""

import numpy as np
import pytest
from numba import njit

from tqsearch.kernels import rescore16
from tqsearch.kernels.blocked_scan import _nibble_sum
from tqsearch.kernels.fastscan import DOT_AVAILABLE
from tqsearch.kernels.scan import build_field_lut

pytestmark = pytest.mark.skipif(not DOT_AVAILABLE,
                                reason="the CPU lacks AVX-512 VNNI/VBMI (the row scan runs)")


@njit(cache=True)
def _level_sum(blocked, M, v, y, q, centroids):
    return rescore16.level_sum(blocked, M, v, y, q, centroids)


@njit(cache=True)
def _level_sum_pairs(blocked, M, v, y, q, centroids):
    return rescore16.level_sum_pairs(blocked, M, v, y, q, centroids)


@njit(cache=True)
def _level_sum_quads(blocked, M, v, y, q, centroids):
    return rescore16.level_sum_quads(blocked, M, v, y, q, centroids)


@pytest.mark.parametrize("per", [2, 4])
@pytest.mark.parametrize("d", [1, 6, 31, 33, 64, 65, 127, 130, 384])
def test_short_codes_level_sums_are_their_definition(per, d):
    # 2- and 1-bit codes: two or four coordinates a nibble, the last nibble
    # partly empty where per does not divide d
    call = _level_sum_pairs if per == 2 else _level_sum_quads
    bits = 4 // per
    M = -(-d // per)
    rng = np.random.default_rng(d * per)
    blocked = rng.integers(0, 256, (3, 16 * M), dtype=np.uint8)
    y = rng.standard_normal((2, d)).astype(np.float32)
    book = np.sort(rng.standard_normal(1 << bits)).astype(np.float32)
    centroids = np.zeros(16, dtype=np.float32)
    centroids[: book.size] = book
    luts = np.empty((2, M, 16), dtype=np.float32)
    build_field_lut(y[1], book, bits, luts[1])
    for v in range(3 * 32):
        got = np.float32(call(blocked, M, v, y, 1, centroids))
        want = rescore16.level_sum_numpy(blocked, M, v, y, 1, centroids, per)
        assert got.view(np.int32) == want.view(np.int32), (v, got, want)
        table = _nibble_sum.py_func(blocked, M, v, luts, 1, True)
        assert abs(got - table) <= 1e-5 * np.abs(luts[1]).max(axis=1).sum()


@pytest.mark.parametrize("M", [1, 3, 4, 15, 16, 17, 30, 64, 67, 384])
def test_level_sum_is_its_definition_bit_for_bit(M):
    rng = np.random.default_rng(M)
    blocks = 3
    blocked = rng.integers(0, 256, (blocks, 16 * M), dtype=np.uint8)
    y = rng.standard_normal((2, M + 5)).astype(np.float32)  # rows longer than M: a stride
    centroids = np.sort(rng.standard_normal(16)).astype(np.float32)
    luts = (y[:, :M, None] * centroids[None, None, :]).astype(np.float32)
    for v in range(blocks * 32):
        got = np.float32(_level_sum(blocked, M, v, y, 1, centroids))
        want = rescore16.level_sum_numpy(blocked, M, v, y, 1, centroids)
        assert got.view(np.int32) == want.view(np.int32), (v, got, want)
        table = _nibble_sum.py_func(blocked, M, v, luts, 1, True)
        assert abs(got - table) <= 1e-5 * np.abs(luts[1]).max(axis=1).sum()


def test_level_sum_reads_each_vectors_own_nibbles():
    # one block, every code of vector v set to v % 16 (low nibble for positions
    # 0-15, high for 16-31): the sum is M * centroids[v % 16] when y is all ones
    M = 20
    from tqsearch.kernels.fastscan import nibble_position

    blocked = np.zeros((1, 16 * M), dtype=np.uint8)
    for r in range(32):
        for m in range(M):
            at = nibble_position(M, r, m, True)
            blocked[0, at] |= np.uint8((r % 16) << (4 * (r >> 4)))
    centroids = np.arange(16, dtype=np.float32) - 7.5
    y = np.ones((1, M), dtype=np.float32)
    for r in range(32):
        assert _level_sum(blocked, M, r, y, 0, centroids) == M * centroids[r % 16]


def test_level_sum_refuses_wrong_arrays():
    from numba.core.errors import TypingError

    blocked = np.zeros((1, 64), dtype=np.uint8)
    with pytest.raises(TypingError, match="y must be a C-contiguous 2-D float32"):
        _level_sum(blocked, 4, 0, np.zeros((1, 4)), 0, np.zeros(16, dtype=np.float32))
