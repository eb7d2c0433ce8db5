"""Turning candidate heaps into sorted results, and merging results of shards."""

from __future__ import annotations

import numpy as np

__all__ = ["finalize_topk", "merge_results"]


def finalize_topk(scores: np.ndarray, labels: np.ndarray, k: int):
    """Sort candidates best first and keep ``k`` per query.

    Parameters
    ----------
    scores : float32 (nq, m)
        Similarities (larger is better); empty slots hold any value with label -1.
    labels : int64 (nq, m)
    k : int

    Returns
    -------
    scores : float32 (nq, k), labels : int64 (nq, k), padded with label -1.
    Ties are broken by the smaller label, so the order is deterministic.
    """
    nq, m = scores.shape
    key = np.where(labels >= 0, scores, -np.inf)
    # lexsort: last key is primary -> (-score, label)
    order = np.lexsort((labels, -key), axis=-1) if m else np.empty((nq, 0), np.int64)
    order = order[:, :k]
    out_s = np.take_along_axis(scores, order, axis=1)
    out_i = np.take_along_axis(labels, order, axis=1)
    if m < k:
        pad = k - m
        out_s = np.concatenate([out_s, np.full((nq, pad), -np.inf, np.float32)], axis=1)
        out_i = np.concatenate([out_i, np.full((nq, pad), -1, np.int64)], axis=1)
    invalid = out_i < 0
    out_s = np.where(invalid, np.float32(-np.inf), out_s).astype(np.float32)
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
