"""Comparison runner: tqsearch against FAISS and turbovec at equal bytes.

Protocol (one process, one machine, the same data for every method):

* methods are interleaved: at each bit width every method is built, then every
  method is timed with one thread, then every method with all threads, so a
  change in machine load hits all of them alike;
* build = train + add, timed, with one thread for every method (configurable);
  tqsearch's kernels are compiled (or loaded from
  numba's cache) on a small warm-up index *before* the timed builds, so
  compilation is never counted;
* search = the first ``n_queries`` test queries in one batch, after a warm-up
  batch of 16, ``k`` = 10; one thread is ``faiss.omp_set_num_threads(1)``,
  numba's thread count for tqsearch, and ``RAYON_NUM_THREADS=1`` in a child
  process for turbovec (rayon reads it once per process);
* latency = median over ``n_latency`` (>= 200) single-query searches, one thread;
* recall@k = mean |returned top-k ∩ true top-k| / k; recall@1@k = fraction of
  queries whose true nearest neighbour is among the k returned;
* bytes per vector = everything the method stores per vector (codes, norms,
  correction factors; the raw float32 vector too for the rerank variant).

Ratios between methods of one run are meaningful; absolute speeds are not
comparable across runs on shared machines.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from . import competitors
from .competitors import FaissMethod, Method, TurbovecMethod, Unavailable, all_threads
from .rotation import SERIAL_MAX_ROWS

__all__ = [
    "FAMILIES",
    "BenchConfig",
    "TqsearchMethod",
    "make_method",
    "recall_at_k",
    "recall_1_at_k",
    "ground_truth",
    "run_dataset",
    "format_table",
    "to_markdown",
    "write_results",
]

# Interleaving order within a bit width.
FAMILIES = (
    "tqsearch",
    "tqsearch-pca",
    "tqsearch-mse",
    "tqsearch-qjl",
    "tqsearch-rerank",
    "sqtqmse",
    "sqtq",
    "eden",
    "rabitq",
    "rabitqfs",
    "pq4fs",
    "pq8",
    "turbovec",
)
# Families left out by ``quick``: slow k-means training, and the non-fast-scan
# twins of configurations that are measured anyway.
SLOW_FAMILIES = ("pq8", "sqtq", "rabitq")

RERANK_FACTOR = 10
RERANK_BITS = 4


@dataclass
class BenchConfig:
    """Knobs of one benchmark run.

    Attributes
    ----------
    bits : sequence of int
        Bit widths per coordinate.
    threads : sequence of int or "all"
        Thread counts to time the batch search with.
    families : sequence of str, optional
        Method families to run (see ``FAMILIES``); all when None.
    n_queries : int
        Queries per timed batch (the first ones of the test set).
    k : int
    n_latency : int
        Single-query searches for the latency (cycling over the queries).
    repeat : int
        Timed batches per method and thread count; the fastest counts.
    pq8_max_train : int
        Rows PQ x8 k-means trains on.
    build_threads : int
        Threads every method builds with (1 by default: build cost is then
        the work done, not the machine's contention; FAISS's OpenMP k-means
        slows down tenfold when its threads compete with other processes).
    quick : bool
        Leave out ``SLOW_FAMILIES``.
    """

    bits: Sequence[int] = (2, 3, 4)
    threads: Sequence[int | str] = (1, "all")
    families: Sequence[str] | None = None
    n_queries: int = 1000
    k: int = 10
    n_latency: int = 200
    repeat: int = 1
    pq8_max_train: int = 10_000
    build_threads: int = 1
    quick: bool = False

    def selected_families(self) -> list[str]:
        fams = list(FAMILIES if self.families is None else self.families)
        bad = [f for f in fams if f not in FAMILIES]
        if bad:
            raise ValueError(
                f"unknown method families {bad}; choose among {', '.join(FAMILIES)}"
            )
        if self.quick:
            fams = [f for f in fams if f not in SLOW_FAMILIES]
        return [f for f in FAMILIES if f in fams]

    def thread_counts(self) -> list[tuple[str, int]]:
        """``(label, count)`` pairs, e.g. ``[("1", 1), ("all", 2)]``."""
        out = []
        for t in self.threads:
            if isinstance(t, str) and t.strip().lower() == "all":
                out.append(("all", all_threads()))
            else:
                n = int(t)
                if n < 1:
                    raise ValueError(f"thread counts must be >= 1 or 'all', got {t!r}")
                out.append((str(n), n))
        if not out:
            raise ValueError("give at least one thread count, e.g. threads=(1, 'all')")
        return out


# ---------------------------------------------------------------------------
# tqsearch as a benchmarked method


class TqsearchMethod(Method):
    """``tqsearch.TurboQuantIndex`` in one of its variants.

    Parameters
    ----------
    d, bits : int
    metric : {"ip", "cosine", "l2"}
        Passed to the index, which normalises by itself for cosine.
    variant : {"default", "pca", "mse", "qjl", "rerank"}
        ``"pca"``: the trained codec (principal axes, nibble codebooks);
        ``"mse"``: the paper's plain estimator; ``"qjl"``: with the 1-bit
        QJL residual; ``"rerank"``: ``keep_vectors=True`` and an exact
        re-score of ``10 * k`` candidates.
    """

    library = "tqsearch"

    def __init__(self, d, bits, metric, variant="default"):
        super().__init__(d, bits, metric)
        try:
            import tqsearch
            cls = tqsearch.TurboQuantIndex
        except (ImportError, AttributeError) as e:
            raise Unavailable(f"tqsearch index not importable: {e}") from None
        kwargs = {"metric": metric}
        self.rerank = None
        if variant in ("mse", "pca"):
            kwargs["estimator"] = variant
        elif variant == "qjl":
            kwargs["qjl"] = True
        elif variant == "rerank":
            kwargs["keep_vectors"] = "float32"
            self.rerank = RERANK_FACTOR
        elif variant != "default":
            raise ValueError(f"unknown tqsearch variant {variant!r}")
        params = inspect.signature(cls).parameters
        missing = [key for key in kwargs if key not in params]
        if missing:
            raise Unavailable(f"this tqsearch has no {', '.join(missing)} option")
        self.variant = variant
        self.family = "tqsearch" if variant == "default" else f"tqsearch-{variant}"
        self.name = _label(self.family, d, bits)
        try:
            self.index = cls(self.d, self.bits, **kwargs)
        except (ValueError, TypeError) as e:
            raise Unavailable(str(e)) from None
        self._threads = None

    def build(self, train):
        if hasattr(self.index, "is_trained") and not self.index.is_trained:
            self.index.train(train)
        self.index.add(train)

    def set_threads(self, n):
        self._threads = int(n)
        self.index.set_threads(self._threads)  # used by add

    def search(self, xq, k):
        return self.index.search(xq, k, n_threads=self._threads, rerank=self.rerank)

    @property
    def bytes_per_vector(self):
        # Codes, norm and gain; plus the kept float32 vector for the rerank variant.
        return float(self.index.code_size + self.index.raw_size)

    def close(self):
        self.index = None


def make_method(family: str, d: int, bits: int, metric: str, *, pq8_max_train=10_000) -> Method:
    """Instantiate the method of ``family`` at ``bits`` bits (raises :class:`Unavailable`)."""
    if family.startswith("tqsearch"):
        variant = "default" if family == "tqsearch" else family.split("-", 1)[1]
        if variant == "rerank" and bits != RERANK_BITS:
            raise Unavailable(f"rerank variant is measured at {RERANK_BITS} bits only")
        return TqsearchMethod(d, bits, metric, variant)
    if family == "turbovec":
        return TurbovecMethod(d, bits, metric)
    factory = competitors.faiss_factories(d, bits)[family]
    max_train = pq8_max_train if family == "pq8" else None
    return FaissMethod(d, bits, metric, factory, family, max_train=max_train)


# ---------------------------------------------------------------------------
# recall and ground truth


def recall_at_k(ids: np.ndarray, gt: np.ndarray, k: int) -> float:
    """Mean ``|ids[i, :k] ∩ gt[i, :k]| / k``.

    ``ids``: int (nq, >= k) returned ids (-1 padding never matches);
    ``gt``: int (nq, >= k) true neighbours, nearest first.
    """
    a = np.asarray(ids)[:, :k]
    b = np.asarray(gt)[:, :k]
    hits = (a[:, :, None] == b[:, None, :]).any(axis=2) & (a >= 0)
    return float(hits.sum() / (len(b) * k))


def recall_1_at_k(ids: np.ndarray, gt: np.ndarray, k: int) -> float:
    """Fraction of queries whose true nearest neighbour ``gt[i, 0]`` is in ``ids[i, :k]``."""
    a = np.asarray(ids)[:, :k]
    return float((a == np.asarray(gt)[:, :1]).any(axis=1).mean())


def _normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, np.finfo(np.float32).tiny), dtype=np.float32)


def ground_truth(train: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact top-``k`` ids, int64 (nq, k), by brute force (see ``datasets.ground_truth``)."""
    from .datasets import ground_truth as exact

    return exact(train, queries, k, metric)[1].astype(np.int64)


# ---------------------------------------------------------------------------
# the run


@dataclass
class _Row:
    dataset: str
    method: str
    library: str
    family: str
    bits: int
    status: str = "ok"
    reason: str = ""
    bytes_per_vector: float | None = None
    build_s: float | None = None
    recall: float | None = None
    recall_1: float | None = None
    latency_ms: float | None = None
    qps: dict = field(default_factory=dict)
    ratio: dict = field(default_factory=dict)
    notes: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        for label, v in self.qps.items():
            d[f"qps_{label}"] = v
        for label, v in self.ratio.items():
            d[f"ratio_{label}"] = v
        del d["qps"], d["ratio"]
        return d


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}".strip()


def _warm_up_tqsearch(train, d, bits_list, metric, families, k, counts):
    """Compile (or load from cache) tqsearch kernels outside the timed region."""
    rows = train[: min(len(train), 512)]
    for bits in bits_list:
        for fam in families:
            if not fam.startswith("tqsearch"):
                continue
            try:
                m = make_method(fam, d, bits, metric)
            except Unavailable:
                continue
            try:
                m.build(rows)
                for _, n in counts:
                    m.set_threads(n)
                    # a batch past the single-call path (SERIAL_MAX_ROWS), a few, one:
                    # each takes kernels of its own
                    m.search(rows[: 2 * SERIAL_MAX_ROWS + 1], k)
                    m.search(rows[:4], k)
                    m.search(rows[:1], k)
            except Exception:  # the timed run will report it
                pass
            finally:
                m.close()


def run_dataset(
    dataset,
    config: BenchConfig | None = None,
    *,
    log: Callable[[str], None] | None = _stderr,
) -> dict:
    """Benchmark every selected method at every bit width on one dataset.

    Parameters
    ----------
    dataset : object
        With ``name`` (str), ``train`` float32 (n, d), ``test`` float32
        (nq, d), ``metric`` ("ip", "cosine" or "l2") and ``neighbors``
        (int (nq, >= k) true ids, or None to compute them exactly).
    config : BenchConfig, optional
    log : callable, optional
        Receives one progress line at a time (stderr by default); None: silent.

    Returns
    -------
    dict
        ``meta`` (dataset, sizes, machine, protocol) and ``rows`` (one dict
        per method and bit width; failed methods have ``status="n/a"`` and a
        ``reason``).
    """
    config = config or BenchConfig()
    log = log or (lambda msg: None)
    families = config.selected_families()
    counts = config.thread_counts()
    k = int(config.k)
    if config.n_latency < 0 or config.n_queries < 1 or k < 1:
        raise ValueError("n_queries and k must be >= 1 and n_latency >= 0")
    metric = dataset.metric
    if metric not in ("ip", "cosine", "l2"):
        raise ValueError(f"metric must be 'ip', 'cosine' or 'l2', got {metric!r}")

    train = np.ascontiguousarray(dataset.train, dtype=np.float32)
    queries = np.ascontiguousarray(dataset.test[: config.n_queries], dtype=np.float32)
    if train.ndim != 2 or queries.ndim != 2 or train.shape[1] != queries.shape[1]:
        raise ValueError(
            f"train {train.shape} and test {queries.shape} must be 2-D with the same dimension"
        )
    n, d = train.shape
    nq = len(queries)
    if k > n:
        raise ValueError(f"k = {k} exceeds the {n} train vectors")
    neighbors = getattr(dataset, "neighbors", None)
    if neighbors is not None and np.asarray(neighbors).shape[1] >= k:
        gt = np.asarray(neighbors)[:nq, :k].astype(np.int64)
    else:
        log(f"[{dataset.name}] computing exact ground truth ({nq} queries)")
        gt = ground_truth(train, queries, k, metric)
    # FAISS and turbovec get unit vectors for cosine; tqsearch normalises itself.
    if metric == "cosine":
        peer_train, peer_queries = _normalized(train), _normalized(queries)
    else:
        peer_train, peer_queries = train, queries

    name = dataset.name
    log(f"[{name}] {n:,} x {d} {metric}, {nq} queries, k={k}, bits {list(config.bits)}, "
        f"threads {[c for _, c in counts]}")
    t_start = time.perf_counter()
    # turbovec builds in this process, in rayon's global pool, whose size is
    # read from the environment once, on first use.
    os.environ.setdefault("RAYON_NUM_THREADS", str(config.build_threads))
    _warm_up_tqsearch(train, d, config.bits, metric, families, k, counts)

    rows: list[_Row] = []
    for bits in config.bits:
        live: list[tuple[_Row, Method]] = []
        for fam in families:
            try:
                m = make_method(fam, d, bits, metric, pq8_max_train=config.pq8_max_train)
            except Unavailable as e:
                if fam == "tqsearch-rerank" and bits != RERANK_BITS:
                    continue  # measured at one bit width only; not a failure
                row = _Row(name, _label(fam, d, bits), _library(fam), fam, bits,
                           status="n/a", reason=str(e))
                rows.append(row)
                log(f"[{name}] {bits}b {row.method}: n/a ({e})")
                continue
            row = _Row(name, m.name, m.library, fam, bits)
            rows.append(row)
            xb = train if m.library == "tqsearch" else peer_train
            try:
                m.set_threads(config.build_threads)
                t0 = time.perf_counter()
                m.build(xb)
                row.build_s = time.perf_counter() - t0
                row.bytes_per_vector = m.bytes_per_vector
                row.notes = m.notes
            except Exception as e:  # report, never abort the run
                row.status, row.reason = "n/a", f"build failed: {_one_line(e)}"
                log(f"[{name}] {bits}b {m.name}: {row.reason}")
                m.close()
                continue
            log(f"[{name}] {bits}b {m.name}: built in {row.build_s:.2f} s, "
                f"{row.bytes_per_vector:g} B/vector")
            live.append((row, m))

        for label, nthreads in counts:
            for row, m in live:
                if row.status != "ok":
                    continue
                xq = queries if m.library == "tqsearch" else peer_queries
                n_lat = config.n_latency if nthreads == 1 and row.latency_ms is None else 0
                try:
                    res = m.measure(xq, k, nthreads, repeat=config.repeat, n_latency=n_lat)
                except Exception as e:
                    row.status, row.reason = "n/a", f"search failed: {_one_line(e)}"
                    log(f"[{name}] {bits}b {m.name}: {row.reason}")
                    continue
                row.qps[label] = nq / res["batch_s"]
                if row.recall is None:
                    row.recall = recall_at_k(res["I"], gt, k)
                    row.recall_1 = recall_1_at_k(res["I"], gt, k)
                if n_lat:
                    row.latency_ms = float(np.median(res["latency_s"]) * 1e3)
                lat = f", nq=1 {row.latency_ms:.3f} ms" if n_lat else ""
                log(f"[{name}] {bits}b {m.name}: {label} thread(s) {row.qps[label]:,.0f} QPS, "
                    f"R@{k} {row.recall:.3f}{lat}")
        for _, m in live:
            m.close()

    _add_ratios(rows, [label for label, _ in counts])
    meta = {
        "dataset": name,
        "n_train": int(n),
        "d": int(d),
        "metric": metric,
        "n_queries": int(nq),
        "k": k,
        "bits": [int(b) for b in config.bits],
        "threads": {label: c for label, c in counts},
        "n_latency": int(config.n_latency),
        "repeat": int(config.repeat),
        "build_threads": int(config.build_threads),
        "wall_s": time.perf_counter() - t_start,
        "machine": _machine(),
        "protocol": __doc__.split("Protocol", 1)[1].strip(),
    }
    log(f"[{name}] done in {meta['wall_s']:.1f} s")
    return {"meta": meta, "rows": [r.as_dict() for r in rows]}


def _label(family, d, bits):
    if family == "tqsearch-rerank":
        return f"tqsearch rerank{RERANK_FACTOR}"
    if family.startswith("tqsearch"):
        return family.replace("-", " ")
    if family == "turbovec":
        return "turbovec"
    factory = competitors.faiss_factories(d, bits)[family]
    return factory if not factory.startswith("n/a") else family


def _library(family):
    if family.startswith("tqsearch"):
        return "tqsearch"
    return "turbovec" if family == "turbovec" else "faiss"


def _add_ratios(rows: list[_Row], labels: list[str]) -> None:
    ref = {r.bits: r for r in rows if r.family == "tqsearch" and r.status == "ok"}
    for r in rows:
        base = ref.get(r.bits)
        for label in labels:
            if base is not None and label in r.qps and base.qps.get(label):
                r.ratio[label] = r.qps[label] / base.qps[label]


def _machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": all_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for mod in ("faiss", "turbovec", "numba"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    from ._version import __version__

    info["tqsearch"] = __version__
    return info


# ---------------------------------------------------------------------------
# output


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def _table_cells(result: dict) -> tuple[list[str], list[tuple[list[str], str]]]:
    """Header and ``(cells, note)`` per row; failed rows have only name and bits."""
    meta = result["meta"]
    k = meta["k"]
    labels = list(meta["threads"])
    head = ["method", "bits", "B/vec", "build s", f"R@{k}", f"R1@{k}"]
    head += [f"QPS {lab}t" if lab != "all" else f"QPS all({meta['threads']['all']})"
             for lab in labels]
    head += ["nq=1 ms", f"x tq ({labels[0]}t)" if labels[0] != "all" else "x tq (all)"]
    body = []
    for r in result["rows"]:
        if r["status"] != "ok":
            body.append(([r["method"], str(r["bits"])], f"n/a: {r['reason']}"))
            continue
        cells = [
            r["method"],
            str(r["bits"]),
            _fmt(r["bytes_per_vector"], "g"),
            _fmt(r["build_s"], ".2f"),
            _fmt(r["recall"], ".3f"),
            _fmt(r["recall_1"], ".3f"),
        ]
        cells += [_fmt(r.get(f"qps_{lab}"), ",.0f") for lab in labels]
        cells.append(_fmt(r["latency_ms"], ".3f"))
        ratio = r.get(f"ratio_{labels[0]}")
        cells.append("-" if ratio is None else f"{ratio:.2f}")
        body.append((cells, r.get("notes") or ""))
    return head, body


def format_table(result: dict) -> str:
    """Aligned plain-text table of one dataset's results."""
    meta = result["meta"]
    head, body = _table_cells(result)
    full = [head] + [cells for cells, _ in body if len(cells) == len(head)]
    widths = [max(len(row[i]) for row in full) for i in range(len(head))]
    widths[0] = max([widths[0]] + [len(cells[0]) for cells, _ in body])

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False)))

    lines = [
        f"{meta['dataset']}: {meta['n_train']:,} x {meta['d']} ({meta['metric']}), "
        f"{meta['n_queries']} queries, k = {meta['k']}",
        line(head),
    ]
    lines.append("-" * len(lines[-1]))
    for cells, note in body:
        text = line(cells)
        if note:
            text += "  " + note
        lines.append(text)
    return "\n".join(lines)


def to_markdown(result: dict) -> str:
    """GitHub-flavoured markdown table of one dataset's results."""
    meta = result["meta"]
    head, body = _table_cells(result)
    m = meta["machine"]
    out = [
        f"### {meta['dataset']} ({meta['n_train']:,} x {meta['d']}, {meta['metric']})",
        "",
        f"{meta['n_queries']} queries, k = {meta['k']}, {m['cpus']} CPU threads "
        f"({m['processor']}); faiss {m['faiss']}, turbovec {m['turbovec']}, "
        f"tqsearch {m['tqsearch']}. nq=1 ms: median single-query latency, one thread; "
        f"x tq: QPS relative to tqsearch at the same bits.",
        "",
        "| " + " | ".join(head + ["notes"]) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|---|",
    ]
    for cells, note in body:
        cells = cells + [""] * (len(head) - len(cells))
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells + [note]) + " |")
    return "\n".join(out)


def write_results(result: dict, out_dir: str | os.PathLike, *, plot: bool = True) -> dict:
    """Write ``results.json``, ``results.csv`` (and ``recall_qps.png``) into ``out_dir``.

    Returns
    -------
    dict
        Paths written, by kind (``"json"``, ``"csv"``, ``"png"``, ``"md"``).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "results.json"),
        "csv": os.path.join(out_dir, "results.csv"),
        "md": os.path.join(out_dir, "results.md"),
    }
    with open(paths["json"], "w") as f:
        json.dump(result, f, indent=1, default=_json_default)
    rows = result["rows"]
    columns = []
    for r in rows:
        for key in r:
            if key not in columns:
                columns.append(key)
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    with open(paths["md"], "w") as f:
        f.write(to_markdown(result) + "\n")
    if plot:
        from .plot import plot_recall_qps

        paths["png"] = os.path.join(out_dir, "recall_qps.png")
        plot_recall_qps(result, paths["png"])
    return paths


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
