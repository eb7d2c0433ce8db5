"""How many vectors a sign-first scan of 4-bit codes would read in full (simulation).

    python bench/sign_pass_rates.py DATA.hdf5 [DATA.hdf5 ...] [--random 50000x384]

A two-pass scan could rank every vector by its sign bits alone (a quarter of a
4-bit code) and read in full only those whose estimate comes close enough to
the query's current k-th best exact score. This script measures, in NumPy on
the codes tqsearch builds (default estimator), what such a pass would cost and
lose, without writing the kernels:

* estimate of ``t = <y, c>`` from signs: ``g <y, sign(c)>`` with the per-vector
  ``g = sum c^2 / sum |c|`` (unbiased when ``y`` is independent of ``c``);
* its error's standard deviation ``kappa g ||y||``, with
  ``kappa^2 = 1 - E|c|^2 / E c^2`` over the codebook's cell probabilities;
* the scan: blocks of 32 vectors in storage order, a vector read in full when
  its estimate plus ``z`` deviations reaches the running k-th best exact score.

For each ``z`` it prints the vectors read per query and the true top-k (of the
codes) lost. Read it against the full scan: tqsearch's int8 engine reads every
code once; a sign pass costs about a third of that before any row is read.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from tqsearch.codec import TurboQuantCodec
from tqsearch.datasets import load_dataset
from tqsearch.kernels.scan import GAIN_ONE

BLOCK = 32


def codebook_kappa(codec: TurboQuantCodec) -> float:
    """``sqrt(1 - E|c|^2 / E c^2)`` for a N(0, 1/d) coordinate through the codebook."""
    c = codec.centroids.astype(np.float64)
    edges = np.concatenate([[-np.inf], codec.boundaries.astype(np.float64), [np.inf]])
    cdf = np.array([0.5 * math.erfc(-e * math.sqrt(codec.d / 2.0)) for e in edges])
    p = np.diff(cdf)
    return float(np.sqrt(1.0 - (p @ np.abs(c)) ** 2 / (p @ c ** 2)))


def simulate(train, test, metric, bits, k, zs):
    """Rows read per query and true results lost, per ``z``."""
    codec = TurboQuantCodec.create(train.shape[1], bits, metric, False, "hadamard", "corrected",
                                   0, center=metric == "cosine")
    batch = codec.encode(train)
    c = codec.centroids[codec.indices(batch.codes)].astype(np.float64)
    n = c.shape[0]
    gain = batch.gains.astype(np.float64) / GAIN_ONE
    norm = batch.norms.astype(np.float64) if batch.norms.size else np.ones(n)
    fa = gain * norm * (2.0 if codec.distance_form else 1.0)
    fc = norm ** 2 if codec.distance_form else np.zeros(n)
    g = (c ** 2).sum(1) / np.maximum(np.abs(c).sum(1), 1e-30)
    y = codec.prepare_queries(test)[0].astype(np.float64)
    exact = fa * (y @ c.T) - fc
    signs = y @ np.sign(c).T
    spread = codebook_kappa(codec) * np.linalg.norm(y, axis=1)[:, None]
    out = []
    for z in zs:
        upper = fa * g * (signs + z * spread) - fc
        read = lost = 0
        for q in range(y.shape[0]):
            best = np.full(k, -np.inf)
            for b0 in range(0, n, BLOCK):
                rows = np.nonzero(upper[q, b0:b0 + BLOCK] > best.min())[0] + b0
                read += len(rows)
                for v in rows:
                    if exact[q, v] > best.min():
                        best[np.argmin(best)] = exact[q, v]
            lost += int(np.sum(~np.isin(np.sort(exact[q])[-k:], best)))
        out.append((z, read / y.shape[0], lost))
    return n, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="*")
    parser.add_argument("--random", default=None, help="also Gaussian data, e.g. 50000x384")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--z", default="3.5,4,4.5", help="margins in deviations")
    args = parser.parse_args()
    zs = [float(z) for z in args.z.split(",")]
    sets = []
    for path in args.data:
        ds = load_dataset(path)
        sets.append((ds.name, ds.train, ds.test[:args.queries], ds.metric))
    if args.random:
        n, d = (int(v) for v in args.random.split("x"))
        rng = np.random.default_rng(0)
        sets.append((f"gaussian {n}x{d}", rng.standard_normal((n, d), dtype=np.float32),
                     rng.standard_normal((args.queries, d), dtype=np.float32), "cosine"))
    print("| data | z | rows read / query | share of n | true top-k lost |")
    print("|---|---|---|---|---|")
    for name, train, test, metric in sets:
        n, rows = simulate(train, test, metric, args.bits, args.k, zs)
        for z, read, lost in rows:
            print(f"| {name} | {z:g} | {read:,.0f} | {read / n:.1%} | "
                  f"{lost} of {args.k * test.shape[0]} |", flush=True)


if __name__ == "__main__":
    main()
