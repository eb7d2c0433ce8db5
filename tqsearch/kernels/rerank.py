"""Exact re-scoring of candidates against the raw vectors kept by the index."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH


@njit(inline="always")
def half_to_float(h):
    """IEEE binary16 bits (uint16) -> float32 (normals, subnormals, zeros, inf, NaN)."""
    h = np.uint32(h)
    sign = (h >> 15) << 31
    exponent = (h >> 10) & 0x1F
    mantissa = h & 0x3FF
    if exponent == 0x1F:  # inf / NaN
        bits = sign | np.uint32(0x7F800000) | (mantissa << 13)
    elif exponent == 0:
        if mantissa == 0:
            bits = sign
        else:  # subnormal: value = mantissa * 2**-24
            value = np.float32(mantissa) * np.float32(5.960464477539063e-08)
            return -value if sign else value
    else:
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13)
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def rerank_exact(raw32, raw16, queries, labels, is_l2, out):
    """Exact similarity of each candidate.

    Parameters
    ----------
    raw32 : float32 (n, d) or (0, 0)
        Kept vectors (normalised for cosine) ...
    raw16 : uint16 (n, d) or (0, 0)
        ... or their float16 bits; exactly one of the two is non-empty.
    queries : float32 (nq, d)
    labels : int64 (nq, m)
        Candidate ids, -1 for empty slots.
    is_l2 : bool
        Similarity is ``2 <q, x> - ||x||^2`` (ranks like ``-||q - x||^2``).
    out : float32 (nq, m), written (empty slots get -FLT_MAX)
    """
    nq, m = labels.shape
    d = queries.shape[1]
    half = raw16.shape[0] > 0
    for q in prange(nq):
        for t in range(m):
            v = labels[q, t]
            if v < 0:
                out[q, t] = np.float32(-3.4028234663852886e38)
                continue
            dot = np.float32(0.0)
            sq = np.float32(0.0)
            for j in range(d):
                xv = half_to_float(raw16[v, j]) if half else raw32[v, j]
                dot += queries[q, j] * xv
                sq += xv * xv
            out[q, t] = np.float32(2.0) * dot - sq if is_l2 else dot
