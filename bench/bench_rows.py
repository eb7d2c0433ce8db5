"""Row-major codes (5-8 bits, QJL) against FAISS's scalar quantizers, one thread.

Codes of 5 to 8 bits per coordinate and QJL codes are stored row by row and
scanned as int8 dot products where the CPU has AVX-512 VNNI and VBMI
(:mod:`tqsearch.kernels.rowdot`), elsewhere by
:func:`tqsearch.kernels.scan.scan_topk`. For each ann-benchmarks HDF5
file given: tqsearch at 5, 6 and 8 bits (the default estimator) and with
``qjl=True`` at 3 and 4 bits, beside FAISS ``SQ6`` and ``SQ8`` (per-dimension
scalar quantizers trained on the vectors: 6 and 8 bits a coordinate), each timed
on a batch of queries (QPS, best of ``--repeat``) and on single queries (median
latency), with recall@10 against the file's neighbours. One process, methods
interleaved.

Usage::

    python bench/bench_rows.py data/glove-50-angular.hdf5 [more.hdf5 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import h5py
import numba
import numpy as np

import tqsearch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_query import METRICS, Faiss  # noqa: E402


class TQ:
    def __init__(self, d, bits, metric, qjl=False):
        self.name = f"tqsearch{' qjl' if qjl else ''} {bits} bits"
        self.index = tqsearch.TurboQuantIndex(d, bits, metric=metric, qjl=qjl)

    def build(self, xb):
        self.index.add(xb)

    def search(self, xq, k):
        return self.index.search(xq, k, n_threads=1)

    @property
    def bytes(self):
        return self.index.code_size


def faiss_sq(d, bits, metric):
    """FAISS's scalar quantizer of ``bits`` per coordinate (trained min/max per dimension)."""
    return Faiss(d, f"SQ{bits}", metric, name=f"FAISS SQ{bits}")


def recall(ids, gt, k):
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k
                          for a, b in zip(np.asarray(ids)[:, :k], gt[:, :k], strict=True)]))


def run_file(path, nq, n_latency, repeat, k=10):
    with h5py.File(path, "r") as f:
        xb = np.ascontiguousarray(f["train"][:], dtype=np.float32)
        xq = np.ascontiguousarray(f["test"][:nq], dtype=np.float32)
        gt = np.asarray(f["neighbors"][:nq])
        metric = METRICS[f.attrs["distance"]]
    d = xb.shape[1]
    methods = [TQ(d, 5, metric), TQ(d, 6, metric), faiss_sq(d, 6, metric), TQ(d, 8, metric),
               faiss_sq(d, 8, metric), TQ(d, 3, metric, qjl=True), TQ(d, 4, metric, qjl=True)]
    for i, m in enumerate(methods):
        print(f"  building {i + 1}/{len(methods)}: {m.name}", file=sys.stderr, flush=True)
        m.build(xb)
        m.search(xq[:20], k)  # compiles, faults pages in
    res = {m.name: {"qps": 0.0, "lat": np.inf} for m in methods}
    for _ in range(repeat):
        for m in methods:
            t = time.perf_counter()
            _, ids = m.search(xq, k)
            res[m.name]["qps"] = max(res[m.name]["qps"], len(xq) / (time.perf_counter() - t))
            res[m.name]["recall"] = recall(ids, gt, k)
            times = np.empty(n_latency)
            for i in range(n_latency):
                t = time.perf_counter()
                m.search(xq[i % len(xq): i % len(xq) + 1], k)
                times[i] = time.perf_counter() - t
            res[m.name]["lat"] = min(res[m.name]["lat"], float(np.median(times)) * 1e3)
    name = os.path.basename(path).rsplit(".", 1)[0]
    for m in methods:
        r = res[m.name]
        print(f"| {name} | {m.name} | {m.bytes} | {r['qps']:,.0f} | {r['lat']:.2f} "
              f"| {r['recall']:.3f} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="ann-benchmarks HDF5 files")
    p.add_argument("--nq", type=int, default=1000, help="queries per batch (default 1000)")
    p.add_argument("--latency", type=int, default=200,
                   help="single queries timed for the median latency (default 200)")
    p.add_argument("--repeat", type=int, default=2, help="rounds; the best is kept (default 2)")
    args = p.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    print("| data | method | bytes/vec | QPS | nq=1 ms | R@10 |")
    print("|---|---|---|---|---|---|")
    for path in args.paths:
        run_file(path, args.nq, args.latency, args.repeat)


if __name__ == "__main__":
    main()
