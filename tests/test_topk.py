"""Fixed-size heaps (kernels/topk) keep the k largest values they are offered."""

import numpy as np
import pytest
from numba import njit

from tqsearch.kernels.topk import SENTINEL, bound_push, heap_init, heap_push


@njit(cache=True)
def _offer_all(values, k, bounds):
    scores = np.empty(k, dtype=np.float32)
    labels = np.empty(k, dtype=np.int64)
    heap_init(scores, labels)
    for i in range(values.shape[0]):
        if values[i] > scores[0]:
            if bounds:
                bound_push(scores, labels, values[i], i)
            else:
                heap_push(scores, labels, values[i], i)
    return scores, labels


@pytest.mark.parametrize("bounds", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 7, 10, 100])
def test_heaps_keep_the_k_largest(k, bounds):
    rng = np.random.default_rng(k)
    for n in (0, k // 2, 5 * k + 3):
        # a few repeated values: ties must not lose a larger one
        values = rng.integers(0, 3 * k + 1, n).astype(np.float32)
        scores, labels = _offer_all(values, k, bounds)
        want = np.sort(values)[::-1][:k]
        kept = np.sort(scores[labels >= 0])[::-1]
        np.testing.assert_array_equal(kept, want)
        np.testing.assert_array_equal(values[labels[labels >= 0]], scores[labels >= 0])
        assert np.all(scores[labels < 0] == SENTINEL)
        # the root is the worst kept: the threshold a scan tests against
        assert scores[0] == scores.min()
