"""Row-at-a-time table and single-vector Hadamard intrinsics against their definitions.

Both modules promise the operations of the scalar code they replace, in the same
order: the tests compare bit for bit, with the NumPy twins (which stand in for the
intrinsics uncompiled) and with the tile kernels.
"""

import numpy as np
import pytest
from numba import njit

from tqsearch.kernels import hadamard16, tables16
from tqsearch.kernels.rotate import rotate_rows_serial
from tqsearch.rotation import HadamardRotation


@njit(cache=True)
def _fill(table, y, patterns):
    tables16.fill_table(table, y, patterns)


@njit(cache=True)
def _ranges(table, low, width):
    tables16.row_ranges(table, low, width)


@njit(cache=True)
def _quantize(table, low, inv, out):
    tables16.quantize_rows(table, low, inv, out)


@njit(cache=True)
def _errors(y, centroids, steps, levels, worst):
    tables16.level_errors(y, centroids, steps, levels, worst)


@njit(cache=True)
def _expand(row, start, count, table, out):
    tables16.expand_bytes(row, start, count, table, out)


@njit(cache=True)
def _fwht(x, start, p):
    hadamard16.fwht_vector(x, start, p)


@njit(cache=True)
def _permute(dst, src, perm, factor):
    hadamard16.permute_scaled(dst, src, perm, factor)


def _scalar_table(y, centroids, bits, rows):
    """The nibble table as the scalar loops define it: coordinate 0 first."""
    per, mask = 4 // bits, (1 << bits) - 1
    table = np.zeros((rows, 16), np.float32)
    for f in range(rows):
        for e in range(16):
            acc = None
            for t in range(per):
                j = per * f + t
                term = (y[j] if j < y.shape[0] else np.float32(0)) * centroids[(e >> (t * bits))
                                                                              & mask]
                acc = term if acc is None else np.float32(acc + term)
            table[f, e] = acc
    return table


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("d", [1, 7, 64, 131])
def test_fill_table_is_the_scalar_table(bits, d):
    rng = np.random.default_rng(bits * 1000 + d)
    y = rng.standard_normal(d).astype(np.float32)
    centroids = np.sort(rng.standard_normal(1 << bits)).astype(np.float32)
    per = 4 // bits
    rows = -(-d // per)
    patterns = np.array([[centroids[(e >> (t * bits)) & ((1 << bits) - 1)] for e in range(16)]
                         for t in range(per)], dtype=np.float32)
    want = _scalar_table(y, centroids, bits, rows)
    got, twin = np.empty_like(want), np.empty_like(want)
    _fill(got, y, patterns)
    tables16._fill_table_numpy(twin, y, patterns)
    assert np.array_equal(got, want)
    assert np.array_equal(twin, want)


@pytest.mark.parametrize("rows", [1, 5, 96])
def test_ranges_and_quantization_are_the_definitions(rows):
    rng = np.random.default_rng(rows)
    table = (rng.standard_normal((rows, 1)) * rng.standard_normal(16)).astype(np.float32)
    low, width = np.empty(rows, np.float32), np.empty(rows)
    _ranges(table, low, width)
    assert np.array_equal(low, table.min(axis=1))
    assert np.array_equal(width, table.max(axis=1).astype(np.float64) - low.astype(np.float64))
    inv = 255.0 / width.max()
    got, twin = np.empty((rows, 16), np.uint8), np.empty((rows, 16), np.uint8)
    _quantize(table, low, inv, got)
    tables16._quantize_rows_numpy(table, low, inv, twin)
    position = (table - low[:, None]) * np.float32(inv) + np.float32(0.5)
    assert position.dtype == np.float32
    want = np.minimum(np.floor(position), 255)
    assert np.array_equal(got, want.astype(np.uint8))
    assert np.array_equal(twin, got)
    assert got.max() == 255 and got.min() == 0


def test_level_errors_are_the_largest_gap():
    rng = np.random.default_rng(3)
    y = rng.standard_normal(200).astype(np.float32)
    centroids = np.sort(rng.standard_normal(16)).astype(np.float32)
    levels = np.round(centroids / np.abs(centroids).max() * 127).astype(np.float64)
    steps = (np.round(y / np.abs(y).max() * 127).astype(np.float64)
             * (float(np.abs(y).max()) / 127 * float(np.abs(centroids).max()) / 127))
    got, twin = np.empty(200), np.empty(200)
    _errors(y, centroids, steps, levels, got)
    tables16._level_errors_numpy(y, centroids, steps, levels, twin)
    want = [max(abs(np.float64(np.float32(y[m] * centroids[e])) - steps[m] * levels[e])
                for e in range(16)) for m in range(200)]
    assert np.array_equal(got, want)
    assert np.array_equal(twin, want)


@pytest.mark.parametrize("width", [2, 4, 8])
def test_expand_bytes_moves_table_rows(width):
    rng = np.random.default_rng(width)
    table = rng.standard_normal((256, width)).astype(np.float32)
    row = rng.integers(0, 256, 40).astype(np.uint8)
    got = np.full(width * 37 + 3, -7, np.float32)
    twin = got.copy()
    _expand(row, 2, 37, table, got)
    tables16._expand_bytes_numpy(row, 2, 37, table, twin)
    assert np.array_equal(got[: width * 37], table[row[2:39]].reshape(-1))
    assert np.all(got[width * 37:] == -7)
    assert np.array_equal(got, twin)


@pytest.mark.parametrize("p", [16, 32, 64, 256])
def test_fwht_vector_is_the_transform(p):
    rng = np.random.default_rng(p)
    x = rng.standard_normal(p + 40).astype(np.float32)
    got, twin = x.copy(), x.copy()
    _fwht(got, 24, p)
    hadamard16._fwht_vector_numpy(twin, 24, p)
    h = np.array([[1.0]])
    while h.shape[0] < p:
        h = np.block([[h, h], [h, -h]])
    np.testing.assert_allclose(got[24:24 + p], h @ x[24:24 + p].astype(np.float64), atol=1e-4)
    assert np.array_equal(got[:24], x[:24]) and np.array_equal(got[24 + p:], x[24 + p:])
    assert np.array_equal(got, twin)


@pytest.mark.parametrize("d", [5, 16, 37, 100])
def test_permute_scaled_gathers(d):
    rng = np.random.default_rng(d)
    src = rng.standard_normal(d).astype(np.float32)
    perm = rng.permutation(d).astype(np.int64)
    factor = rng.standard_normal(d).astype(np.float32)
    got = np.empty(d, np.float32)
    _permute(got, src, perm, factor)
    assert np.array_equal(got, src[perm] * factor)


@pytest.mark.parametrize("d", [65, 128, 200, 384, 1000])
def test_a_lone_vector_rotates_as_in_a_tile(d):
    """rotate_rows sends a lone row through hadamard_vector, a full tile through
    the tile kernels: the same vector comes out identical either way."""
    rotation = HadamardRotation(d, seed=d)
    args = rotation.kernel_args(False)
    x = np.random.default_rng(d).standard_normal((9, d)).astype(np.float32)
    tiles = np.empty_like(x)
    rotate_rows_serial(x, *args, False, tiles)  # a full tile, then one lone row
    for i in range(9):
        alone = np.empty((1, d), np.float32)
        rotate_rows_serial(x[i:i + 1], *args, False, alone)
        assert np.array_equal(alone[0], tiles[i])
    np.testing.assert_allclose(tiles, rotation.apply(x), rtol=1e-5, atol=1e-5)
