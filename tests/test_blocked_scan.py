"""The blocked (fast-scan) top-k equals a float scan of the same codes."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tqsearch
from tqsearch.kernels.scan import scan_topk
from tqsearch.results import finalize_topk


def float_reference(index, xq, k, start, stop):
    """Top-k similarities of the row-major float kernel over vectors ``start:stop``."""
    codec = index.codec
    y, y_sign, _ = codec.prepare_queries(np.ascontiguousarray(xq, dtype=np.float32))
    batch = index._store.rows(start, stop)
    nq = y.shape[0]
    out_s = np.empty((nq, 1, k), np.float32)
    out_i = np.empty((nq, 1, k), np.int64)
    scan_topk(batch.codes, batch.norms, batch.gains, y, y_sign, codec.centroids,
              codec.index_bits, codec.mode, codec.distance_form, 1, start, out_s, out_i)
    return finalize_topk(out_s.reshape(nq, k), out_i.reshape(nq, k), k)


def blocked_similarities(index, xq, k, start, stop, threads):
    codec = index.codec
    with_threads = tqsearch.index._threads(threads)
    with with_threads as pool:
        y, y_sign, _ = codec.prepare_queries(np.ascontiguousarray(xq, dtype=np.float32))
        s, i = index._scan(y, y_sign, k, start, stop, pool.count)
    return finalize_topk(s, i, k)


def assert_same(got, ref):
    np.testing.assert_array_equal(got[1], ref[1])
    valid = ref[1] >= 0
    np.testing.assert_allclose(got[0][valid], ref[0][valid], rtol=1e-5, atol=1e-5)


def data(n, d, nq, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, d)) + 0.3).astype(np.float32)
    q = (rng.standard_normal((nq, d)) + 0.3).astype(np.float32)
    return x, q


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("estimator", ["corrected", "mse"])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_blocked_topk_equals_float_scan(metric, estimator, bits):
    x, q = data(1001, 20, 9, seed=bits)
    index = tqsearch.TurboQuantIndex(20, bits, metric=metric, estimator=estimator)
    index.add(x)
    assert index._store.layout == "blocked"
    for start, stop in [(0, 1001), (33, 700), (5, 37), (990, 1001)]:
        for k in (1, 10):
            ref = float_reference(index, q, k, start, stop)
            for threads in (1, 2):
                assert_same(blocked_similarities(index, q, k, start, stop, threads), ref)
                # one query at a time: the single-query kernel
                one = blocked_similarities(index, q[:1], k, start, stop, threads)
                assert_same(one, (ref[0][:1], ref[1][:1]))


def test_k_larger_than_n_pads():
    x, q = data(45, 16, 3, seed=7)
    index = tqsearch.TurboQuantIndex(16, 2, metric="l2")
    index.add(x)
    D, I = index.search(q, 60)
    assert D.shape == (3, 60)
    for row in I:
        assert sorted(row[:45].tolist()) == list(range(45))
    assert (I[:, 45:] == -1).all() and np.isinf(D[:, 45:]).all()
    ref = float_reference(index, q, 60, 0, 45)
    np.testing.assert_array_equal(I, ref[1])


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_search_scores_match_the_metric(metric):
    x, q = data(500, 24, 6, seed=3)
    index = tqsearch.TurboQuantIndex(24, 4, metric=metric)
    index.add(x)
    D, I = index.search(q, 5)
    sim, ids = float_reference(index, q, 5, 0, 500)
    np.testing.assert_array_equal(I, ids)
    _, _, sq = index.codec.prepare_queries(q)
    if metric == "l2":
        want = np.maximum(sq[:, None] - sim, 0)
    elif metric == "cosine" and index.codec.distance_form:
        want = 1 - (sq[:, None] - sim) / 2
    else:
        want = sim
    np.testing.assert_allclose(D, want, rtol=1e-5, atol=1e-5)
    if metric == "ip":  # scores are inner products with the reconstructions
        recon = index.reconstruct_n(0, 500)
        for a in range(q.shape[0]):
            np.testing.assert_allclose(D[a], recon[I[a]] @ q[a], rtol=1e-3, atol=1e-3)
    assert (np.diff(D, axis=1) >= 0).all() if metric == "l2" else (np.diff(D, axis=1) <= 0).all()


def test_thread_counts_and_batch_sizes_agree():
    x, q = data(3000, 32, 17, seed=5)
    index = tqsearch.TurboQuantIndex(32, 2, metric="cosine")
    index.add(x)
    D1, I1 = index.search(q, 10, n_threads=1)
    D2, I2 = index.search(q, 10, n_threads=2)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    for a in (0, 16):
        D, I = index.search(q[a:a + 1], 10, n_threads=1)
        np.testing.assert_array_equal(I[0], I1[a])


def test_adding_more_vectors_refreshes_the_filter():
    x, q = data(700, 16, 4, seed=11)
    index = tqsearch.TurboQuantIndex(16, 4, metric="ip")
    index.add(x[:300])
    index.search(q, 5)
    index.add(x[300:])
    assert_same(index.search(q, 5), float_reference(index, q, 5, 0, 700))


def test_portable_variant_equals_float_scan():
    """The portable scanner (here run uncompiled, so the test costs no compile time)."""
    script = textwrap.dedent("""
        import numpy as np, tqsearch
        from tqsearch.kernels import fastscan
        from test_blocked_scan import data, float_reference, blocked_similarities, assert_same
        assert fastscan.VARIANT == "portable"
        x, q = data(101, 8, 3, seed=2)
        for metric in ("ip", "l2"):
            for bits in (1, 4):
                index = tqsearch.TurboQuantIndex(8, bits, metric=metric)
                index.add(x)
                for start, stop in [(0, 101), (40, 90)]:
                    ref = float_reference(index, q, 7, start, stop)
                    assert_same(blocked_similarities(index, q, 7, start, stop, 2), ref)
                    assert_same(blocked_similarities(index, q[:1], 7, start, stop, 1),
                                (ref[0][:1], ref[1][:1]))
        print("ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([here, os.path.dirname(here),
                                         env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def _engines(bits, books):
    """The engines this CPU can scan codes of ``bits`` with: its best and the byte
    shuffles every SIMD variant has."""
    from tqsearch.kernels.blocked_scan import ENGINE_SHUFFLE, scan_engine

    return sorted({scan_engine(bits, books), ENGINE_SHUFFLE})


@pytest.mark.parametrize("bits, d", [(1, 40), (2, 24), (2, 30), (4, 24), (4, 26)])
@pytest.mark.parametrize("tile_blocks", [1, 3])
def test_query_groups_scanning_tiles_equal_float_scan(tile_blocks, bits, d):
    # 37 queries: two full groups and a partial one with a single query left
    # over; tiles of 1 and 3 blocks over 300 vectors (10 blocks, a ragged last
    # tile). Every engine: byte shuffles two queries a pass; where the CPU has
    # VNNI, eight queries a pass of 64-byte table lookups (1 and 2 bits) or int8
    # dot products (4 bits). d = 26 and 30: the last step of sub-codes is partial.
    from tqsearch.kernels.blocked_scan import ENGINE_SHUFFLE, GROUP_QUERIES, scan_blocked_topk

    x, q = data(300, d, 2 * GROUP_QUERIES + 5, seed=11)
    index = tqsearch.TurboQuantIndex(d, bits, metric="l2")
    index.add(x)
    codec, store = index.codec, index._store
    y, _, _ = codec.prepare_queries(q)
    k = 7
    for engine in _engines(codec.index_bits, codec.tables[1]):
        # the byte shuffles read canonical steps; the VNNI engines the stored order
        codes = store.canonical_codes() if engine == ENGINE_SHUFFLE else store.codes
        for start, stop in [(0, 300), (37, 251)]:
            out_s = np.empty((len(q), 1, k), dtype=np.float32)
            out_i = np.empty((len(q), 1, k), dtype=np.int64)
            fields = index._filter_fields()
            scan_blocked_topk(codes, start, stop, *fields, store.field("norms"),
                              store.field("gains"), y, codec.centroids, codec.index_bits,
                              *codec.tables, codec.mode, codec.distance_form, 1, True,
                              tile_blocks, engine, out_s, out_i)
            got = finalize_topk(out_s.reshape(len(q), -1), out_i.reshape(len(q), -1), k)
            assert_same(got, float_reference(index, q, k, start, stop))


@pytest.mark.parametrize("bits, d", [(2, 384), (4, 192), (4, 128)])
@pytest.mark.parametrize("k", [7, 700])
def test_long_codes_holding_rows_equal_float_scan(bits, d, k):
    # From DEFER_SUB_CODES sub-codes on, the VNNI engines hold the rows that pass
    # and re-score at the end those that can still be among the best (k = 700:
    # more than HELD_ROWS, the rows held grow with k).
    from tqsearch.kernels.blocked_scan import DEFER_SUB_CODES, HELD_ROWS

    assert d * bits // 4 >= DEFER_SUB_CODES and 700 > HELD_ROWS
    x, q = data(3000, d, 20, seed=5)
    index = tqsearch.TurboQuantIndex(d, bits, metric="l2")
    index.add(x)
    check_ranges_and_batches(index, q, k, assert_same_up_to_near_ties)


@pytest.mark.parametrize("k", [1, 10])
def test_short_codes_over_many_blocks_rescore_as_they_pass(k):
    # Batches over more than DEFER_SHORT_BLOCKS blocks of short codes re-score the
    # rows that pass at once (single queries and short scans hold them)
    from tqsearch.kernels.blocked_scan import DEFER_SHORT_BLOCKS, DEFER_SUB_CODES

    d, bits = 24, 2
    n = 32 * DEFER_SHORT_BLOCKS + 700
    assert d * bits // 4 < DEFER_SUB_CODES
    x, q = data(n, d, 20, seed=6)
    index = tqsearch.TurboQuantIndex(d, bits, metric="cosine")
    index.add(x)
    for start, stop in ((0, n), (5, n - 3)):
        ref = float_reference(index, q, k, start, stop)
        assert_same(blocked_similarities(index, q, k, start, stop, 1), ref)


@pytest.mark.parametrize("bits, d", [(2, 384), (4, 192)])
def test_held_rows_full_with_ties_equal_float_scan(bits, d):
    # 3,000 rows, copies of four vectors in shuffled order: each copy of the best
    # one passes the filter, so the rows held (HELD_ROWS) fill and are re-scored
    # during the scan, and every score ties with hundreds of others: the k kept
    # must be the smallest ids, whatever order the held rows are re-scored in.
    from tqsearch.kernels.blocked_scan import HELD_PER_RESULT, HELD_ROWS

    k = 7
    assert 750 > max(HELD_ROWS, HELD_PER_RESULT * k)
    base, q = data(4, d, 20, seed=8)
    x = base[np.random.default_rng(8).permutation(np.arange(3000) % 4)]
    index = tqsearch.TurboQuantIndex(d, bits, metric="ip")
    index.add(x)
    check_ranges_and_batches(index, q, k, assert_same)


def check_ranges_and_batches(index, q, k, check):
    """``check(blocked, float)`` results on one thread, for all 3,000 vectors and
    a range of them, a batch of 20 queries and a single one."""
    for start, stop in [(0, 3000), (45, 2950)]:
        for rows in (slice(0, 20), slice(0, 1)):
            got = blocked_similarities(index, q[rows], k, start, stop, threads=1)
            check(got, float_reference(index, q[rows], k, start, stop))


def assert_same_up_to_near_ties(got, ref):
    """The same scores, and the same vectors but for the order of scores equal within
    float32 rounding (the two scans add the same table entries in different orders;
    with k in the hundreds some neighbours are that close)."""
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    for g, r, s in zip(got[1], ref[1], ref[0], strict=True):
        differ = np.flatnonzero(g != r)
        assert set(g[differ]) == set(r[differ])
        for i in differ:  # only swapped among near-equal scores
            assert np.isclose(s, s[i], rtol=1e-5, atol=1e-5).sum() > 1
