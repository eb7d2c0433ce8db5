"""Peer methods for the benchmark: FAISS factory strings and turbovec.

Every method follows one small interface, :class:`Method`:
``build(train)`` (train + add, timed by the caller), ``search(xq, k)`` and
``measure(xq, k, threads, ...)`` (the timed part), ``bytes_per_vector`` and a
``name``. A method that cannot run (a factory string this FAISS does not
accept, turbovec refusing the dimension, a library that is not installed)
raises :class:`Unavailable` with a one-line reason; the runner reports it as
n/a and carries on.

Configurations follow the equal-bytes table of the design notes: at ``b`` bits
per coordinate and dimension ``d`` the codes take ``d * b / 8`` bytes, plus
whatever per-vector factors the method stores (reported as measured).

Threads: FAISS honours ``faiss.omp_set_num_threads`` at any time. turbovec
(Rust, rayon) reads ``RAYON_NUM_THREADS`` once, when its global pool starts,
so its searches are timed in a child process started with that variable set
(the index crosses over as bytes; the build is timed here, in this process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

__all__ = [
    "Unavailable",
    "Method",
    "FaissMethod",
    "TurbovecMethod",
    "all_threads",
    "faiss_factories",
]


class Unavailable(RuntimeError):
    """A method cannot run on this data or this installation (reason in the message)."""


def all_threads() -> int:
    """Number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _warmup_rows(nq: int) -> int:
    return min(nq, 16)


class Method:
    """One configuration of one library, at one bit width.

    Attributes
    ----------
    name : str
        Label in tables (e.g. ``"RR128,RaBitQfs4"``).
    family : str
        Key used to select methods (e.g. ``"rabitqfs"``).
    library : str
        ``"tqsearch"``, ``"faiss"`` or ``"turbovec"``.
    bits : int
        Bits per coordinate of the configuration.
    """

    name = "method"
    family = "method"
    library = "?"

    def __init__(self, d: int, bits: int, metric: str):
        self.d = int(d)
        self.bits = int(bits)
        self.metric = metric
        self.notes = ""

    # -- to implement -------------------------------------------------
    def build(self, train: np.ndarray) -> None:
        """Train (if needed) and add ``train``: float32 (n, d)."""
        raise NotImplementedError

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search with the thread count last set by :meth:`set_threads`."""
        raise NotImplementedError

    def set_threads(self, n: int) -> None:
        """Use ``n`` threads in the following searches."""

    @property
    def bytes_per_vector(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Free the index."""

    # -- timing, shared -----------------------------------------------
    def measure(
        self, xq: np.ndarray, k: int, threads: int, *, repeat: int = 1, n_latency: int = 0
    ) -> dict:
        """Time one batch search of ``xq`` (after a warm-up) and, optionally,
        ``n_latency`` searches of one query each.

        Parameters
        ----------
        xq : ndarray of float32, shape (nq, d)
        k : int
        threads : int
            Threads to search with.
        repeat : int
            Batch searches timed; the fastest counts.
        n_latency : int
            Single-query searches timed, cycling through the rows of ``xq``.

        Returns
        -------
        dict
            ``batch_s`` (float, seconds for the whole batch), ``I`` (int64
            (nq, k), ids of the last batch) and ``latency_s`` (float64
            (n_latency,), seconds per single-query search).
        """
        self.set_threads(threads)
        self.search(xq[: _warmup_rows(len(xq))], k)
        best = np.inf
        ids = None
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            _, ids = self.search(xq, k)
            best = min(best, time.perf_counter() - t0)
        lat = np.empty(n_latency, dtype=np.float64)
        for i in range(n_latency):
            q = xq[i % len(xq) : i % len(xq) + 1]
            t0 = time.perf_counter()
            self.search(q, k)
            lat[i] = time.perf_counter() - t0
        return {"batch_s": best, "I": np.asarray(ids, dtype=np.int64), "latency_s": lat}


# ---------------------------------------------------------------------------
# FAISS


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise Unavailable("faiss is not installed: pip install faiss-cpu") from e
    return faiss


def faiss_factories(d: int, bits: int) -> dict[str, str]:
    """FAISS factory strings at ``bits`` bits per coordinate, by family.

    Families whose configuration does not exist at this ``(d, bits)`` (a PQ
    with a sub-quantizer count that does not divide ``d``) map to a string
    starting with ``"n/a:"`` and the reason.

    Vectors are normalised before they reach FAISS for the cosine metric, so
    no ``L2norm`` prefix is needed; ``RR{d}`` is the dense random rotation
    (``HR`` would pad ``d`` to a power of two and spend more bytes).
    """
    out = {
        "sqtqmse": f"RR{d},SQtqmse{bits}",
        "sqtq": f"RR{d},SQtq{bits}",
        "eden": f"EDEN{bits}",
        "rabitq": f"RR{d},RaBitQ{bits}",
        "rabitqfs": f"RR{d},RaBitQfs{bits}",
    }
    for family, nbits in (("pq4fs", 4), ("pq8", 8)):
        num = d * bits
        if num % nbits:
            out[family] = f"n/a: PQ needs d*b/{nbits} = {d}*{bits}/{nbits} to be an integer"
            continue
        m = num // nbits
        suffix = "x4fs" if nbits == 4 else "x8"
        if d % m:
            out[family] = f"n/a: PQ{m}{suffix}: {m} sub-quantizers do not divide d = {d}"
        else:
            out[family] = f"PQ{m}{suffix}"
    return out


class FaissMethod(Method):
    """A FAISS index from a factory string.

    Parameters
    ----------
    d, bits : int
    metric : {"ip", "cosine", "l2"}
        ``"cosine"`` expects vectors normalised by the caller and searches by
        inner product.
    factory : str
    family : str
    max_train : int, optional
        Train on at most this many rows (the first ones), for slow k-means
        (PQ x8); everything is still added.
    """

    library = "faiss"

    def __init__(self, d, bits, metric, factory, family, max_train=None):
        super().__init__(d, bits, metric)
        if factory.startswith("n/a:"):
            raise Unavailable(factory[4:].strip())
        faiss = _faiss()
        self.name = factory
        self.family = family
        self.max_train = max_train
        mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        try:
            self.index = faiss.index_factory(self.d, factory, mt)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()
            raise Unavailable(f"FAISS {faiss.__version__} rejects {factory!r}: "
                              f"{msg[-1] if msg else e}") from None
        self._max_threads = faiss.omp_get_max_threads()

    def build(self, train):
        sample = train
        if self.max_train is not None and len(train) > self.max_train:
            sample = train[: self.max_train]
            self.notes = f"trained on {self.max_train:,} rows"
        if not self.index.is_trained:
            self.index.train(sample)
        self.index.add(train)

    def set_threads(self, n):
        _faiss().omp_set_num_threads(int(n))

    def search(self, xq, k):
        return self.index.search(xq, k)

    @property
    def bytes_per_vector(self):
        return float(self.index.sa_code_size())

    def close(self):
        self.index = None
        _faiss().omp_set_num_threads(self._max_threads)


# ---------------------------------------------------------------------------
# turbovec

_TURBOVEC_WORKER = """
import json, sys, time
import numpy as np
import turbovec
a = json.loads(sys.argv[1])
with open(a["index"], "rb") as f:
    index = turbovec.TurboQuantIndex.from_bytes(f.read())
xq = np.load(a["queries"])
k = a["k"]
if hasattr(index, "prepare"):
    index.prepare()
index.search(xq[: min(len(xq), 16)], k)
best = float("inf")
for _ in range(max(1, a["repeat"])):
    t0 = time.perf_counter()
    _, ids = index.search(xq, k)
    best = min(best, time.perf_counter() - t0)
lat = []
for i in range(a["n_latency"]):
    q = xq[i % len(xq) : i % len(xq) + 1]
    t0 = time.perf_counter()
    index.search(q, k)
    lat.append(time.perf_counter() - t0)
np.save(a["ids"], np.asarray(ids, dtype=np.int64))
print(json.dumps({"batch_s": best, "latency_s": lat}))
"""


class TurbovecMethod(Method):
    """turbovec's ``TurboQuantIndex`` (Rust + SIMD), inner product only.

    It stores ``d * b / 8`` code bytes and a norm per vector, needs ``d`` a
    multiple of 8 and ``b`` in 2..4. Usable for ``"ip"`` and for ``"cosine"``
    on vectors normalised by the caller; not for ``"l2"``.
    """

    library = "turbovec"
    family = "turbovec"

    def __init__(self, d, bits, metric):
        super().__init__(d, bits, metric)
        self.name = "turbovec"
        try:
            import turbovec
        except ImportError:
            raise Unavailable("turbovec is not installed: pip install turbovec") from None
        if metric == "l2":
            raise Unavailable("turbovec scores by inner product only; no euclidean search")
        if bits not in (2, 3, 4):
            raise Unavailable(f"turbovec supports 2, 3 or 4 bits, not {bits}")
        try:
            self.index = turbovec.TurboQuantIndex(self.d, self.bits)
        except ValueError as e:
            raise Unavailable(f"turbovec refuses d = {d}: {e}") from None
        self._module = turbovec
        self._bytes = None
        self._threads = all_threads()

    def build(self, train):
        self.index.add(np.ascontiguousarray(train, dtype=np.float32))
        if hasattr(self.index, "prepare"):
            self.index.prepare()
        self._sample = train[: min(len(train), 2048)]

    def search(self, xq, k):
        # Runs in this process's rayon pool (thread count fixed at its start).
        return self.index.search(xq, k)

    def set_threads(self, n):
        self._threads = int(n)

    @property
    def bytes_per_vector(self):
        # Marginal size of the serialized index: what one more vector costs.
        if self._bytes is None:
            s = self._sample
            half = len(s) // 2
            sizes = []
            for rows in (s[:half], s):
                idx = self._module.TurboQuantIndex(self.d, self.bits)
                idx.add(rows)
                sizes.append(len(idx.to_bytes()))
            self._bytes = (sizes[1] - sizes[0]) / (len(s) - half)
        return float(self._bytes)

    def measure(self, xq, k, threads, *, repeat=1, n_latency=0):
        """Time the searches in a child process with ``RAYON_NUM_THREADS=threads``."""
        with tempfile.TemporaryDirectory(prefix="tq-bench-") as tmp:
            paths = {
                "index": os.path.join(tmp, "index.tv"),
                "queries": os.path.join(tmp, "queries.npy"),
                "ids": os.path.join(tmp, "ids.npy"),
            }
            with open(paths["index"], "wb") as f:
                f.write(self.index.to_bytes())
            np.save(paths["queries"], np.ascontiguousarray(xq, dtype=np.float32))
            args = dict(paths, k=int(k), repeat=int(repeat), n_latency=int(n_latency))
            env = dict(os.environ, RAYON_NUM_THREADS=str(int(threads)))
            proc = subprocess.run(
                [sys.executable, "-c", _TURBOVEC_WORKER, json.dumps(args)],
                env=env, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise Unavailable(f"turbovec search process failed: {tail}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            ids = np.load(paths["ids"])
        return {
            "batch_s": float(res["batch_s"]),
            "I": ids,
            "latency_s": np.asarray(res["latency_s"], dtype=np.float64),
        }

    def close(self):
        self.index = None
