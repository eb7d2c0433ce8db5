"""Write an ann-benchmarks file of Gaussian vectors: data whose neighbours do not stand out.

    python bench/random_dataset.py OUT.hdf5 --n 100000 --d 128 [--queries 1000] [--seed 1]

Train and test vectors are independent standard normal draws, with the exact
angular ground truth (100 neighbours). On such data every query's nearest
neighbours score barely above the rest (at d = 128 the best of 100,000
cosines is about 0.4, the bulk within +-0.09), the opposite of sentence
embeddings: filters that bound or shortlist rows by a cheap first estimate
let many rows through, and a shortlist of fixed size loses neighbours.
"""

from __future__ import annotations

import argparse

import numpy as np

from tqsearch.datasets import ground_truth, write_dataset


def gaussian_dataset(n: int, d: int, queries: int, seed: int):
    """``(train, test)``, float32 (n, d) and (queries, d), independent N(0, 1) entries."""
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((n, d), dtype=np.float32)
    test = rng.standard_normal((queries, d), dtype=np.float32)
    return train, test


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=100_000, help="vectors (default 100,000)")
    parser.add_argument("--d", type=int, default=128, help="dimension (default 128)")
    parser.add_argument("--queries", type=int, default=1000, help="queries (default 1,000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if min(args.n, args.d, args.queries) < 1:
        parser.error("--n, --d and --queries must be at least 1")
    train, test = gaussian_dataset(args.n, args.d, args.queries, args.seed)
    distances, neighbors = ground_truth(train, test, min(100, args.n), "angular")
    write_dataset(args.out, train, test, neighbors, distances, "angular",
                  attrs={"source": f"gaussian {args.n} x {args.d} (seed {args.seed})"})
    print(f"{args.out}: {args.n} x {args.d}, {args.queries} queries")


if __name__ == "__main__":
    main()
