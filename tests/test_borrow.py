"""Borrowed array views: the same memory as their owner, no reference counting."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from tqsearch.kernels.borrow import borrowed, keep_alive


@njit(cache=False)
def _sum_through_views(a):
    owner = np.arange(6.0).reshape(2, 3)
    view, outside = borrowed(owner), borrowed(a)
    view[1, 2] = 10.0  # writes reach the owner
    rows = outside[1:]  # slices of a view are views of the same memory
    total = 0.0
    for i in range(view.shape[0]):
        for j in range(view.shape[1]):
            total += view[i, j]
    keep_alive((owner, a))
    return total, owner[1, 2], rows.sum(), view.strides[0] == owner.strides[0]


def test_borrowed_views_share_memory_and_layout():
    a = np.arange(4, dtype=np.float64)
    total, written, tail, strides = _sum_through_views(a)
    assert total == 0 + 1 + 2 + 3 + 4 + 10
    assert written == 10.0
    assert tail == 1 + 2 + 3
    assert strides


def test_borrowed_rejects_non_arrays():
    @njit(cache=False)
    def bad(x):
        return borrowed(x)

    with pytest.raises(TypingError, match="expected an array"):
        bad(3)

    @njit(cache=False)
    def bad_keep(x):
        keep_alive((x, 1))

    with pytest.raises(TypingError, match="expected arrays"):
        bad_keep(np.zeros(2))
