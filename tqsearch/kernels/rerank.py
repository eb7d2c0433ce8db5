"""Exact re-scoring of candidates against the raw vectors kept by the index."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def rerank_exact(raw, queries, labels, is_l2, out):
    """Exact similarity of each candidate.

    Parameters
    ----------
    raw : float32 or float16 (n, d)
        Kept vectors (normalised for cosine).
    queries : float32 (nq, d)
    labels : int64 (nq, m)
        Candidate ids, -1 for empty slots.
    is_l2 : bool
        Similarity is ``2 <q, x> - ||x||^2`` (ranks like ``-||q - x||^2``).
    out : float32 (nq, m), written (empty slots get -FLT_MAX)
    """
    nq, m = labels.shape
    d = queries.shape[1]
    for q in prange(nq):
        for t in range(m):
            v = labels[q, t]
            if v < 0:
                out[q, t] = np.float32(-3.4028234663852886e38)
                continue
            dot = np.float32(0.0)
            sq = np.float32(0.0)
            for j in range(d):
                xv = np.float32(raw[v, j])
                dot += queries[q, j] * xv
                sq += xv * xv
            out[q, t] = np.float32(2.0) * dot - sq if is_l2 else dot
