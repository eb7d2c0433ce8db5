"""Codes of 5-8 bits as int8 dot products (kernels/rowdot.py): the row scan's results."""

import numpy as np
import pytest

import tqsearch
from tqsearch.kernels import rowdot
from tqsearch.kernels.blocked_scan import filter_fields
from tqsearch.kernels.scan import scan_topk

pytestmark = pytest.mark.skipif(not rowdot.DOT_AVAILABLE,
                                reason="needs AVX-512 VNNI and VBMI (the row scan runs instead)")


def data(n, d, nq, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) + 0.3).astype(np.float32)
    q = (rng.standard_normal((nq, d)) + 0.3).astype(np.float32)
    return x, q


def heaps(index, q, k, start, stop, n_chunks, byte_scan):
    """Both kernels' per-chunk heaps over rows ``start:stop``, sorted the same way."""
    codec, store = index.codec, index._store
    y, y_sign, _ = codec.prepare_queries(q)
    batch = store.rows(start, stop)
    out_s = np.empty((len(q), n_chunks, k), dtype=np.float32)
    out_i = np.empty((len(q), n_chunks, k), dtype=np.int64)
    if byte_scan:
        _, _, form, fc_max = filter_fields(store.field("norms"), store.field("gains"), store.n,
                                           codec.mode, codec.distance_form)
        rowdot.scan_rowdot(batch.codes, batch.norms, batch.gains, form, fc_max, y, y_sign,
                           codec.centroids, codec.index_bits, codec.mode, codec.distance_form,
                           n_chunks, start, out_s, out_i)
    else:
        scan_topk(batch.codes, batch.norms, batch.gains, y, y_sign, codec.centroids,
                  codec.index_bits, codec.mode, codec.distance_form, n_chunks, start,
                  out_s, out_i)
    order = np.lexsort((out_i, -out_s), axis=-1)
    return np.take_along_axis(out_s, order, -1), np.take_along_axis(out_i, order, -1)


CASES = ([(estimator, bits, d) for estimator in ("corrected", "mse")
          for bits, d in [(8, 20), (8, 64), (8, 130), (5, 130), (6, 64), (7, 21)]]
         + [("qjl", bits, d) for bits, d in [(2, 70), (3, 33), (4, 64), (8, 40)]])


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("estimator, bits, d", CASES)
def test_byte_scan_equals_row_scan(metric, estimator, bits, d):
    # d = 20, 21, 33, 40: one partial chunk of 64 codes; 64: one full; 70, 130:
    # full and partial (5 bits: a last group of 8 codes that ends mid-byte).
    # 1,001 rows: the last group of 16 is partial. QJL: bits counts the sign bit.
    qjl = estimator == "qjl"
    x, q = data(1001, d, 21, seed=d)
    index = tqsearch.TurboQuantIndex(d, bits, metric=metric, qjl=qjl,
                                     estimator="mse" if qjl else estimator)
    index.add(x)
    assert index._store.layout == "rows"
    for start, stop, n_chunks, k in [(0, 1001, 1, 10), (33, 700, 3, 7), (5, 12, 1, 20)]:
        got = heaps(index, q, k, start, stop, n_chunks, True)
        ref = heaps(index, q, k, start, stop, n_chunks, False)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])


@pytest.mark.parametrize("bits, qjl", [(8, False), (4, True)])
def test_search_takes_the_byte_scan_and_matches_the_row_scan(bits, qjl):
    x, q = data(3000, 96, 40, seed=5)
    x[7] = 0  # a zero vector (of a centred cosine index: flagged, ranked last)
    index = tqsearch.TurboQuantIndex(96, bits, metric="cosine", qjl=qjl)
    index.add(x)
    assert index._scans_bytes()
    for k in (1, 10, 3000):
        for threads in (1, 2):
            D, I = index.search(q, k, n_threads=threads)
            y, y_sign, sq = index.codec.prepare_queries(q)
            s, i = heaps(index, q, k, 0, 3000, 1, False)
            ref = tqsearch.results.finalize_topk(s.reshape(len(q), -1), i.reshape(len(q), -1),
                                                 k, sq, index._to_metric(False))
            np.testing.assert_array_equal(I, ref[1])
            np.testing.assert_allclose(D, ref[0], rtol=1e-6, atol=1e-6)


def test_levels_and_weights_bound_the_float_sum():
    # the filter's premise: offset + scale * S bounds sum_j y_j c_j from above and
    # below, for every code (here: random codes, d = 200, queries of any scale)
    rng = np.random.default_rng(3)
    d, n = 200, 500
    centroids = np.sort(rng.standard_normal(256)).astype(np.float32) / np.sqrt(d)
    levels, level_scale, level_error, top = rowdot.byte_levels(centroids)
    signed = levels.view(np.int8).astype(np.int64)
    assert np.abs(centroids - level_scale * signed).max() <= level_error * (1 + 1e-12)
    codes = rng.integers(0, 256, (n, d), dtype=np.uint8)
    values = centroids[codes]
    for scale in (1e-3, 1.0, 1e3):
        y = (rng.standard_normal((3, d)) * scale).astype(np.float32)
        weights = np.zeros((3, 256), dtype=np.uint8)
        for q in range(3):
            offset, step, mass = rowdot.prepare_weights(y[q], level_scale, level_error, top,
                                                        weights, q)
            w = weights[q, :d].astype(np.int64) - 128
            assert np.all(weights[q, d:] == 128)
            S = signed[codes] @ w
            exact = values.astype(np.float64) @ y[q].astype(np.float64)
            assert np.all(np.abs(exact) <= mass)
            assert np.all(np.abs(exact - step * S) <= offset)
            # and tight enough to filter: a few hundredths of the cosine scale
            row_norm = np.sqrt((values.astype(np.float64) ** 2).sum(1).mean())
            assert offset < 0.05 * np.linalg.norm(y[q]) * row_norm


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_decode_levels_writes_levels_and_their_sums(bits):
    from numba import njit

    from tqsearch.kernels.encode import pack_row

    @njit
    def decode(codes, v0, count, start, bits, d, levels, buf, sums):
        rowdot.decode_levels(codes, v0, count, start, bits, d, levels, buf, sums)

    rng = np.random.default_rng(bits)
    for d in (1, 7, 63, 64, 65, 200):
        values = rng.integers(0, 2 ** bits, (40, d)).astype(np.uint8)
        # codes from byte 3 of each row, more bytes after them (as QJL signs follow
        # the index bits)
        codes = np.zeros((40, 3 + -(-d * bits // 8) + 5), dtype=np.uint8)
        codes[:, :3] = 255
        codes[:, -5:] = 255
        for row, idx in zip(codes, values.astype(np.int32), strict=True):
            pack_row(idx, bits, row[3:])
        levels = np.tile(rng.integers(0, 256, 2 ** bits, dtype=np.uint8), 256 >> bits)
        width = -(-d // 64) * 64
        buf = np.full((16, width), 99, dtype=np.uint8)
        sums = np.zeros(16, dtype=np.int32)
        decode(codes, 20, 13, 3, bits, d, levels, buf, sums)
        want = levels[values[20:33]]
        np.testing.assert_array_equal(buf[:13, :d], want)
        assert np.all(buf[:13, d:] == 0)
        assert np.all(buf[13:] == 99)  # rows past count untouched
        np.testing.assert_array_equal(sums[:13], want.view(np.int8).astype(np.int64).sum(1))
