"""3-bit codes in blocks of 32 vectors, laid out for int8 dot products.

Three bits per coordinate do not fit the nibbles of :mod:`tqsearch.kernels.fastscan`
without wasting a quarter of the bytes, so 3-bit codes get a layout of their own,
exactly 3 bits per coordinate (``d`` padded to a multiple of 4):

``blocked`` : uint8 (ceil(n / 32), 12 * D4), ``D4 = 4 * ceil(d / 4)``
    Block ``b`` holds vectors ``32 b .. 32 b + 31``, a *step* of 48 bytes per four
    coordinates. Step ``s`` (coordinates ``4 s .. 4 s + 3``) is two halves of
    24 bytes, half ``h`` holding rows ``r`` with ``r // 16 == h``; a half is eight
    triplets of bytes, triplet ``p`` holding rows ``16 h + p`` (``i = 0``) and
    ``16 h + p + 8`` (``i = 1``). Read as a 24-bit little-endian integer, a
    triplet's bits ``3 f .. 3 f + 2`` are the code of coordinate ``4 s + f % 4``
    of its row ``i = f // 4``. Padding coordinates and vectors are code 0.

A SIMD scan turns one half into 64 code bytes with one byte permute (each triplet
to the bottom of its own 64-bit lane), one multishift (``vpmultishiftqb``: eight
3-bit fields a lane, at bit offsets ``0, 3, .., 21``) and a mask: the four codes of
one row share a 32-bit lane, ready for ``vpdpbusd`` against four query weights
(:func:`tqsearch.kernels.simd.make_triplet_dot_filter_intrinsic`). Lane ``L``
holds row ``L // 2 + 8 (L % 2)`` (+ 16 in the second half): the lane order of the
nibble kernels, so both share their row filter.

Packed rows (the codec's format, :mod:`.encode`) are uint8 ``(n, ceil(3 d / 8))``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .encode import pack_row, read_bits
from .fastscan import BLOCK

__all__ = ["STEP_BYTES", "code_at", "exact_sum", "gather_rows", "padded_dim", "scatter_rows"]

#: Bytes of one step: four coordinates of the block's 32 vectors, 3 bits each.
STEP_BYTES = 48


def padded_dim(d: int) -> int:
    """Coordinates stored per vector: ``d`` rounded up to a multiple of 4."""
    return 4 * ((d + 3) // 4)


@njit(inline="always")
def _place(r, j):
    """Byte offset in a block of the triplet holding row ``r``'s coordinate ``j``,
    and the bit offset of the code in that triplet's 24 bits."""
    h = r >> 4
    p = r & 7
    i = (r >> 3) & 1
    return STEP_BYTES * (j >> 2) + 24 * h + 3 * p, 3 * (4 * i + (j & 3))


@njit(inline="always")
def code_at(blocked, v, j):
    """Code of vector ``v``'s coordinate ``j`` (unchecked)."""
    at, shift = _place(v & (BLOCK - 1), j)
    blk = blocked[v // BLOCK]
    word = (np.uint32(blk[at]) | (np.uint32(blk[at + 1]) << 8)
            | (np.uint32(blk[at + 2]) << 16))
    return (word >> shift) & 7


@njit(parallel=True, cache=True)
def scatter_rows(codes, at, blocked, d):
    """Write packed 3-bit rows for vectors ``at .. at + n - 1`` into ``blocked``.

    Parameters
    ----------
    codes : uint8 (n, >= ceil(3 d / 8))
        Packed rows.
    at : int
        First vector written.
    blocked : uint8 (>= ceil((at + n) / 32), 12 * padded_dim(d)), updated
        Padding coordinates must already be zero (they are in a fresh array).
    d : int
    """
    n = codes.shape[0]
    if n == 0:
        return
    first = at // BLOCK
    last = (at + n - 1) // BLOCK
    # a block per task: no two tasks write the same bytes
    for b in prange(first, last + 1):
        blk = blocked[b]
        for r in range(BLOCK):
            v = b * BLOCK + r
            if v < at or v >= at + n:
                continue
            row = codes[v - at]
            for j in range(d):
                pos, shift = _place(r, j)
                c = np.uint32(read_bits(row, 3 * j, 3)) << shift
                for t in range(3):
                    keep = np.uint32(blk[pos + t]) & ~(np.uint32(7 << shift) >> (8 * t))
                    blk[pos + t] = np.uint8((keep | (c >> (8 * t))) & 0xFF)


@njit(parallel=True, cache=True)
def gather_rows(blocked, start, stop, d, out):
    """Packed 3-bit rows of vectors ``start .. stop - 1`` (inverse of :func:`scatter_rows`).

    Parameters
    ----------
    blocked : uint8 (nblocks, 12 * padded_dim(d))
    start, stop : int
    d : int
    out : uint8 (stop - start, ceil(3 d / 8)), written
    """
    for i in prange(stop - start):
        idx = np.empty(d, dtype=np.int32)
        for j in range(d):
            idx[j] = code_at(blocked, start + i, j)
        pack_row(idx, 3, out[i])


# no fastmath: the fixed order of the additions makes the sum deterministic
@njit(cache=True)
def exact_sum(blocked, M, v, luts, q):
    """Float32 table sum ``sum_{j < M} luts[q, j, code_j(v)]`` in a fixed order.

    Four interleaved partial sums ``a_t`` over ``j % 4 == t`` (the coordinates of
    one step share a triplet), combined as ``(a0 + a1) + (a2 + a3)``: the same
    result on every call, serial or threaded, whatever the batch.
    """
    r = v & (BLOCK - 1)
    blk = blocked[v // BLOCK]
    base, shift = _place(r, 0)
    lut = luts[q]
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    full = M // 4
    for s in range((M + 3) // 4):
        at = base + STEP_BYTES * s
        word = (np.uint32(blk[at]) | (np.uint32(blk[at + 1]) << 8)
                | (np.uint32(blk[at + 2]) << 16)) >> shift
        j = 4 * s
        if s < full:
            a0 += lut[j, word & 7]
            a1 += lut[j + 1, (word >> 3) & 7]
            a2 += lut[j + 2, (word >> 6) & 7]
            a3 += lut[j + 3, (word >> 9) & 7]
        else:
            a0 += lut[j, word & 7]
            if j + 1 < M:
                a1 += lut[j + 1, (word >> 3) & 7]
            if j + 2 < M:
                a2 += lut[j + 2, (word >> 6) & 7]
    return (a0 + a1) + (a2 + a3)
