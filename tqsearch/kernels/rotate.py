"""Randomized Hadamard rotation kernels (forward and inverse), one row per iteration."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def matvec_rows(x, matrix_t, out):
    """``out[i] = matrix_t.T @ x[i]`` for every row.

    Parameters
    ----------
    x : float32 (n, d)
    matrix_t : float32 (d, d)
        Transposed matrix: the product is a sum of its rows (contiguous axpys).
    out : float32 (n, d), written
    """
    n, d = x.shape
    for i in prange(n):
        for r in range(d):
            out[i, r] = np.float32(0.0)
        for j in range(d):
            xj = x[i, j]
            for r in range(d):
                out[i, r] += xj * matrix_t[j, r]


@njit(inline="always", fastmath=FASTMATH)
def _fwht_inplace(y, start, p, scale):
    """Orthonormal Walsh-Hadamard transform of ``y[start:start + p]``, ``p`` a power of two."""
    h = 1
    while h < p:
        for i in range(start, start + p, 2 * h):
            for j in range(i, i + h):
                a = y[j]
                b = y[j + h]
                y[j] = a + b
                y[j + h] = a - b
        h *= 2
    for j in range(start, start + p):
        y[j] *= scale


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def hadamard_forward(x, signs, perms, offsets, block, out):
    """Apply ``rounds`` of ``y <- P_r H_r D_r y`` to every row.

    Parameters
    ----------
    x : float32 (n, d)
    signs : float32 (rounds, d) of +-1
    perms : int64 (rounds, d), permutation applied after the round's transform
    offsets : int64 (rounds,), start of the power-of-two block transformed
    block : int, power of two <= d
    out : float32 (n, d), written
    """
    n, d = x.shape
    rounds = signs.shape[0]
    scale = np.float32(1.0 / np.sqrt(block))
    for i in prange(n):
        y = np.empty(d, dtype=np.float32)
        tmp = np.empty(d, dtype=np.float32)
        for j in range(d):
            y[j] = x[i, j]
        for r in range(rounds):
            for j in range(d):
                y[j] *= signs[r, j]
            _fwht_inplace(y, offsets[r], block, scale)
            for j in range(d):
                tmp[j] = y[perms[r, j]]
            for j in range(d):
                y[j] = tmp[j]
        for j in range(d):
            out[i, j] = y[j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def hadamard_inverse(x, signs, perms, offsets, block, out):
    """Inverse of :func:`hadamard_forward` (same arguments)."""
    n, d = x.shape
    rounds = signs.shape[0]
    scale = np.float32(1.0 / np.sqrt(block))
    for i in prange(n):
        y = np.empty(d, dtype=np.float32)
        tmp = np.empty(d, dtype=np.float32)
        for j in range(d):
            y[j] = x[i, j]
        for r in range(rounds - 1, -1, -1):
            for j in range(d):
                tmp[perms[r, j]] = y[j]
            for j in range(d):
                y[j] = tmp[j]
            _fwht_inplace(y, offsets[r], block, scale)
            for j in range(d):
                y[j] *= signs[r, j]
        for j in range(d):
            out[i, j] = y[j]
