"""Core codec and engine figures: distortion, QJL unbiasedness, recall and speed
against FAISS's TurboQuant scalar quantizers, in one process.

    python bench/core_acceptance.py DATA.hdf5 [DATA.hdf5 ...] [--skip-theory]

Prints markdown tables (paste into bench/RESULTS.md). Timings are single-thread
unless stated, methods interleaved, ratios from the same run.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numba
import numpy as np

import tqsearch
from tqsearch.datasets import load_dataset

PAPER_MSE = {1: 0.3634, 2: 0.1175, 3: 0.0345, 4: 0.0095}
PAPER_PROD_VAR = {1: 1.571, 2: 0.571, 3: 0.185, 4: 0.054}


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def theory_tables():
    rng = np.random.default_rng(0)
    d = 256
    x = unit_rows(rng, 2000, d)
    print("\n### Distortion (2,000 random unit vectors, d = 256, estimator='mse')\n")
    print("| bits | paper | hadamard | dense |")
    print("|---|---|---|---|")
    for bits in (1, 2, 3, 4):
        row = []
        for rotation in ("hadamard", "dense"):
            index = tqsearch.TurboQuantIndex(d, bits, estimator="mse", rotation=rotation)
            xr = index.sa_decode(index.sa_encode(x))
            row.append(float(((x - xr) ** 2).sum(1).mean()))
        print(f"| {bits} | {PAPER_MSE[bits]} | {row[0]:.4f} | {row[1]:.4f} |")
    print("\n### QJL inner products (qjl=True; bits = total bits incl. the QJL bit)\n")
    print("| bits | mean error / std. error | d x variance | paper |")
    print("|---|---|---|---|")
    for bits in (2, 3, 4):
        errs = []
        for seed in range(40):
            index = tqsearch.TurboQuantIndex(d, bits, qjl=True, seed=seed)
            xs = unit_rows(rng, 100, d)
            ys = unit_rows(rng, 100, d)
            est = np.einsum("ij,ij->i", index.sa_decode(index.sa_encode(xs)), ys)
            errs.append(est - np.einsum("ij,ij->i", xs, ys))
        e = np.concatenate(errs)
        z = e.mean() / (e.std() / np.sqrt(e.size))
        print(f"| {bits} | {z:+.2f} | {d * e.var():.3f} | {PAPER_PROD_VAR[bits]} |")


def recall_at(ids, gt, k=10):
    return float(np.mean([len(set(ids[i, :k]) & set(gt[i, :k])) / k for i in range(len(gt))]))


def faiss_tq(ds, bits, seed):
    d = ds.train.shape[1]
    metric = faiss.METRIC_L2 if ds.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    xb, xq = ds.train.copy(), ds.test.copy()
    if ds.metric == "cosine":
        faiss.normalize_L2(xb)
        faiss.normalize_L2(xq)
    index = faiss.index_factory(d, f"RR{d},SQtqmse{bits}", metric)
    rr = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
    rr.init(seed)
    t = time.perf_counter()
    index.train(xb[:20000])
    index.add(xb)
    build = time.perf_counter() - t
    index.search(xq[:10], 10)
    t = time.perf_counter()
    _, ids = index.search(xq, 10)
    search = time.perf_counter() - t
    return recall_at(ids, ds.neighbors), build, search, index.sa_code_size()


def ours(ds, bits, seed, estimator, threads=1):
    d = ds.train.shape[1]
    index = tqsearch.TurboQuantIndex(d, bits, metric=ds.metric, estimator=estimator, seed=seed)
    t = time.perf_counter()
    index.add(ds.train)
    build = time.perf_counter() - t
    index.search(ds.test[:10], 10, n_threads=threads)
    t = time.perf_counter()
    _, ids = index.search(ds.test, 10, n_threads=threads)
    search = time.perf_counter() - t
    return recall_at(ids, ds.neighbors), build, search, index.code_size, index


def data_tables(paths):
    faiss.omp_set_num_threads(1)
    numba.set_num_threads(1)
    # compile every kernel before timing anything
    warm = load_dataset(paths[0])
    for est in ("mse", "corrected"):
        for bits in (2, 4):
            idx = tqsearch.TurboQuantIndex(warm.train.shape[1], bits, metric=warm.metric,
                                           estimator=est)
            idx.add(warm.train[:1000])
            idx.search(warm.test[:2], 10)
    print("\n### Recall@10 against FAISS RR{d},SQtqmse{b} (3 rotation seeds each, codes only)\n")
    print("| data | bits | FAISS SQtqmse | tq mse | tq corrected | bytes FAISS / mse / corrected |")
    print("|---|---|---|---|---|---|")
    speed = []
    for path in paths:
        ds = load_dataset(path)
        for bits in (2, 4):
            f, m, c = [], [], []
            for seed in range(3):
                f.append(faiss_tq(ds, bits, seed))
                m.append(ours(ds, bits, seed, "mse"))
                c.append(ours(ds, bits, seed, "corrected"))
            mean = lambda rows, i: float(np.mean([r[i] for r in rows]))  # noqa: E731
            print(f"| {ds.name} | {bits} | {mean(f, 0):.3f} | {mean(m, 0):.3f} | "
                  f"{mean(c, 0):.3f} | {f[0][3]} / {m[0][3]} / {c[0][3]} |")
            if bits == 4:
                speed.append((ds, f, m, c))
    print("\n### Build and batch search at 4 bits, one thread "
          "(min of the 3 runs; ratio = FAISS / tq)\n")
    print("| data | FAISS build s | tq mse build s | ratio | tq corrected build s | ratio | "
          "FAISS search s | tq search s (corrected) | ratio | tq 2 threads / 1 thread |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ds, f, m, c in speed:
        fb, mb, cb = min(r[1] for r in f), min(r[1] for r in m), min(r[1] for r in c)
        fs, cs = min(r[2] for r in f), min(r[2] for r in c)
        index = c[0][4]
        t = time.perf_counter()
        index.search(ds.test, 10, n_threads=2)
        two = time.perf_counter() - t
        t = time.perf_counter()
        index.search(ds.test, 10, n_threads=1)
        one = time.perf_counter() - t
        print(f"| {ds.name} | {fb:.3f} | {mb:.3f} | {fb / mb:.1f}x | {cb:.3f} | {fb / cb:.1f}x | "
              f"{fs:.3f} | {cs:.3f} | {fs / cs:.1f}x | {one / two:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="*")
    parser.add_argument("--skip-theory", action="store_true")
    args = parser.parse_args()
    if not args.skip_theory:
        theory_tables()
    if args.data:
        data_tables(args.data)


if __name__ == "__main__":
    main()
