"""Cut the shipped sample out of a full ann-benchmarks file.

Usage (from the repository root)::

    python datasets/make_sample.py SOURCE.hdf5 [--train 4000] [--test 1000]
        [--seed 20251128] [--k 100] [--out datasets/NAME.hdf5]

Train rows are drawn without replacement from the source's ``train``, query
rows from its ``test`` (which is disjoint from ``train``), both with
``numpy.random.default_rng(seed).choice`` and kept in their original order.
The exact top-k ground truth is recomputed on the subset with
``tqsearch.datasets.ground_truth`` and the arrays are stored gzip-compressed
(level 9, byte shuffle), with the provenance in the file's attributes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

import h5py
import numpy as np

try:
    from tqsearch.datasets import ground_truth, validate_dataset, write_dataset
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tqsearch.datasets import ground_truth, validate_dataset, write_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="full ann-benchmarks HDF5 file to sample from")
    ap.add_argument("--train", type=int, default=4000, help="train rows to keep")
    ap.add_argument("--test", type=int, default=1000, help="query rows to keep")
    ap.add_argument("--seed", type=int, default=20251128)
    ap.add_argument("--k", type=int, default=100, help="ground-truth neighbours per query")
    ap.add_argument("--out", default=None, help="output file (default datasets/<name>.hdf5)")
    args = ap.parse_args(argv)

    with h5py.File(args.source, "r") as f:
        distance = f.attrs["distance"]
        distance = distance.decode() if isinstance(distance, bytes) else str(distance)
        n, nq = f["train"].shape[0], f["test"].shape[0]
        if not (0 < args.train <= n and 0 < args.test <= nq):
            ap.error(f"--train must be in 1..{n} and --test in 1..{nq}")
        rng = np.random.default_rng(args.seed)
        train_ids = np.sort(rng.choice(n, size=args.train, replace=False))
        test_ids = np.sort(rng.choice(nq, size=args.test, replace=False))
        train = f["train"][train_ids]
        test = f["test"][test_ids]
        source_attr = f.attrs.get("source", "")
        source_attr = source_attr.decode() if isinstance(source_attr, bytes) else str(source_attr)

    src_name = os.path.basename(args.source)
    stem = src_name.rsplit(".", 1)[0]
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), f"{stem}-{args.train // 1000}k.hdf5"
    )

    t0 = time.perf_counter()
    distances, neighbors = ground_truth(train, test, args.k, distance)
    t_gt = time.perf_counter() - t0

    attrs = {
        "source": source_attr,
        "subset": (
            f"{args.train} of the {n} train rows and {args.test} of the {nq} test rows of "
            f"{src_name}, numpy default_rng({args.seed}).choice without replacement, sorted"
        ),
        "seed": args.seed,
        "builder": "datasets/make_sample.py",
        "ground_truth": f"exact top-{args.k} recomputed on the subset (faiss flat + float64)",
    }
    write_dataset(out, train, test, neighbors, distances, distance, attrs=attrs, compression="gzip")
    info = validate_dataset(out)
    with open(out, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    print(
        f"wrote {out}: n={info['n']} nq={info['nq']} d={info['d']} k={info['k']} "
        f"distance={info['distance']} size={os.path.getsize(out) / 1e6:.2f} MB "
        f"ground truth {t_gt:.1f} s sha256={digest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
