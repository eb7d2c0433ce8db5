"""Micro-benchmark: blocked 4-bit fast scan vs FAISS ``PQ{M}x4fs``, one thread.

For each (n, M): random sub-codes packed with ``pack_blocked``; ``scan_blocked`` is
timed per variant for one query (median of ``--reps`` calls) with a TurboQuant-shaped
table quantized by ``quantize_lut`` to plain 8 bits ("8bit") and for group 4 ("grp4":
the kernels add four lookups as bytes before widening), and ``scan_blocked_multi``
for a batch of random full-range 8-bit tables (time per query). FAISS's
``IndexPQFastScan`` (d = M, so the codes have the same bytes: M / 2 per vector) is
trained on random data and searched with k = 10, one query at a time (median latency)
and with a batch of ``--batch`` queries (time per query).

FAISS's numbers are a full search (tables, scan, top-k); ours are the scan alone,
which is what the index builds on, plus one row "tq +top10" for the default variant:
``scan_block`` block by block with an integer top-10 heap (8-bit tables), closer to what
a FAISS search does. Codes/s = vectors scored per second per core.

Usage::

    python bench/bench_fastscan.py                 # n = 100k, 200k; M = 32, 64, 128, 384
    python bench/bench_fastscan.py --n 100000 --M 64 --reps 50 --no-faiss
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from numba import njit  # noqa: E402

from tqsearch.kernels import fastscan  # noqa: E402
from tqsearch.kernels.fastscan import BLOCK, lut_group, scan_block  # noqa: E402


@njit(cache=True)
def scan_topk(blocked, n, M, lut, k, heap_val, heap_idx):
    """Integer top-k by blocks: scan a block, push sums above the k-th best (min-heap)."""
    sums = np.empty(BLOCK, dtype=np.int32)
    fastscan.check_block_args(blocked, M, lut, sums)
    group = lut_group(lut)
    heap_val[:] = -1
    heap_idx[:] = -1
    for b in range((n + BLOCK - 1) // BLOCK):
        if scan_block(blocked, b, M, lut, sums, group) <= heap_val[0]:
            continue  # the block's best is not above the k-th: most blocks end here
        for r in range(min(BLOCK, n - b * BLOCK)):
            s = sums[r]
            if s > heap_val[0]:
                # replace the root and sift down
                i = 0
                while True:
                    c = 2 * i + 1
                    if c >= k:
                        break
                    if c + 1 < k and heap_val[c + 1] < heap_val[c]:
                        c += 1
                    if heap_val[c] >= s:
                        break
                    heap_val[i] = heap_val[c]
                    heap_idx[i] = heap_idx[c]
                    i = c
                heap_val[i] = s
                heap_idx[i] = b * BLOCK + r


def median_time(fn, reps, budget_s=2.0):
    """Median wall time of ``fn()`` over ``reps`` calls (fewer if one call is slow)."""
    fn()
    t = time.perf_counter()
    fn()
    one = time.perf_counter() - t
    reps = max(3, min(reps, int(budget_s / max(one, 1e-9))))
    times = np.empty(reps)
    for i in range(reps):
        t = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t
    return float(np.median(times))


def bench_ours(n, M, reps, batch, rng):
    nibbles = rng.integers(0, 16, (n, M), dtype=np.uint8)
    blocked = fastscan.pack_blocked(nibbles)
    # A TurboQuant-shaped query table T[m, c] = y_m * centroid_c, quantized to plain
    # 8 bits (group 1) and for group 4 (grouped rows' maxima sum to <= 255, see
    # fastscan.quantize_lut; about a 2.2x coarser step than 8 bits).
    T = (rng.standard_normal(M)[:, None] * np.sort(rng.standard_normal(16))).astype(np.float32)
    lut8 = np.empty((M, 16), dtype=np.uint8)
    lut_g4 = np.empty((M, 16), dtype=np.uint8)
    fastscan.quantize_lut(T, lut8, 1)
    fastscan.quantize_lut(T, lut_g4, 4)
    luts = rng.integers(0, 256, (batch, M, 16), dtype=np.uint8)
    out = np.empty(fastscan.n_blocks(n) * fastscan.BLOCK, dtype=np.int32)
    # A batch is scanned QUERY_CHUNK tables at a time into one reused buffer, as a
    # batched search consuming the sums chunk by chunk would (one (batch, n) output
    # would be memory traffic of its own).
    chunk = fastscan.QUERY_CHUNK
    outs = np.empty((chunk, out.shape[0]), dtype=np.int32)
    rows = {}
    for variant in fastscan.available_variants():
        _, scan, _, scan_multi = fastscan.kernels(variant)
        t8 = median_time(lambda: scan(blocked, n, M, lut8, out), reps)  # noqa: B023
        t6 = median_time(lambda: scan(blocked, n, M, lut_g4, out), reps)  # noqa: B023
        nb = batch if variant != "portable" else min(batch, 4)

        def run_batch():
            for q0 in range(0, nb, chunk):  # noqa: B023
                q1 = min(q0 + chunk, nb)  # noqa: B023
                scan_multi(blocked, n, M, luts[q0:q1], outs[: q1 - q0])  # noqa: B023

        tb = median_time(run_batch, 15) / nb
        rows[variant] = (t8, t6, tb)
    hv = np.empty(10, dtype=np.int32)
    hi = np.empty(10, dtype=np.int64)
    ttop = median_time(lambda: scan_topk(blocked, n, M, lut8, 10, hv, hi), reps)
    expect = np.sort(lut8[np.arange(M), nibbles].astype(np.int64).sum(1))[-10:]
    if not np.array_equal(np.sort(hv), expect):
        raise AssertionError("scan_topk disagrees with the reference")
    return rows, ttop


def bench_faiss(n, M, reps, batch, rng):
    import faiss

    faiss.omp_set_num_threads(1)
    d = M
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xq = rng.standard_normal((max(batch, reps), d)).astype(np.float32)
    index = faiss.index_factory(d, f"PQ{M}x4fs")
    index.train(xb[: min(n, 20_000)])
    index.add(xb)
    index.search(xq[:8], 10)
    one = [0]

    def single():
        i = one[0] % xq.shape[0]
        one[0] += 1
        index.search(xq[i : i + 1], 10)

    t1 = median_time(single, reps)
    t = time.perf_counter()
    index.search(xq[:batch], 10)
    tb = (time.perf_counter() - t) / batch
    return t1, tb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="100000,200000", help="comma-separated database sizes")
    p.add_argument("--M", default="32,64,128,384", help="comma-separated sub-code counts")
    p.add_argument("--reps", type=int, default=200, help="single-query calls to time")
    p.add_argument("--batch", type=int, default=1000, help="queries in a batch")
    p.add_argument("--no-faiss", action="store_true", help="skip the FAISS baseline")
    args = p.parse_args(argv)
    ns = [int(v) for v in args.n.split(",")]
    Ms = [int(v) for v in args.M.split(",")]
    rng = np.random.default_rng(0)

    print(f"variants: {fastscan.available_variants()} (default {fastscan.VARIANT}); one thread")
    print("times in microseconds; 'batch' = time per query in a batch; Mcodes/s from nq=1, 8-bit")
    hdr = (
        f"{'n':>7} {'M':>4} {'method':<13} {'nq=1 8bit':>10} {'nq=1 grp4':>10} "
        f"{'batch/q':>9} {'Mcodes/s':>9} {'vs faiss nq=1':>14} {'vs faiss batch':>15}"
    )
    print(hdr)
    print("-" * len(hdr))
    for n in ns:
        for M in Ms:
            faiss_t = None
            if not args.no_faiss:
                faiss_t = bench_faiss(n, M, args.reps, args.batch, rng)
            rows, ttop = bench_ours(n, M, args.reps, min(args.batch, 64), rng)
            for variant, (t8, t6, tb) in rows.items():
                r1 = f"{faiss_t[0] / t8:13.2f}x" if faiss_t else ""
                rb = f"{faiss_t[1] / tb:14.2f}x" if faiss_t else ""
                print(
                    f"{n:>7} {M:>4} {'tq ' + variant:<13} {t8 * 1e6:10.1f} {t6 * 1e6:10.1f} "
                    f"{tb * 1e6:9.1f} {n / t8 / 1e6:9.0f} {r1} {rb}"
                )
            r1 = f"{faiss_t[0] / ttop:13.2f}x" if faiss_t else ""
            print(
                f"{n:>7} {M:>4} {'tq +top10':<13} {ttop * 1e6:10.1f} {'':>10} {'':>9} "
                f"{n / ttop / 1e6:9.0f} {r1}"
            )
            if faiss_t:
                print(
                    f"{n:>7} {M:>4} {'faiss PQx4fs':<13} {faiss_t[0] * 1e6:10.1f} {'':>10} "
                    f"{faiss_t[1] * 1e6:9.1f} {n / faiss_t[0] / 1e6:9.0f}"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
