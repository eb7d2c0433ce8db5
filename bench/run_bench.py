"""Full comparison of tqsearch with FAISS and turbovec on ann-benchmarks files.

Usage::

    python bench/run_bench.py DATA.hdf5 [DATA.hdf5 ...] [--bits 2,3,4] [--threads 1,all]
                              [--out bench/out] [--quick] [--queries 1000]
                              [--methods tqsearch,eden,...] [--build-threads 1]

Each DATA is an ann-benchmarks HDF5 file (or a registry name, or "sample").
Per dataset, ``OUT/<dataset>/`` receives results.json, results.csv, results.md
and recall_qps.png; ``OUT/RESULTS-table.md`` collects the markdown tables of
the whole run, ready to paste into bench/RESULTS.md. Progress goes to stderr.

Protocol: see ``tqsearch.bench`` (one process, methods interleaved, equal
bytes per vector, 1-thread and all-thread QPS, nq=1 latency, recall@10 and
recall@1@10 against the file's exact neighbours).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

try:
    from tqsearch import bench, datasets
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tqsearch import bench, datasets


def _bits(text):
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("give at least one bit width")
    return out


def _threads(text):
    out = []
    for v in text.split(","):
        v = v.strip().lower()
        if v:
            out.append("all" if v == "all" else int(v))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="ann-benchmarks HDF5 files or dataset names")
    p.add_argument("--bits", type=_bits, default=[2, 3, 4])
    p.add_argument("--threads", type=_threads, default=[1, "all"])
    p.add_argument("--out", default=os.path.join("bench", "out"))
    p.add_argument("--quick", action="store_true", help="leave out PQ x8, SQtq and RaBitQ")
    p.add_argument("--queries", type=int, default=1000, help="queries per timed batch")
    p.add_argument("--latency-queries", type=int, default=200,
                   help="single-query searches timed for the nq=1 latency")
    p.add_argument("--methods", default=None, help="comma-separated method families")
    p.add_argument("--build-threads", type=int, default=1)
    p.add_argument("--pq8-max-train", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=1, help="timed batches; the fastest counts")
    args = p.parse_args(argv)

    families = [m.strip() for m in args.methods.split(",")] if args.methods else None
    config = bench.BenchConfig(
        bits=args.bits, threads=args.threads, families=families, n_queries=args.queries,
        n_latency=args.latency_queries, repeat=args.repeat, build_threads=args.build_threads,
        pq8_max_train=args.pq8_max_train, quick=args.quick,
    )
    config.selected_families()
    t0 = time.perf_counter()
    sections = []
    for item in args.data:
        ds = datasets.load_dataset(item, download=False)
        result = bench.run_dataset(ds, config)
        bench.write_results(result, os.path.join(args.out, ds.name))
        print(bench.format_table(result), flush=True)
        print(flush=True)
        sections.append(bench.to_markdown(result))
    os.makedirs(args.out, exist_ok=True)
    table = os.path.join(args.out, "RESULTS-table.md")
    header = (
        "Brute-force search, k = 10, one process, methods interleaved; bytes per vector "
        "count everything stored per vector. Builds use "
        f"{config.build_threads} thread(s); tqsearch kernels are compiled before the timed "
        "builds. Ratios within one table are meaningful; absolute QPS are not comparable "
        "across runs. turbovec runs its searches in a child process with "
        "RAYON_NUM_THREADS set. "
        + ("Quick run: PQ x8, SQtq and RaBitQ (non fast-scan) left out."
           if config.quick else
           f"PQ x8 trains on at most {config.pq8_max_train:,} rows.")
    )
    with open(table, "w") as f:
        f.write(header + "\n\n" + "\n\n".join(sections) + "\n")
    print(f"wrote {table} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
