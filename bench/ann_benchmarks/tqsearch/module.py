"""tqsearch as an ann-benchmarks algorithm.

Install by copying this folder to ``ann_benchmarks/algorithms/tqsearch/`` of an
ann-benchmarks checkout (``bench/ann_benchmarks/run_local.py`` does that).

The index is a brute-force scan over TurboQuant codes, so there is no
build-time parameter besides the bit width and the estimator; the one query
parameter is the rerank factor (0 scores codes only; ``r > 0`` re-scores the
best ``r * n`` code candidates exactly, which needs the raw vectors kept at
build time).
"""

import os

import numpy as np

import tqsearch

from ..base.module import BaseANN

# ann-benchmarks metric -> tqsearch metric. Angular distance is 1 - cosine, so
# the "cosine" metric (vectors normalised on add and on search) ranks the same.
_METRICS = {"angular": "cosine", "euclidean": "l2"}
_ESTIMATORS = ("corrected", "pca", "mse", "qjl")
# config.yml spells "keep the raw vectors" as true or as the storage dtype
_KEEP = {False: None, None: None, True: "float32", "float32": "float32", "float16": "float16"}


def _n_cpus():
    """CPUs this process may run on (honours the runner's docker cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class TurboQuant(BaseANN):
    """TurboQuant codes scanned by tqsearch's Numba kernels.

    Parameters
    ----------
    metric : {"angular", "euclidean"}
        Dataset distance, as passed by the runner through ``@metric``.
    bits : int
        Bits per coordinate of the codes.
    estimator : {"corrected", "pca", "mse", "qjl"}, default "corrected"
        ``"corrected"``: Lloyd-Max codes with the per-vector gain (2 bytes).
        ``"pca"``: principal axes and nibble codebooks learnt from the train
        set (1 to 4 bits), the same bytes; the best recall at 2 and 3 bits.
        ``"mse"``: the paper's TurboQuant_mse estimate, codes only.
        ``"qjl"``: TurboQuant_prod, one of the bits on the QJL residual sign
        (unbiased inner products, usually lower recall).
    keep_vectors : {False, True, "float32", "float16"}, default False
        Keep the vectors beside the codes (True means float32) so that
        ``set_query_arguments(rerank)`` with ``rerank > 0`` can re-score
        candidates exactly; costs ``4 * d`` (float16: ``2 * d``) bytes per vector.
    """

    def __init__(self, metric, bits, estimator="corrected", keep_vectors=False):
        if metric not in _METRICS:
            raise ValueError(
                f"tqsearch supports the metrics {sorted(_METRICS)}, got {metric!r}; "
                "list this algorithm only under those sections of config.yml"
            )
        if estimator not in _ESTIMATORS:
            raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
        if keep_vectors not in _KEEP:
            raise ValueError(
                f"keep_vectors must be true, false, 'float32' or 'float16', got {keep_vectors!r}"
            )
        self._metric = metric
        self._bits = int(bits)
        self._estimator = estimator
        self._keep_vectors = _KEEP[keep_vectors]
        self._rerank = 0.0
        self._index = None
        self._n_dist = 0
        self._res = None

    # -- build ---------------------------------------------------------------------------------
    def fit(self, X):
        """Encode the train set, then compile every search path on a few rows.

        Parameters
        ----------
        X : numpy.ndarray of float, shape (n, d)
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"fit expects a non-empty (n, d) array, got shape {X.shape}")
        index = tqsearch.TurboQuantIndex(
            X.shape[1],
            bits=self._bits,
            metric=_METRICS[self._metric],
            qjl=self._estimator == "qjl",
            estimator=self._estimator if self._estimator != "qjl" else "corrected",
            keep_vectors=self._keep_vectors,
        )
        index.add(X)
        self._index = index
        # Numba compiles on first call: do it here so that compilation counts as
        # build time and not as the latency of the first query.
        k = min(10, index.ntotal)
        warm = X[: min(len(X), 8)]
        reranks = (0, 2) if self._keep_vectors is not None else (0,)
        for rerank in reranks:
            self._search(warm[:1], k, rerank, n_threads=1)
            self._search(warm, k, rerank, n_threads=_n_cpus())
        self._n_dist = 0

    # -- queries -------------------------------------------------------------------------------
    def set_query_arguments(self, rerank=0):
        """Set the rerank factor: 0 scores codes only, ``r > 0`` re-scores ``r * n`` candidates."""
        rerank = float(rerank)
        if rerank != 0 and rerank < 1:
            raise ValueError(f"rerank must be 0 or a factor >= 1, got {rerank}")
        if rerank > 0 and self._keep_vectors is None:
            raise ValueError(
                "rerank > 0 needs the raw vectors: build with keep_vectors=True "
                "(put `true` as the fourth argument of the run group in config.yml)"
            )
        self._rerank = rerank
        self._n_dist = 0

    def _search(self, Q, n, rerank, n_threads):
        if rerank > 0:
            _, ids = self._index.search(Q, n, rerank=rerank, n_threads=n_threads)
        else:
            _, ids = self._index.search(Q, n, n_threads=n_threads)
        # one code scored per stored vector, plus the exact re-scores
        exact = min(int(np.ceil(rerank * n)), self._index.ntotal) if rerank > 0 else 0
        self._n_dist += len(Q) * (self._index.ntotal + exact)
        return ids

    def query(self, v, n):
        """Ids of the ``n`` nearest train vectors, best first (one thread, as the runner expects).

        Parameters
        ----------
        v : numpy.ndarray of float, shape (d,)
        n : int

        Returns
        -------
        numpy.ndarray of int64, shape (<= n,)
        """
        q = np.ascontiguousarray(v, dtype=np.float32).reshape(1, -1)
        ids = self._search(q, n, self._rerank, n_threads=1)[0]
        return ids[ids >= 0]

    def batch_query(self, X, n):
        """Search all queries at once on every CPU this process may use."""
        Q = np.ascontiguousarray(X, dtype=np.float32)
        self._res = self._search(Q, n, self._rerank, n_threads=_n_cpus())

    def get_batch_results(self):
        """Per-query id arrays of the last ``batch_query``, padding removed."""
        return [row[row >= 0] for row in self._res]

    # -- reporting -----------------------------------------------------------------------------
    def get_additional(self):
        """Stored bytes per vector and the number of scored codes/vectors since the last reset."""
        index = self._index
        code_size = int(index.code_size) if index is not None else 0
        raw_size = int(index.raw_size) if index is not None else 0
        return {
            "code_size": code_size,
            "bytes_per_vector": code_size + raw_size,
            "dist_comps": self._n_dist,
        }

    def done(self):
        self._index = None
        self._res = None

    def __str__(self):
        keep = "" if self._keep_vectors is None else f", keep_vectors={self._keep_vectors}"
        return (
            f"TurboQuant(bits={self._bits}, estimator={self._estimator}{keep}, "
            f"rerank={self._rerank:g})"
        )
