"""Write a wider copy of an ann-benchmarks file: the same neighbours in more dimensions.

    python bench/widen_dataset.py DATA.hdf5 OUT.hdf5 --copies 2

Each vector ``x`` becomes ``[x, R_1 x, ..., R_{c-1} x] / sqrt(c)`` with seeded
random orthogonal ``R_i``: inner products, norms and distances are those of the
source, so its neighbours hold (the ground truth is recomputed all the same),
while ``d`` grows ``c`` times. It shows how a method's speed scales with the
dimension on real structure (a 768-d set from a 384-d one) where no such data
ships; it adds no information, so recall at the same bits per coordinate is
not comparable with a genuinely wider embedding.
"""

from __future__ import annotations

import argparse

import numpy as np

from tqsearch.datasets import ground_truth, load_dataset, write_dataset


def widen(x: np.ndarray, rotations: list[np.ndarray]) -> np.ndarray:
    """``[x, x R_1, ...] / sqrt(c)``, float32 (n, c * d), for rows ``x`` (n, d)."""
    parts = [x] + [x @ r for r in rotations]
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--copies", type=int, default=2, help="width multiple (default 2)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.copies < 1:
        parser.error("--copies must be at least 1")
    ds = load_dataset(args.source)
    d = ds.train.shape[1]
    rng = np.random.default_rng(args.seed)
    rotations = [np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
                 for _ in range(args.copies - 1)]
    train, test = widen(ds.train, rotations), widen(ds.test, rotations)
    distances, neighbors = ground_truth(train, test, ds.neighbors.shape[1], ds.distance)
    write_dataset(args.out, train, test, neighbors, distances, ds.distance,
                  attrs={"source": f"{ds.name} widened x{args.copies} (seed {args.seed})"})
    print(f"{args.out}: {train.shape[0]} x {train.shape[1]}, {test.shape[0]} queries")


if __name__ == "__main__":
    main()
