"""The ``tqsearch`` command line: build, query and inspect indexes, run benchmarks.

A click group only: it parses arguments, calls the library and prints. Every
problem the library reports (missing or malformed file, dimension mismatch,
bad parameter) becomes one ``Error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from tqsearch._version import __version__

METRICS = ("ip", "cosine", "l2")
OUTPUT_EXTENSIONS = (".npy", ".npz", ".json", ".csv", ".tsv")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    return text or type(e).__name__


def _friendly(fn):
    """Turn the library's ValueError / TypeError / OSError into a one-line click error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, TypeError, OSError, KeyError) as e:
            raise click.ClickException(_one_line(e)) from None
        except MemoryError:
            raise click.ClickException("out of memory") from None

    return wrapper


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out:
        raise click.BadParameter("give at least one value")
    return out


def _thread_list(ctx, param, value):
    out = []
    for v in value.split(","):
        v = v.strip().lower()
        if not v:
            continue
        if v == "all":
            out.append("all")
            continue
        try:
            n = int(v)
        except ValueError:
            raise click.BadParameter(f"expected integers or 'all', got {v!r}") from None
        if n < 1:
            raise click.BadParameter(f"thread counts must be >= 1, got {n}")
        out.append(n)
    if not out:
        raise click.BadParameter("give at least one thread count, e.g. 1,all")
    return out


@click.group(name="tqsearch", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="tqsearch")
def main():
    """Vector search on TurboQuant codes.

    \b
    tqsearch build vectors.hdf5 -o vectors.tqs --bits 4
    tqsearch query vectors.tqs vectors.hdf5 -k 10
    tqsearch info vectors.tqs
    tqsearch bench --quick
    """


# ---------------------------------------------------------------------------
# build


def _default_metric(path: str) -> str:
    """Metric named by an ann-benchmarks file's ``distance`` attribute, else "ip"."""
    from tqsearch import datasets

    if not path.lower().endswith((".hdf5", ".h5")):
        return "ip"
    import h5py

    try:
        with h5py.File(path, "r") as f:
            distance = f.attrs.get("distance")
    except OSError:
        return "ip"  # read_vectors reports the real problem
    if isinstance(distance, bytes):
        distance = distance.decode("utf-8", "replace")
    return datasets.DISTANCE_TO_METRIC.get(str(distance), "ip")


@main.command()
@click.argument("data", metavar="DATA")
@click.option("-o", "--output", "output", required=True, metavar="INDEX",
              help="Index file to write.")
@click.option("--bits", type=click.IntRange(1, 8), default=4, show_default=True,
              help="Bits per coordinate.")
@click.option("--qjl", is_flag=True, help="Spend one bit on the QJL residual (TurboQuant_prod).")
@click.option("--metric", type=click.Choice(METRICS), default=None,
              help="Default: from the HDF5 'distance' attribute, else ip.")
@click.option("--rotation", type=click.Choice(("hadamard", "dense")), default="hadamard",
              show_default=True)
@click.option("--estimator", type=click.Choice(("corrected", "mse", "pca")), default="corrected",
              show_default=True,
              help="mse: the paper's plain estimator (2 bytes less); pca: trained axes and "
                   "nibble codebooks (1-4 bits; best recall at 2-3 bits on most data).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--keep-vectors", is_flag=True,
              help="Also store the float32 vectors, for query --rerank.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Default: all cores.")
@_friendly
def build(data, output, bits, qjl, metric, rotation, estimator, seed, keep_vectors, threads):
    """Code the vectors of DATA into a new index file.

    DATA is an ann-benchmarks HDF5 file (its 'train' array), an .fvecs file
    or a 2-D .npy array.
    """
    import tqsearch
    from tqsearch import datasets

    _check_writable(output)
    x = datasets.read_vectors(data)
    metric = metric or _default_metric(data)
    index = tqsearch.TurboQuantIndex(
        x.shape[1], bits, metric=metric, qjl=qjl, rotation=rotation, seed=seed,
        estimator=estimator, keep_vectors="float32" if keep_vectors else None,
    )
    index.set_threads(threads)
    with click.progressbar(length=len(x), label=f"coding {len(x):,} vectors", file=sys.stderr,
                           show_eta=True, show_pos=True) as bar:
        index.add(x, progress=bar.update)
    tqsearch.write_index(index, output)
    size = os.path.getsize(output)
    click.echo(
        f"{output}: {index.ntotal:,} vectors, d={index.d}, {index.bits} bits, {index.metric}, "
        f"{index.code_size + index.raw_size} bytes/vector, {_human(size)}"
    )


def _check_writable(path: str) -> None:
    """Fail before any work if ``path`` cannot be created."""
    if os.path.isdir(path):
        raise click.ClickException(f"{path}: is a directory; give a file name for the index")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.ClickException(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise click.ClickException(f"{path}: folder {folder} is not writable")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ---------------------------------------------------------------------------
# query


@main.command()
@click.argument("index_path", metavar="INDEX")
@click.argument("queries", metavar="QUERIES")
@click.option("-k", type=click.IntRange(1), default=10, show_default=True,
              help="Neighbours per query.")
@click.option("-o", "--output", default=None, metavar="OUT",
              help="Write results to OUT: .npy (ids), .npz (ids, scores), .json, .csv or .tsv.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--rerank", type=click.FloatRange(1), default=None, metavar="F",
              help="Re-score F*k candidates exactly (index built with --keep-vectors).")
@click.option("--threads", type=click.IntRange(1), default=None, help="Default: all cores.")
@_friendly
def query(index_path, queries, k, output, as_json, rerank, threads):
    """Search INDEX with the vectors of QUERIES.

    QUERIES is an ann-benchmarks HDF5 file (its 'test' array), an .fvecs file
    or a 2-D .npy array. Prints one line per result: query, rank, id, score.
    """
    import tqsearch
    from tqsearch import datasets

    if output is not None:
        if not output.lower().endswith(OUTPUT_EXTENSIONS):
            raise click.BadParameter(
                f"{output!r} has an unknown extension; use one of {', '.join(OUTPUT_EXTENSIONS)}",
                param_hint="'-o' / '--output'",
            )
        _check_writable(output)
    index = tqsearch.read_index(index_path)
    xq = datasets.read_queries(queries)
    if xq.shape[1] != index.d:
        raise click.ClickException(
            f"dimension mismatch: {queries} holds {xq.shape[1]}-d queries but {index_path} "
            f"indexes {index.d}-d vectors"
        )
    if rerank and not index.keep_vectors:
        raise click.ClickException(
            f"--rerank needs the original vectors, which {index_path} does not keep: "
            f"rebuild it with `tqsearch build --keep-vectors`"
        )
    D, I = index.search(xq, k, n_threads=threads, rerank=rerank)
    if output is not None:
        _write_results(output, D, I)
        click.echo(f"{output}: {len(I):,} queries x {k} results", err=True)
        return
    if as_json:
        click.echo(json.dumps({"ids": I.tolist(), "scores": D.tolist()}))
        return
    lines = ["query\trank\tid\tscore"]
    for q in range(len(I)):
        for r in range(I.shape[1]):
            if I[q, r] >= 0:
                lines.append(f"{q}\t{r}\t{I[q, r]}\t{D[q, r]:.6g}")
    click.echo("\n".join(lines))


def _write_results(path, D, I):
    import numpy as np

    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        np.save(path, I)
    elif ext == ".npz":
        np.savez(path, ids=I, scores=D)
    elif ext == ".json":
        with open(path, "w") as f:
            json.dump({"ids": I.tolist(), "scores": D.tolist()}, f)
    else:
        sep = "," if ext == ".csv" else "\t"
        with open(path, "w") as f:
            f.write(sep.join(("query", "rank", "id", "score")) + "\n")
            for q in range(len(I)):
                for r in range(I.shape[1]):
                    if I[q, r] >= 0:
                        f.write(f"{q}{sep}{r}{sep}{I[q, r]}{sep}{D[q, r]:.9g}\n")


# ---------------------------------------------------------------------------
# info


@main.command()
@click.argument("index_path", metavar="INDEX")
@_friendly
def info(index_path):
    """Describe an index file."""
    import tqsearch

    index = tqsearch.read_index(index_path)
    size = os.path.getsize(index_path)
    per_vector = index.code_size + index.raw_size
    fields = [
        ("file", index_path),
        ("file size", f"{_human(size)} ({size:,} bytes)"),
        ("vectors", f"{index.ntotal:,}"),
        ("dimension", index.d),
        ("bits", index.bits),
        ("metric", index.metric),
        ("estimator", index.estimator + (" + qjl" if index.qjl else "")),
        ("qjl", "yes" if index.qjl else "no"),
        ("rotation", "principal axes (trained)" if index.estimator == "pca"
         else f"{index.rotation} (seed {index.seed})"),
        ("bytes per vector", f"{per_vector} (codes {index.code_size}"
                             + (f", kept vectors {index.raw_size})" if index.raw_size else ")")),
        ("kept vectors", index.keep_vectors or "no"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name + ':':<{width + 1}} {value}")


# ---------------------------------------------------------------------------
# bench


@main.command()
@click.argument("data", nargs=-1, metavar="[DATA]...")
@click.option("--bits", default="2,3,4", show_default=True, callback=_int_list,
              help="Comma-separated bit widths.")
@click.option("--threads", default="1,all", show_default=True, callback=_thread_list,
              help="Comma-separated thread counts ('all': every core).")
@click.option("--out", "out_dir", default=os.path.join("bench", "out"), show_default=True,
              help="Results go to OUT/<dataset>/ (JSON, CSV, markdown, PNG).")
@click.option("--quick", is_flag=True, help="Leave out slow methods (PQ x8, SQtq, RaBitQ).")
@click.option("--queries", "n_queries", type=click.IntRange(1), default=1000, show_default=True,
              help="Queries per timed batch.")
@click.option("--methods", default=None, metavar="LIST",
              help="Comma-separated method families (default: all; see tqsearch.bench.FAMILIES).")
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
@_friendly
def bench(data, bits, threads, out_dir, quick, n_queries, methods, no_plot):
    """Compare tqsearch with FAISS and turbovec at equal bytes per vector.

    DATA: ann-benchmarks HDF5 files or registry names; default the sample
    shipped with tqsearch. Progress goes to stderr, the table to stdout.
    """
    from tqsearch import bench as tqbench
    from tqsearch import datasets

    families = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    config = tqbench.BenchConfig(bits=bits, threads=threads, families=families,
                                 n_queries=n_queries, quick=quick)
    config.selected_families()  # validate before loading anything
    for item in data or ("sample",):
        ds = datasets.load_dataset(item)
        result = tqbench.run_dataset(ds, config)
        paths = tqbench.write_results(result, os.path.join(out_dir, ds.name), plot=not no_plot)
        click.echo(tqbench.format_table(result))
        click.echo(f"wall time {result['meta']['wall_s']:.1f} s; wrote "
                   f"{', '.join(paths[k] for k in sorted(paths))}", err=True)


# ---------------------------------------------------------------------------
# datasets


@main.group("datasets")
def datasets_group():
    """List and download ann-benchmarks datasets."""


@datasets_group.command("list")
@click.option("--data-dir", default=None, help="Cache folder (default $TQSEARCH_DATA or "
                                               "~/.cache/tqsearch).")
@_friendly
def datasets_list(data_dir):
    """Known public datasets, and whether each is downloaded."""
    from tqsearch import datasets

    folder = datasets.cache_dir(data_dir)
    rows = [("name", "dim", "metric", "train", "test", "MB", "cached")]
    for info in datasets.list_datasets():
        cached = (folder / f"{info.name}.hdf5").exists()
        rows.append((info.name, str(info.dimension), info.metric, f"{info.n_train:,}",
                     f"{info.n_test:,}", f"{info.size_mb:,}", "yes" if cached else ""))
    try:
        sample = datasets.sample_path()
        meta = datasets.validate_dataset(sample)
    except ValueError:
        pass  # not shipped with this installation
    else:
        rows.append(("sample", str(meta["d"]), datasets.DISTANCE_TO_METRIC[meta["distance"]],
                     f"{meta['n']:,}", f"{meta['nq']:,}", f"{sample.stat().st_size / 1e6:.0f}",
                     "shipped"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) if i in (0, 2, 6) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())


@datasets_group.command("fetch")
@click.argument("name")
@click.option("--data-dir", default=None, help="Cache folder (default $TQSEARCH_DATA or "
                                               "~/.cache/tqsearch).")
@click.option("--force", is_flag=True, help="Download again even if cached.")
@_friendly
def datasets_fetch(name, data_dir, force):
    """Download dataset NAME (resumable) and print its path."""
    from tqsearch import datasets

    path = datasets.fetch_dataset(name, data_dir=data_dir, progress=True, force=force)
    click.echo(str(path))


if __name__ == "__main__":
    main()
