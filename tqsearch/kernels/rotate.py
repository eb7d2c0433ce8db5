"""Rotation kernels: tile products with a matrix and the randomized Hadamard transform.

The Hadamard transform works on *tiles*: ``LANES`` vectors stored transposed,
``tile[j, l]`` being coordinate ``j`` of vector ``l``. Every butterfly then
adds and subtracts two rows of ``LANES`` floats, which is one SIMD operation
whatever the butterfly's stride, and a permutation moves whole rows. One
vector is transformed as a tile with one live lane.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH
from . import serial_twin
from .hadamard16 import CHUNK, fwht_vector, permute_scaled
from .lanes import LANES, butterfly2, butterfly4, load_tile, matmul_rows, move_row


@njit(inline="always")
def fwht_tile(t, start, p, h=1):
    """Unnormalised Walsh-Hadamard transform of rows ``start .. start + p`` of a tile.

    Stages are fused in pairs (radix 4): each row is loaded and stored once per
    two stages. ``p`` is a power of two; the ``1 / sqrt(p)`` is left to the caller.
    Stages of stride below ``h`` are taken as done (``h = 4`` after
    :func:`gather_butterfly4`).
    """
    while 4 * h <= p:
        for i in range(start, start + p, 4 * h):
            for j in range(i, i + h):
                butterfly4(t, j, h)
        h *= 4
    if h < p:
        for i in range(start, start + p, 2 * h):
            for j in range(i, i + h):
                butterfly2(t, j, h)


@njit(inline="always")
def hadamard_tile(t, spare, factors, perms, offsets, block):
    """Rotate a tile whose rows were already multiplied by the first round's signs.

    Round ``r`` transforms its block, then moves row ``perms[r, j]`` to row
    ``j`` times ``factors[r, j]``, which carries the block's ``1 / sqrt(p)``
    and the next round's sign (see :meth:`HadamardRotation.kernel_args`).
    ``t`` and ``spare`` are float32 (d, LANES); returns them as (result, the other).
    """
    d = t.shape[0]
    for r in range(factors.shape[0]):
        fwht_tile(t, offsets[r], block)
        for j in range(d):
            move_row(spare, j, t, perms[r, j], factors[r, j])
        t, spare = spare, t
    return t, spare


@njit(inline="always")
def hadamard_vector(x, spare, factors, perms, offsets, block):
    """:func:`hadamard_tile` for a single vector (float32 (d,) each; ``block`` at
    least :data:`.hadamard16.CHUNK`): the same operations, 16 coordinates at a
    time instead of one coordinate of ``LANES`` vectors. Returns as
    :func:`hadamard_tile`."""
    for r in range(factors.shape[0]):
        fwht_vector(x, offsets[r], block)
        permute_scaled(spare, x, perms[r], factors[r])
        x, spare = spare, x
    return x, spare


@njit(inline="always")
def hadamard_inverse_tile(t, spare, signs, perms, offsets, block):
    """Undo the rotation of a tile (rounds in reverse, each one transposed); returns as
    :func:`hadamard_tile`."""
    d = t.shape[0]
    scale = np.float32(1.0 / np.sqrt(block))
    for r in range(signs.shape[0] - 1, -1, -1):
        for j in range(d):
            move_row(spare, perms[r, j], t, j, np.float32(1.0))
        t, spare = spare, t
        fwht_tile(t, offsets[r], block)
        lo = offsets[r]
        for j in range(d):
            inside = lo <= j < lo + block
            move_row(t, j, t, j, signs[r, j] * scale if inside else signs[r, j])
    return t, spare


@njit(inline="always")
def load_rows(t, x, first, live, pre):
    """``t[j, l] = x[first + l, j] * pre[j]`` for the ``live`` rows present."""
    d = x.shape[1]
    start = 0
    if live == LANES:
        load_tile(t, x, first, pre)
        start = d - d % LANES
    for lane in range(live):
        for j in range(start, d):
            t[j, lane] = x[first + lane, j] * pre[j]


@njit(inline="always")
def rotate_tile(t, spare, matrix, signs, factors, perms, offsets, block, inverse):
    """Rotate a loaded tile; returns ``(result, scratch)``, the two tiles in some order.

    With ``matrix`` float32 (d, d) the rotation is that product; otherwise it is
    the Hadamard rounds (forward: ``t`` already multiplied by ``signs[0]``).
    See :meth:`tqsearch.rotation.Rotation.kernel_args` for the arguments.
    """
    if matrix.shape[0] == t.shape[0]:
        matmul_rows(spare, matrix, t)
        return spare, t
    if inverse:
        return hadamard_inverse_tile(t, spare, signs, perms, offsets, block)
    return hadamard_tile(t, spare, factors, perms, offsets, block)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def rotate_rows(x, pre, matrix, signs, factors, perms, offsets, block, inverse, out):
    """Rotate every row of ``x`` (or undo the rotation), a tile at a time.

    Parameters
    ----------
    x : float32 (n, d)
    pre : float32 (d,)
        Multiplies coordinates as rows are loaded (the first round's signs).
    matrix : float32 (d, d) or (0, 0)
        The rotation as a product ``y = matrix @ x``, when it is applied as one.
    signs, factors : float32 (rounds, d)
    perms : int64 (rounds, d)
    offsets : int64 (rounds,)
    block : int
        Hadamard rounds (see :func:`hadamard_tile`); unused with a matrix.
    inverse : bool
        Run the Hadamard rounds backwards.
    out : float32 (n, d), written
    """
    n, d = x.shape
    # a lone vector (a query) goes through the rounds alone: a tile would spend
    # LANES times the work on it, for the same result
    alone = matrix.shape[0] != d and not inverse and block >= CHUNK
    for tile in prange((n + LANES - 1) // LANES):
        first = tile * LANES
        live = min(LANES, n - first)
        if alone and live == 1:
            v = np.empty(d, dtype=np.float32)
            spare = np.empty(d, dtype=np.float32)
            for j in range(d):
                v[j] = x[first, j] * pre[j]
            v, _ = hadamard_vector(v, spare, factors, perms, offsets, block)
            out[first] = v
        else:
            t = np.zeros((d, LANES), dtype=np.float32)
            spare = np.empty((d, LANES), dtype=np.float32)
            load_rows(t, x, first, live, pre)
            t, _ = rotate_tile(t, spare, matrix, signs, factors, perms, offsets, block, inverse)
            for lane in range(live):
                for j in range(d):
                    out[first + lane, j] = t[j, lane]


#: :func:`rotate_rows` without threads: no thread-pool launch for a query or two.
rotate_rows_serial = serial_twin(rotate_rows, "rotate_rows_serial", fastmath=FASTMATH)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def project_rows(x, columns, out):
    """``out[r] = columns.T @ x[r]`` for every row, one row at a time.

    For queries under a dense rotation: a row costs ``d^2`` multiply-adds
    whatever the batch (the tile kernel spends eight lanes on a single row), and
    each row's result is computed the same way alone or in a batch.

    Parameters
    ----------
    x : float32 (n, d)
    columns : float32 (d, d)
        The rotation matrix transposed (``columns[j]`` is column ``j``).
    out : float32 (n, d), written
    """
    n, d = x.shape
    for r in prange(n):
        acc = np.zeros(d, dtype=np.float32)
        for j in range(d):
            xj = x[r, j]
            for i in range(d):
                acc[i] += xj * columns[j, i]
        out[r] = acc


#: :func:`project_rows` without threads.
project_rows_serial = serial_twin(project_rows, "project_rows_serial", fastmath=FASTMATH)
