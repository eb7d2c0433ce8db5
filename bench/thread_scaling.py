"""Batch search speed of tqsearch with one and two threads.

    python bench/thread_scaling.py DATA.hdf5 [DATA.hdf5 ...]

For each ann-benchmarks file and 2 and 4 bits: 1,000 queries, k = 10, the
minimum of 3 timed runs per thread count, alternating. Prints a markdown table.
Run it on an otherwise idle machine: a busy core says nothing about scaling.
"""

from __future__ import annotations

import argparse
import time

import tqsearch
from tqsearch.datasets import load_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="+")
    args = parser.parse_args()
    print("| data | bits | QPS 1 thread | QPS 2 threads | speed-up |")
    print("|---|---|---|---|---|")
    for path in args.data:
        ds = load_dataset(path)
        xq = ds.test[:1000]
        for bits in (2, 4):
            index = tqsearch.TurboQuantIndex(ds.train.shape[1], bits, metric=ds.metric)
            index.add(ds.train)
            for threads in (1, 2):  # compile and warm both paths
                index.search(xq[:50], 10, n_threads=threads)
            times = {1: [], 2: []}
            for _ in range(3):
                for threads in (1, 2):
                    t = time.perf_counter()
                    index.search(xq, 10, n_threads=threads)
                    times[threads].append(time.perf_counter() - t)
            one, two = min(times[1]), min(times[2])
            print(f"| {ds.name} | {bits} | {len(xq) / one:,.0f} | {len(xq) / two:,.0f} | "
                  f"{one / two:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
