"""Scalar quantization and bit packing of rotated unit vectors.

Bit layout of one vector's code (shared by every kernel and by the on-disk
format): coordinate ``j`` occupies bits ``[j*b, (j+1)*b)`` of the row, bit
``t`` of the row being bit ``t % 8`` of byte ``t // 8`` (little-endian). At
``b`` in {1, 2, 4, 8} every byte therefore holds whole coordinates: at 4 bits
coordinate ``2i`` is the low nibble of byte ``i``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH


@njit(inline="always")
def cell_index(value, boundaries):
    """Number of boundaries <= value (binary search; boundaries sorted)."""
    lo = 0
    hi = boundaries.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if boundaries[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(inline="always")
def read_bits(row, bitpos, bits):
    """Read ``bits`` (<= 8) bits of ``row`` (uint8) starting at bit ``bitpos``."""
    byte = bitpos >> 3
    shift = bitpos & 7
    word = np.uint32(row[byte])
    if shift + bits > 8:
        word |= np.uint32(row[byte + 1]) << 8
    return (word >> shift) & ((1 << bits) - 1)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def quantize_pack(u, boundaries, centroids, bits, codes, dots, residual):
    """Code rotated unit vectors with a scalar codebook and pack the indices.

    Parameters
    ----------
    u : float32 (n, d)
        Rotated vectors of unit norm (rows of zeros are allowed).
    boundaries : float32 (2**bits - 1,)
    centroids : float32 (2**bits,)
    bits : int
        Bits per coordinate, 0 to 8 (0 codes nothing: the QJL-only case).
    codes : uint8 (n, >= ceil(d * bits / 8)), written (first bytes of each row)
    dots : float32 (n,), written: ``<u, c[idx]>``
    residual : float32 (n, d) or (0, 0)
        If it has n rows, written with ``u - c[idx]``.
    """
    n, d = u.shape
    nbytes = (d * bits + 7) // 8
    want_residual = residual.shape[0] == n
    for i in prange(n):
        for t in range(nbytes):
            codes[i, t] = 0
        acc = np.float32(0.0)
        for j in range(d):
            value = u[i, j]
            rec = np.float32(0.0)
            if bits > 0:
                idx = cell_index(value, boundaries)
                rec = centroids[idx]
                bitpos = j * bits
                byte = bitpos >> 3
                shift = bitpos & 7
                word = np.uint32(idx) << shift
                codes[i, byte] |= np.uint8(word & 0xFF)
                if shift + bits > 8:
                    codes[i, byte + 1] |= np.uint8(word >> 8)
            acc += value * rec
            if want_residual:
                residual[i, j] = value - rec
        dots[i] = acc


@njit(parallel=True, cache=True)
def pack_signs(x, codes, offset):
    """Pack ``x > 0`` as one bit per coordinate into ``codes[:, offset:]``.

    Parameters
    ----------
    x : float32 (n, d)
    codes : uint8 (n, >= offset + ceil(d / 8)), written
    offset : int
        First byte of the sign field in each row.
    """
    n, d = x.shape
    for i in prange(n):
        for t in range((d + 7) // 8):
            codes[i, offset + t] = 0
        for j in range(d):
            if x[i, j] > 0:
                codes[i, offset + (j >> 3)] |= np.uint8(1 << (j & 7))


@njit(parallel=True, cache=True)
def unpack_indices(codes, d, bits, out):
    """Inverse of the packing in :func:`quantize_pack`.

    Parameters
    ----------
    codes : uint8 (n, >= ceil(d * bits / 8))
    d, bits : int
    out : uint8 (n, d), written with cell indices
    """
    n = codes.shape[0]
    for i in prange(n):
        row = codes[i]
        for j in range(d):
            out[i, j] = read_bits(row, j * bits, bits)
