"""``lowest_bit`` (kernels/bits) against its definition."""

import numpy as np
from numba import njit

from tqsearch.kernels.bits import _lowest_bit_python, lowest_bit


@njit(cache=True)
def _set_bits(mask):
    out = []
    while mask != 0:
        out.append(lowest_bit(mask))
        mask &= mask - 1
    return out


def test_lowest_bit_visits_the_set_bits_in_order():
    rng = np.random.default_rng(0)
    masks = [0, 1, 2, 3, 1 << 31, (1 << 32) - 1, (1 << 62) | 5]
    masks += [int(m) for m in rng.integers(0, 1 << 32, 50)]
    for mask in masks:
        want = [r for r in range(64) if (mask >> r) & 1]
        assert list(_set_bits(np.int64(mask))) == want
        assert _lowest_bit_python(mask) == (want[0] if want else 64)
