"""Run tqsearch next to FAISS under ann-benchmarks' own runner, in local mode.

Given an ann-benchmarks checkout and an HDF5 dataset in its layout, this

1. copies ``bench/ann_benchmarks/tqsearch/`` to ``ann_benchmarks/algorithms/tqsearch/``;
2. links the dataset into the checkout's ``data/`` folder as ``data/<name>.hdf5``
   (``<name>`` = the file name without ``.hdf5``) and registers ``<name>`` in the
   runner's dataset list for this process only (``run.py --dataset`` only accepts
   registered names; a file already in ``data/`` is never downloaded);
3. writes a definitions folder holding our config.yml and, unless ``--faiss none``,
   the checkout's FAISS configs with their run groups cut down so that the whole
   run takes minutes (``--faiss full`` keeps them as they are);
4. runs ``run.py --local`` on that folder, then computes recall and QPS of every
   result with the runner's own metric code (what ``data_export.py`` does) and
   prints them as a table; ``--csv`` also writes them to a file.

Example::

    python -m venv /tmp/annb-venv
    /tmp/annb-venv/bin/pip install -r <checkout>/requirements.txt faiss-cpu scikit-learn -e .
    /tmp/annb-venv/bin/python bench/ann_benchmarks/run_local.py \\
        --annb <checkout> --dataset glove6b-50-angular.hdf5 --runs 2

Single-query mode (the default, as on ann-benchmarks.com) pins numba, OpenMP and
BLAS to one thread, the runner's one-CPU rule; ``--batch`` lets every algorithm
use all cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALGO = "tqsearch"

# Run groups for the checkout's FAISS algorithms, small enough for a few minutes on
# 100k-1M vectors. Keyed by algorithm folder, then by definition name.
FAISS_SMALL = {
    "faiss": {
        "faiss-ivf": {
            "base": {"args": [[256, 1024]], "query_args": [[1, 5, 10, 20, 50, 100]]},
        },
        "faiss-ivfpqfs": {
            "base": {"args": [[1024]], "query_args": [[5, 10, 20, 50], [0, 10]]},
        },
    },
    "faiss_hnsw": {
        "hnsw(faiss)": {
            "M-16": {"arg_groups": [{"M": 16, "efConstruction": 100}], "args": {},
                     "query_args": [[10, 20, 40, 80, 160]]},
        },
    },
}

# Runs inside the checkout: registers dataset names, then hands over to its code.
_LAUNCHER = r"""
import sys
from ann_benchmarks.datasets import DATASETS

def _local_only(out_fn):
    raise RuntimeError(out_fn + " is missing: it is a local dataset, put the file there")

for _name in sys.argv[1].split(","):
    DATASETS.setdefault(_name, _local_only)
_what, sys.argv = sys.argv[2], [sys.argv[2]] + sys.argv[3:]
if _what == "run.py":
    from multiprocessing import freeze_support
    from ann_benchmarks.main import main
    freeze_support()
    main()
else:
    import runpy
    runpy.run_path(_what, run_name="__main__")
"""

# data_export.py's metric code, for one dataset and either query mode, plus the
# extra attributes an algorithm reports through get_additional().
_EXPORT = r"""
import argparse, csv
from ann_benchmarks.datasets import get_dataset
from ann_benchmarks.plotting.utils import compute_metrics_all_runs
from ann_benchmarks.results import load_all_results

p = argparse.ArgumentParser()
p.add_argument("--dataset", required=True)
p.add_argument("--count", type=int, default=10)
p.add_argument("--batch", action="store_true")
p.add_argument("--output", required=True)
a = p.parse_args()
dataset, _ = get_dataset(a.dataset)
rows = []
for props, run in load_all_results(a.dataset, a.count, a.batch):
    (row,) = compute_metrics_all_runs(dataset, [(props, run)])
    row["dataset"] = a.dataset
    row["bytes_per_vector"] = props.get("bytes_per_vector", "")
    rows.append(row)
with open(a.output, "w", newline="") as f:
    if rows:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
"""


def install(annb: Path) -> Path:
    """Copy the algorithm folder into the checkout; returns its new path."""
    dest = annb / "ann_benchmarks" / "algorithms" / ALGO
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(HERE / ALGO, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def link_dataset(annb: Path, dataset: Path, copy: bool) -> str:
    """Put ``dataset`` at ``data/<name>.hdf5`` in the checkout; returns ``<name>``."""
    if dataset.suffix != ".hdf5":
        raise SystemExit(f"--dataset must be an ann-benchmarks .hdf5 file, got {dataset}")
    if not dataset.is_file():
        raise SystemExit(f"--dataset {dataset} does not exist")
    name = dataset.stem
    data = annb / "data"
    data.mkdir(exist_ok=True)
    target = data / f"{name}.hdf5"
    if target.is_symlink() or target.exists():
        if target.resolve() == dataset.resolve():
            return name
        target.unlink()
    if copy:
        shutil.copyfile(dataset, target)
    else:
        target.symlink_to(dataset.resolve())
    return name


def write_definitions(annb: Path, out: Path, faiss: str) -> list[str]:
    """Definitions folder for ``run.py --definitions``; returns the algorithm names in it."""
    if out.exists():
        shutil.rmtree(out)
    (out / ALGO).mkdir(parents=True)
    shutil.copyfile(HERE / ALGO / "config.yml", out / ALGO / "config.yml")
    names = [ALGO]
    if faiss == "none":
        return names
    for folder, small in FAISS_SMALL.items():
        src = annb / "ann_benchmarks" / "algorithms" / folder / "config.yml"
        if not src.is_file():
            print(f"note: {src} not found, skipping {folder}", file=sys.stderr)
            continue
        config = yaml.safe_load(src.read_text())
        float_section = config.get("float", {})
        for entries in float_section.values():
            for entry in entries:
                if faiss == "small":
                    if entry["name"] not in small:
                        entry["disabled"] = True
                        continue
                    entry["run_groups"] = small[entry["name"]]
                if not entry.get("disabled", False):
                    names.append(entry["name"])
        (out / folder).mkdir()
        (out / folder / "config.yml").write_text(yaml.safe_dump({"float": float_section}))
    return sorted(set(names))


def _python_in(annb: Path, python: str, args: list[str], env: dict) -> None:
    shown = ["-c", "<register the dataset name>"] + args[2:] if args[0] == "-c" else args
    print(f"+ (cd {annb} && {python} {' '.join(shown)})", flush=True)
    subprocess.run([python, *args], cwd=annb, env=env, check=True)


def run(args: argparse.Namespace) -> Path:
    annb = args.annb.resolve()
    if not (annb / "run.py").is_file() or not (annb / "ann_benchmarks").is_dir():
        raise SystemExit(f"{annb} is not an ann-benchmarks checkout (no run.py)")
    install(annb)
    name = link_dataset(annb, args.dataset, args.copy)
    defs = annb / "tqsearch-definitions"
    algorithms = write_definitions(annb, defs, args.faiss)
    print("dataset", name, "| algorithms:", ", ".join(algorithms), flush=True)

    env = dict(os.environ)
    if not args.batch:
        for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            env[var] = "1"
    run_args = ["--local", "--dataset", name, "--definitions", str(defs), "--runs",
                str(args.runs), "--count", str(args.count), "--timeout", str(args.timeout)]
    if args.batch:
        run_args.append("--batch")
    if args.force:
        run_args.append("--force")
    if args.skip_run:
        print("--skip-run: exporting existing results only")
    elif args.algorithm:
        for algo in args.algorithm:
            _python_in(annb, args.python, ["-c", _LAUNCHER, name, "run.py", *run_args,
                                           "--algorithm", algo], env)
    else:
        _python_in(annb, args.python, ["-c", _LAUNCHER, name, "run.py", *run_args], env)

    out_csv = (args.csv or annb / f"results-{name}{'-batch' if args.batch else ''}.csv").resolve()
    export_script = annb / "tqsearch-export.py"
    export_script.write_text(_EXPORT)
    export = ["-c", _LAUNCHER, name, str(export_script), "--dataset", name,
              "--count", str(args.count), "--output", str(out_csv)]
    if args.batch:
        export.append("--batch")
    _python_in(annb, args.python, export, env)
    print_table(out_csv)
    return out_csv


def print_table(path: Path) -> None:
    """Markdown table of the runner's metrics, one row per run, best recall first."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print("no results")
        return
    rows.sort(key=lambda r: (r["algorithm"], -float(r["k-nn"]), -float(r["qps"])))
    print(f"\n{path}\n")
    print("| algorithm | parameters | recall@10 | QPS | build s | bytes/vector | index kB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['algorithm']} | {r['parameters']} | {float(r['k-nn']):.3f} | "
              f"{float(r['qps']):,.0f} | {float(r['build']):.1f} | "
              f"{r.get('bytes_per_vector') or '-'} | {float(r['indexsize']):,.0f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--annb", type=Path, required=True, help="ann-benchmarks checkout")
    p.add_argument("--dataset", type=Path, required=True,
                   help="HDF5 file in ann-benchmarks' layout; its name becomes the dataset name")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter with the runner's requirements, faiss and tqsearch")
    p.add_argument("--faiss", choices=("small", "full", "none"), default="small",
                   help="FAISS run groups: cut down (default), the checkout's own, or none")
    p.add_argument("--algorithm", action="append",
                   help="run only this algorithm name (repeatable); default: all")
    p.add_argument("--runs", type=int, default=2, help="runs per query setting (best kept)")
    p.add_argument("--count", type=int, default=10, help="k")
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--batch", action="store_true", help="batch mode (all cores)")
    p.add_argument("--force", action="store_true", help="re-run settings that have results")
    p.add_argument("--copy", action="store_true", help="copy the dataset instead of linking it")
    p.add_argument("--skip-run", action="store_true", help="only export and print results")
    p.add_argument("--csv", type=Path, help="where to write the exported metrics")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
