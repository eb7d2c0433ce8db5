"""Fixed-size min-heaps keeping the k largest similarities.

The root holds the worst kept score, so a candidate is tested with one
comparison. Empty slots hold the most negative finite float32 and label -1
(finite sentinels: no reliance on infinities under fast-math).
"""

from __future__ import annotations

import numpy as np
from numba import njit

SENTINEL = np.float32(-np.finfo(np.float32).max)


@njit(inline="always")
def heap_init(scores, labels):
    for i in range(scores.shape[0]):
        scores[i] = SENTINEL
        labels[i] = -1


@njit(inline="always")
def heap_push(scores, labels, score, label):
    """Replace the root (worst kept) by ``(score, label)`` and restore the heap.

    Ties are broken towards the smaller label so that results do not depend
    on the order codes are visited in.
    """
    k = scores.shape[0]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= k:
            break
        child = left
        right = left + 1
        if right < k and _worse(scores[right], labels[right], scores[left], labels[left]):
            child = right
        if _worse(scores[child], labels[child], score, label):
            scores[i] = scores[child]
            labels[i] = labels[child]
            i = child
        else:
            break
    scores[i] = score
    labels[i] = label


@njit(inline="always")
def bound_push(scores, labels, score, label):
    """:func:`heap_push` for heaps of bounds, where which of two equal values is
    kept does not matter: no tie-break on labels, and the smaller child is
    chosen by arithmetic rather than a branch, so that a push mispredicts
    about once (where it stops) rather than once a level."""
    k = scores.shape[0]
    i = 0
    child = 1
    while child < k:
        right = child + 1
        child += np.int64(right < k and scores[min(right, k - 1)] < scores[child])
        if not scores[child] < score:
            break
        scores[i] = scores[child]
        labels[i] = labels[child]
        i = child
        child = 2 * i + 1
    scores[i] = score
    labels[i] = label


@njit(inline="always")
def _worse(s1, l1, s2, l2):
    """Is ``(s1, l1)`` ranked after ``(s2, l2)``?"""
    return s1 < s2 or (s1 == s2 and l1 > l2)
