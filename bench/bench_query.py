"""Query speed of tqsearch against FAISS ``PQ{M}x4fs`` and turbovec, single thread.

One process, methods interleaved: for each ann-benchmarks HDF5 file given and
for 2 and 4 bits per coordinate,

* tqsearch ``TurboQuantIndex(d, bits)`` (the dataset's metric), and with
  ``estimator="pca"`` (trained on the vectors it indexes),
* FAISS ``PQ{d * bits / 4}x4fs`` (the same code bytes: ``d * bits / 8``),
* turbovec ``TurboQuantIndex(d, bits)`` (angular data with ``d % 8 == 0`` only),

each timed on a batch of queries (QPS, after a warm-up) and on single queries
(median latency; the methods take turns every ``LATENCY_RUN`` queries), with
recall@k (``--k``, default 10) against the file's neighbours and the bytes
stored per vector. One thread everywhere: ``faiss.omp_set_num_threads(1)``,
``RAYON_NUM_THREADS=1`` set before turbovec is imported, numba threads 1; the
``cpu/wall`` column (process CPU time over wall time while searching) shows
that each method did run on one core. A last column gives tqsearch's batch
speed-up with 2 threads, and the very last the bytes tqsearch's index holds per
vector (``nbytes`` after the searches, less the rotation and codebook) over its
``code_size``. Timings are the minimum over ``--repeat`` rounds, the methods
taking turns within each round.

Usage::

    python bench/bench_query.py data/glove-50-angular.hdf5 [more.hdf5 ...]

``--limit N`` indexes only each file's first ``N`` vectors (smaller collections,
where a single query's fixed costs weigh more; neighbours recomputed exactly).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before turbovec starts its pool

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import h5py  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402

import tqsearch  # noqa: E402
from tqsearch.datasets import ground_truth  # noqa: E402

METRICS = {"angular": "cosine", "euclidean": "l2", "dot": "ip", "ip": "ip"}
LATENCY_RUN = 50  # single queries a method runs before the next takes its turn


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timer:
    """Wall and CPU time of a block."""

    def __enter__(self):
        self.cpu = cpu_seconds()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = cpu_seconds() - self.cpu


def recall(ids, gt, k=10):
    ids = np.asarray(ids)[:, :k]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k
                          for a, b in zip(ids, gt[:, :k], strict=True)]))


class TQ:
    def __init__(self, d, bits, metric, threads=1, estimator="corrected"):
        self.name = "tqsearch" if estimator == "corrected" else f"tqsearch {estimator}"
        self.index = tqsearch.TurboQuantIndex(d, bits, metric=metric, estimator=estimator)
        self.threads = threads
        self.empty_nbytes = self.index.nbytes  # rotation, codebook: not per vector

    def memory_ratio(self):
        """Bytes the index holds per vector over ``code_size`` (after searching)."""
        index = self.index
        return (index.nbytes - self.empty_nbytes) / (index.ntotal * index.code_size)

    def build(self, xb):
        self.index.add(xb)

    def search(self, xq, k):
        return self.index.search(xq, k, n_threads=self.threads)

    @property
    def bytes(self):
        return self.index.code_size


class Faiss:
    """A FAISS index from a factory string; cosine as inner products of unit vectors."""

    def __init__(self, d, factory, metric, name=None, train_rows=None):
        import faiss

        self.name = name or factory
        kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self.index = faiss.index_factory(d, factory, kind)
        self.metric = metric
        self.train_rows = train_rows

    def _prep(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.metric == "cosine":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return x

    def build(self, xb):
        xb = self._prep(xb)
        self.index.train(xb[: self.train_rows])
        self.index.add(xb)

    def search(self, xq, k):
        return self.index.search(self._prep(xq), k)

    @property
    def bytes(self):
        return self.index.sa_code_size()


class FaissPQ(Faiss):
    """``PQ{M}x4fs`` at the bytes of ``bits`` per coordinate (``M = d * bits / 4``)."""

    def __init__(self, d, bits, metric):
        super().__init__(d, f"PQ{d * bits // 4}x4fs", metric, train_rows=20000)


class Turbovec:
    def __init__(self, d, bits, metric):
        import turbovec

        self.name = "turbovec"
        self.module = turbovec
        self.index = turbovec.TurboQuantIndex(d, bits)
        self.d, self.bits = d, bits

    @staticmethod
    def _unit(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)

    def build(self, xb):
        xb = self._unit(xb)
        self.index.add(xb)
        if hasattr(self.index, "prepare"):
            self.index.prepare()
        s = xb[:2048]  # marginal size of the serialized index per vector
        sizes = []
        for rows in (s[:1024], s):
            idx = self.module.TurboQuantIndex(self.d, self.bits)
            idx.add(rows)
            sizes.append(len(idx.to_bytes()))
        self._bytes = (sizes[1] - sizes[0]) / (len(s) - 1024)

    def search(self, xq, k):
        D, I = self.index.search(self._unit(xq), k)
        return np.asarray(D), np.asarray(I)

    @property
    def bytes(self):
        return self._bytes


def make_methods(d, bits, metric):
    methods = [TQ(d, bits, metric), TQ(d, bits, metric, estimator="pca"),
               FaissPQ(d, bits, metric)]
    if metric == "cosine" and d % 8 == 0 and 2 <= bits <= 4:
        try:
            methods.append(Turbovec(d, bits, metric))
        except ImportError:
            print("turbovec is not installed: skipped")
    return methods


def run_dataset(path, bits_list, nq, n_latency, repeat, k=10, limit=None):
    with h5py.File(path, "r") as f:
        xb = np.ascontiguousarray(f["train"][:limit], dtype=np.float32)
        xq = np.ascontiguousarray(f["test"][:nq], dtype=np.float32)
        gt = np.asarray(f["neighbors"][:nq])
        distance = f.attrs["distance"]
        metric = METRICS[distance]
        if limit is not None and limit < f["train"].shape[0]:
            # the file's neighbours are among all its vectors: recompute for the first ones
            _, gt = ground_truth(xb, xq, k, distance)
    if gt.shape[1] < k:
        raise SystemExit(f"{path}: its neighbours list {gt.shape[1]} ids a query, "
                         f"fewer than k = {k}")
    n, d = xb.shape
    name = os.path.basename(path).rsplit(".", 1)[0]
    if limit is not None:
        name += f" (first {n:,})"
    rows = []
    for bits in bits_list:
        methods = make_methods(d, bits, metric)
        for m in methods:
            m.build(xb)
            m.search(xq[:50], k)  # warm-up (compiles, faults pages in)
            for i in range(20):
                m.search(xq[i:i + 1], k)
        tq2 = TQ(d, bits, metric, threads=2)
        tq2.index = methods[0].index
        tq2.search(xq[:50], k)
        res = {m.name: {"qps": 0.0, "lat": np.inf, "cpu": np.inf} for m in methods}
        res["tq2"] = {"qps": 0.0}
        for _ in range(repeat):
            for m in methods:
                with Timer() as t:
                    _, I = m.search(xq, k)
                r = res[m.name]
                r["qps"] = max(r["qps"], len(xq) / t.wall)
                r["cpu"] = min(r["cpu"], t.cpu / t.wall)
                r["recall"] = recall(I, gt, k)
                r["bytes"] = m.bytes
            with Timer() as t:
                tq2.search(xq, k)
            res["tq2"]["qps"] = max(res["tq2"]["qps"], len(xq) / t.wall)
            # single queries in runs of LATENCY_RUN, the methods taking turns run by
            # run (the order rotating): a slower spell of the machine hits all alike,
            # and within a run a method's index stays in cache as it would when serving
            times = np.empty((len(methods), n_latency))
            for r, first in enumerate(range(0, n_latency, LATENCY_RUN)):
                for j in range(len(methods)):
                    at = (r + j) % len(methods)
                    for i in range(first, min(first + LATENCY_RUN, n_latency)):
                        q = xq[i % len(xq): i % len(xq) + 1]
                        t0 = time.perf_counter()
                        methods[at].search(q, k)
                        times[at, i] = time.perf_counter() - t0
            for m, row in zip(methods, times, strict=True):
                res[m.name]["lat"] = min(res[m.name]["lat"], float(np.median(row)) * 1e3)
        rows.append((name, n, d, bits, methods, res))
        print_table([rows[-1]], k, header=not rows[:-1])
    return rows


def print_table(rows, k, header=True):
    if header:
        print("| data | bits | method | bytes/vec | QPS | QPS vs tq | nq=1 ms | ms vs tq "
              f"| R@{k} | cpu/wall | tq 2 thr / 1 thr | tq memory / (n x code_size) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, _n, _d, bits, methods, res in rows:
        tq = res["tqsearch"]
        for m in methods:
            r = res[m.name]
            ours = m.name == "tqsearch"
            speedup = f"{res['tq2']['qps'] / tq['qps']:.2f}x" if ours else ""
            memory = f"{m.memory_ratio():.3f}" if ours else ""
            print(f"| {name} | {bits} | {m.name} | {r['bytes']:.1f} | {r['qps']:,.0f} "
                  f"| {r['qps'] / tq['qps']:.2f} | {r['lat']:.3f} | {r['lat'] / tq['lat']:.2f} "
                  f"| {r['recall']:.3f} | {r['cpu']:.2f} | {speedup} | {memory} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help="ann-benchmarks HDF5 files")
    p.add_argument("--bits", default="2,4", help="comma-separated bit widths (default 2,4)")
    p.add_argument("--nq", type=int, default=1000, help="queries per batch (default 1000)")
    p.add_argument("--latency", type=int, default=1000,
                   help="single queries timed for the median latency (default 1000)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept (default 3)")
    p.add_argument("--k", type=int, default=10, help="neighbours a query (default 10)")
    p.add_argument("--limit", type=int, default=None,
                   help="index only the first LIMIT vectors of each file (neighbours "
                        "recomputed); default all")
    args = p.parse_args(argv)
    if args.k < 1:
        p.error("--k must be at least 1")
    if args.limit is not None and args.limit < args.k:
        p.error("--limit must be at least k")
    import faiss

    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    bits = [int(b) for b in args.bits.split(",")]
    first = True
    for path in args.paths:
        rows = run_dataset(path, bits, args.nq, args.latency, args.repeat, args.k, args.limit)
        if first:
            first = False
        del rows


if __name__ == "__main__":
    main()
