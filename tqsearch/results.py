"""Turning candidate heaps into sorted results, and merging results of shards."""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernels.scan import ZERO_VECTOR_SCORE

__all__ = ["finalize_topk", "merge_results", "FORM_SIMILARITY", "FORM_L2", "FORM_COSINE"]


# How similarities turn into the returned scores (see :func:`finalize_topk`).
FORM_SIMILARITY = 0  # returned as they are
FORM_L2 = 1  # squared distance max(sq_norm - sim, 0); empty slots +inf
FORM_COSINE = 2  # 1 - (sq_norm - sim) / 2 (centred unit vectors); empty slots -inf


@njit(cache=True)
def _better(s1, l1, s2, l2):
    """Is ``(s1, l1)`` ranked before ``(s2, l2)`` (larger score, then smaller label)?"""
    return s1 > s2 or (s1 == s2 and l1 < l2)


@njit(cache=True)
def _finalize(scores, labels, sq_norms, form, out_s, out_i):
    nq, m = scores.shape
    k = out_s.shape[1]
    neg = np.float32(-np.inf)
    for q in range(nq):
        filled = 0
        for j in range(m):
            lab = labels[q, j]
            if lab < 0:
                continue
            s = scores[q, j]
            if filled == k and not _better(s, lab, out_s[q, k - 1], out_i[q, k - 1]):
                continue
            # insertion into the sorted prefix
            i = filled if filled < k else k - 1
            while i > 0 and _better(s, lab, out_s[q, i - 1], out_i[q, i - 1]):
                out_s[q, i] = out_s[q, i - 1]
                out_i[q, i] = out_i[q, i - 1]
                i -= 1
            out_s[q, i] = s
            out_i[q, i] = lab
            if filled < k:
                filled += 1
        for i in range(k):
            if i >= filled:
                out_i[q, i] = -1
                out_s[q, i] = np.float32(np.inf) if form == FORM_L2 else neg
            elif form == FORM_L2:
                out_s[q, i] = max(sq_norms[q] - out_s[q, i], np.float32(0.0))
            elif form == FORM_COSINE:
                if out_s[q, i] <= np.float32(ZERO_VECTOR_SCORE):
                    out_s[q, i] = np.float32(0.0)  # a zero vector: cosine 0 by convention
                else:
                    out_s[q, i] = np.float32(1.0) - (sq_norms[q] - out_s[q, i]) / np.float32(2.0)


def finalize_topk(scores: np.ndarray, labels: np.ndarray, k: int, sq_norms=None,
                  form: int = FORM_SIMILARITY):
    """Sort candidates best first and keep ``k`` per query.

    Parameters
    ----------
    scores : float32 (nq, m)
        Similarities (larger is better); empty slots hold any value with label -1.
    labels : int64 (nq, m)
    k : int
    sq_norms : float32 (nq,), optional
        Squared query norms, for ``form`` FORM_L2 and FORM_COSINE.
    form : int
        FORM_SIMILARITY (scores returned as they are), FORM_L2 (squared
        distances ``max(sq_norms - sim, 0)``) or FORM_COSINE (``1 - (sq_norms -
        sim) / 2``, the distance form on unit vectors).

    Returns
    -------
    scores : float32 (nq, k), labels : int64 (nq, k), padded with label -1
    (score -inf, +inf for FORM_L2). Ties are broken by the smaller label, so
    the order is deterministic. Ranking is always by similarity.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    nq = scores.shape[0]
    if sq_norms is None:
        sq_norms = np.zeros(nq, dtype=np.float32)
    out_s = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    _finalize(scores, labels, np.ascontiguousarray(sq_norms, dtype=np.float32), int(form),
              out_s, out_i)
    return out_s, out_i


def merge_results(results, k: int, *, metric: str = "ip"):
    """Merge the ``(D, I)`` results of several shards into the global top ``k``.

    Parameters
    ----------
    results : sequence of (D, I)
        Each D float32 (nq, k_i) and I int64 (nq, k_i) as returned by
        ``TurboQuantIndex.search`` on a shard (ids already global, e.g. via
        ``search(..., subset=...)`` or by offsetting them).
    k : int
    metric : {"ip", "cosine", "l2"}
        "l2" scores are distances (smaller is better); the others similarities.

    Returns
    -------
    D : float32 (nq, k), I : int64 (nq, k)
    """
    if not results:
        raise ValueError("merge_results needs at least one (D, I) pair")
    scores = np.concatenate([np.asarray(d, np.float32) for d, _ in results], axis=1)
    labels = np.concatenate([np.asarray(i, np.int64) for _, i in results], axis=1)
    if metric == "l2":
        scores = -scores
    out_s, out_i = finalize_topk(scores, labels, k)
    if metric == "l2":
        out_s = np.where(out_i >= 0, -out_s, np.float32(np.inf)).astype(np.float32)
    return out_s, out_i
