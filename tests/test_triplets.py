"""3-bit codes in the triplets layout: layout, int8 dot-product filter, and searches
that equal a float scan of the same codes."""

import numpy as np
import pytest
from numba import njit
from test_blocked_scan import assert_same, blocked_similarities, data, float_reference
from test_fastscan import _assert_block_outputs, _row_factors

import tqsearch
from tqsearch import read_index, write_index
from tqsearch.kernels import fastscan, simd, triplets
from tqsearch.kernels.encode import pack_row


@njit(cache=True)
def _pack(codes, rows):
    for i in range(codes.shape[0]):
        pack_row(codes[i], 3, rows[i])


def packed(codes):
    """Codec rows (uint8 (n, ceil(3 d / 8))) of cell indices (n, d)."""
    rows = np.zeros((codes.shape[0], -(-3 * codes.shape[1] // 8)), np.uint8)
    _pack(codes.astype(np.int32), rows)
    return rows


def blocked_of(codes, at=0):
    n, d = codes.shape
    out = np.zeros((fastscan.n_blocks(at + n), 12 * triplets.padded_dim(d)), np.uint8)
    triplets.scatter_rows(packed(codes), at, out, d)
    return out


@njit(cache=True)
def _codes_at(blocked, n, d):
    out = np.empty((n, d), np.int64)
    for v in range(n):
        for j in range(d):
            out[v, j] = triplets.code_at(blocked, v, j)
    return out


@pytest.mark.parametrize("n, d", [(1, 3), (33, 8), (70, 50), (64, 13)])
def test_scatter_gather_round_trip(n, d):
    codes = np.random.default_rng(d).integers(0, 8, (n, d))
    rows = packed(codes)
    for at in (0, 5):
        blocked = blocked_of(codes, at)
        out = np.empty_like(rows)
        triplets.gather_rows(blocked, at, at + n, d, out)
        np.testing.assert_array_equal(out, rows)
    np.testing.assert_array_equal(_codes_at(blocked_of(codes), n, d), codes)


def test_layout_is_the_documented_one():
    # One vector, one nonzero code: it sits in the triplet and bits the module
    # docstring names, and nowhere else.
    d = 12
    for r, j in [(0, 0), (9, 5), (17, 11), (31, 2)]:
        codes = np.zeros((32, d), np.int64)
        codes[r, j] = 5
        blocked = blocked_of(codes)[0]
        h, p, i = r // 16, r % 16 % 8, r % 16 // 8
        at = triplets.STEP_BYTES * (j // 4) + 24 * h + 3 * p
        word = int(blocked[at]) | int(blocked[at + 1]) << 8 | int(blocked[at + 2]) << 16
        assert word == 5 << 3 * (4 * i + j % 4)
        assert blocked.sum() == sum(blocked[at:at + 3])


def test_exact_sum_is_the_table_sum():
    rng = np.random.default_rng(3)
    n, d = 40, 50
    codes = rng.integers(0, 8, (n, d))
    luts = rng.standard_normal((2, d, 16)).astype(np.float32)
    blocked = blocked_of(codes)
    for v in range(n):
        parts = [np.float32(0.0)] * 4
        for j in range(d):
            parts[j % 4] = np.float32(parts[j % 4] + luts[1, j, codes[v, j]])
        want = (parts[0] + parts[1]) + (parts[2] + parts[3])
        # the order is fixed per compiled kernel; LLVM may inline it into a caller
        got = triplets.exact_sum(blocked, d, v, luts, 1)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert triplets.exact_sum(blocked, d, v, luts, 1) == got


@pytest.mark.skipif(not fastscan.DOT_AVAILABLE, reason="no AVX-512 VNNI/VBMI here")
@pytest.mark.parametrize("d", [4, 13, 50, 64])
@pytest.mark.parametrize("stored", ["none", "norms and gains"])
def test_triplet_dot_filter_masks_equal_integer_dot_products(d, stored):
    # Eight queries a pass and one at a time: bit r of a query's mask is set iff
    # its bound fa * dot - fc exceeds t, dot the int8 product of its weights with
    # the codes' levels (d % 4 != 0: padding coordinates have zero weight).
    @njit
    def run(blocked, D4, w, levels, biases, norms, gains, form_array, params, masks, sums,
            eights, out, out_sums):
        form = (form_array[0], form_array[1], form_array[2], form_array[3])
        for b in range(blocked.shape[0]):
            sums[:] = -1
            if eights:
                simd.block_triplet_dot_filter_q8(blocked, b, D4, w, 0, levels, biases, norms,
                                                 gains, form, params, masks, sums)
            else:
                for q in range(8):
                    simd.block_triplet_dot_filter_q1(blocked, b, D4, w, q, levels, biases,
                                                     norms, gains, form, params, masks, sums)
            out[:, b] = masks
            out_sums[:, 32 * b: 32 * b + 32] = sums

    rng = np.random.default_rng(d)
    n = 96
    codes = rng.integers(0, 8, (n, d))
    blocked = blocked_of(codes)
    D4 = triplets.padded_dim(d)
    weights = np.zeros((8, D4), np.int8)
    weights[:, :d] = rng.integers(-127, 128, (8, d))
    levels = rng.integers(1, 256, 16).astype(np.uint8)
    biases = (128 * weights.astype(np.int64).sum(1)).astype(np.int32)
    dots = ((levels.astype(np.int64) - 128)[codes][None] * weights[:, None, :d]).sum(-1)
    norms, gains, form, fa, fc = _row_factors(n, stored, d)
    for eights in (True, False):
        for t in (-9000.0, -100.0, 0.0, 2500.0):
            params = np.tile(np.array([0.0, 1.0, t], np.float32), 8)
            out = np.zeros((8, blocked.shape[0]), np.int64)
            out_sums = np.zeros((8, n), np.int32)
            run(blocked, D4, weights, levels, biases, norms, gains, form, params,
                np.zeros(8, np.int64), np.zeros((8, 32), np.int32), eights, out, out_sums)
            for q in range(8):
                passes = fa * dots[q].astype(np.float32) - fc > np.float32(t)
                _assert_block_outputs(out[q], out_sums[q], passes, dots[q])


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("estimator", ["corrected", "mse"])
def test_three_bit_topk_equals_float_scan(metric, estimator):
    x, q = data(1001, 22, 20, seed=7)
    index = tqsearch.TurboQuantIndex(22, 3, metric=metric, estimator=estimator)
    index.add(x)
    assert index._store.layout == "triplets"
    for start, stop in [(0, 1001), (33, 700), (5, 37)]:
        for k in (1, 10):
            ref = float_reference(index, q, k, start, stop)
            for threads in (1, 2):
                assert_same(blocked_similarities(index, q, k, start, stop, threads), ref)


@pytest.mark.parametrize("k", [7, 700])
def test_long_three_bit_codes_holding_rows_equal_float_scan(k):
    # d = 256: the rows that pass are held and re-scored at the end; k = 700 holds
    # more than the buffer.
    from test_blocked_scan import assert_same_up_to_near_ties

    x, q = data(3000, 256, 12, seed=9)
    index = tqsearch.TurboQuantIndex(256, 3, metric="l2")
    index.add(x)
    for rows in (slice(0, 12), slice(0, 1)):
        got = blocked_similarities(index, q[rows], k, 45, 2950, threads=1)
        assert_same_up_to_near_ties(got, float_reference(index, q[rows], k, 45, 2950))


def test_single_queries_and_the_portable_path_agree(monkeypatch):
    x, q = data(700, 30, 6, seed=4)
    index = tqsearch.TurboQuantIndex(30, 3, metric="cosine")
    index.add(x)
    batch = index.search(q, 5, n_threads=1)
    singles = [index.search(q[i:i + 1], 5, n_threads=1) for i in range(len(q))]
    np.testing.assert_array_equal(np.vstack([s[1] for s in singles]), batch[1])
    np.testing.assert_allclose(np.vstack([s[0] for s in singles]), batch[0], rtol=1e-6)
    # without the int8 engine (a CPU without VNNI) the rows are scanned instead
    from tqsearch.kernels.blocked_scan import ENGINE_SHUFFLE

    monkeypatch.setattr("tqsearch.index.scan_engine", lambda bits, books: ENGINE_SHUFFLE)
    portable = tqsearch.TurboQuantIndex(30, 3, metric="cosine")
    portable.add(x)
    assert not portable._scans_blocks()
    got = portable.search(q, 5)
    np.testing.assert_array_equal(got[1], batch[1])
    np.testing.assert_allclose(got[0], batch[0], rtol=1e-5, atol=1e-6)


def test_memory_is_three_bits_a_coordinate():
    x, _ = data(1000, 50, 1, seed=2)
    index = tqsearch.TurboQuantIndex(50, 3, metric="l2")
    index.add(x)
    per_vector = index._store.nbytes / index.ntotal
    assert per_vector <= 1.1 * index.code_size


def test_files_with_three_bit_rows_are_read_into_triplets(tmp_path, monkeypatch):
    # an index written while 3-bit codes were stored as rows reads back into the
    # triplets layout, with the same codes and results
    x, q = data(300, 20, 5, seed=6)
    with monkeypatch.context() as patch:
        patch.setattr("tqsearch.store.layout_for", lambda codec: "rows")
        old = tqsearch.TurboQuantIndex(20, 3, metric="ip")
        old.add(x)
        assert old._store.layout == "rows"
        write_index(old, tmp_path / "old.tqs")
        want = old.search(q, 10)
    again = read_index(tmp_path / "old.tqs")
    assert again._store.layout == "triplets"
    np.testing.assert_array_equal(again.codes(), old.codes())
    got = again.search(q, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
