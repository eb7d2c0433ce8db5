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
def read_bits(row, bitpos, bits):
    """Read ``bits`` (<= 8) bits of ``row`` (uint8) starting at bit ``bitpos``."""
    byte = bitpos >> 3
    shift = bitpos & 7
    word = np.uint32(row[byte])
    if shift + bits > 8:
        word |= np.uint32(row[byte + 1]) << 8
    return (word >> shift) & ((1 << bits) - 1)


@njit(inline="always", fastmath=FASTMATH)
def _magnitudes(a, scale, edges, mags, out):
    """``out[j]`` = centroid magnitude of the cell of ``scale * a[j]`` (``a >= 0``).

    Compare-and-add over the positive boundaries: branch-free, so it
    vectorizes across coordinates.
    """
    d = a.shape[0]
    for j in range(d):
        out[j] = mags[0]
    for i in range(edges.shape[0]):
        edge = edges[i]
        step = mags[i + 1] - mags[i]
        for j in range(d):
            out[j] += step * np.float32(scale * a[j] >= edge)


@njit(inline="always")
def _cell_counts(a, scale, edges, out):
    """``out[j]`` = number of positive boundaries <= ``scale * a[j]``."""
    d = a.shape[0]
    for j in range(d):
        out[j] = 0
    for i in range(edges.shape[0]):
        edge = edges[i]
        for j in range(d):
            out[j] += np.int32(scale * a[j] >= edge)


@njit(inline="always")
def pack_row(idx, bits, row):
    """Pack ``idx`` (int32 (d,), values < 2**bits) into ``row`` (see module docstring)."""
    d = idx.shape[0]
    if bits == 8:
        for j in range(d):
            row[j] = idx[j]
    elif bits == 4:
        for t in range(d // 2):
            row[t] = idx[2 * t] | (idx[2 * t + 1] << 4)
        if d % 2:
            row[d // 2] = idx[d - 1]
    elif bits == 2 or bits == 1:
        per = 8 // bits
        for t in range((d + per - 1) // per):
            byte = 0
            for s in range(per):
                j = t * per + s
                if j < d:
                    byte |= idx[j] << (s * bits)
            row[t] = byte
    else:
        for t in range((d * bits + 7) // 8):
            row[t] = 0
        for j in range(d):
            bitpos = j * bits
            word = np.uint32(idx[j]) << (bitpos & 7)
            row[bitpos >> 3] |= np.uint8(word & 0xFF)
            if (bitpos & 7) + bits > 8:
                row[(bitpos >> 3) + 1] |= np.uint8(word >> 8)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def row_norms(x, out):
    """``out[i] = ||x[i]||`` for float32 (n, d) ``x`` (float32 accumulation, like the encoder)."""
    n, d = x.shape
    for i in prange(n):
        acc = np.float32(0.0)
        for j in range(d):
            acc += x[i, j] * x[i, j]
        out[i] = np.sqrt(acc)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def encode_rows(x, unit_first, shift, matrix_t, edges, mags, bits, scales, codes, norms, dots,
                residual):
    """Normalise, rotate, quantize and pack vectors in one pass.

    The codebook is symmetric, so a coordinate is coded by its sign and the
    cell of its magnitude: level ``half + k`` for ``u >= 0`` and
    ``half - 1 - k`` below, ``k`` counting the positive boundaries under ``|u|``.

    With several ``scales``, each vector is coded as ``Q(t * u)`` for the ``t``
    that maximises the cosine between ``u`` and its centroid vector ``c(u)``:
    the grid is rescaled per vector to the one that best keeps its direction,
    which is what ranking by inner product needs (only estimators invariant to
    the scale of ``c(u)`` may use it).

    Each row becomes ``y = R (x / ||x|| if unit_first else x) - shift`` and
    ``u = y / ||y||``.

    Parameters
    ----------
    x : float32 (n, d)
        Input vectors, or already rotated ones when ``matrix_t`` is (0, 0).
    unit_first : bool
        Normalise rows before anything else (cosine).
    shift : float32 (d,) or (0,)
        Subtracted after the rotation: the rotated centering mean, ``R mean``.
    matrix_t : float32 (d, d) or (0, 0)
        Transposed rotation matrix ``R^T``.
    edges : float32 (2**(bits-1) - 1,)
        Positive decision boundaries, increasing.
    mags : float32 (2**(bits-1),)
        Positive centroids, increasing.
    bits : int
        Bits per coordinate, 1 to 8.
    scales : float32 (S,)
        Candidate rescalings; ``[1.0]`` is the plain Lloyd-Max quantizer.
    codes : uint8 (n, >= ceil(d * bits / 8)), written (first bytes of each row)
    norms : float32 (n,), written with ``||y||`` (negated for zero input rows when
        ``unit_first`` and centring: their direction is undefined)
    dots : float32 (n,), written with ``<u, c(u)>``
    residual : float32 (n, d) or (0, 0)
        When it has n rows, written with ``u - c(u)``.
    """
    n, d = x.shape
    half = 1 << (bits - 1)
    rotate = matrix_t.shape[0] == d
    centre = shift.shape[0] == d
    want_residual = residual.shape[0] == n
    n_chunks = (n + 127) // 128
    for chunk in prange(n_chunks):
        u = np.empty(d, dtype=np.float32)
        a = np.empty(d, dtype=np.float32)
        m = np.empty(d, dtype=np.float32)
        k = np.empty(d, dtype=np.int32)
        for i in range(chunk * 128, min(n, chunk * 128 + 128)):
            scale = np.float32(1.0)
            zero_input = False
            if unit_first:
                sq = np.float32(0.0)
                for j in range(d):
                    sq += x[i, j] * x[i, j]
                scale = np.float32(1.0) / np.sqrt(sq) if sq > 0 else np.float32(0.0)
                zero_input = sq == 0
            if rotate:
                # y = sum_j x_j * column_j: contiguous axpys, no horizontal sums
                for r in range(d):
                    u[r] = np.float32(0.0)
                for j in range(d):
                    xj = x[i, j] * scale
                    for r in range(d):
                        u[r] += xj * matrix_t[j, r]
            else:
                for j in range(d):
                    u[j] = x[i, j] * scale
            if centre:
                for j in range(d):
                    u[j] -= shift[j]
            sq = np.float32(0.0)
            for j in range(d):
                sq += u[j] * u[j]
            norm = np.sqrt(sq)
            # a zero vector has no direction: flagged by a negative norm when centring
            norms[i] = -norm if zero_input and centre else norm
            inv = np.float32(1.0) / norm if norm > 0 else np.float32(0.0)
            for j in range(d):
                u[j] *= inv
            for j in range(d):
                a[j] = abs(u[j])
            best = scales[0]
            if scales.shape[0] > 1:
                best_cos = np.float32(-1.0)
                for s in range(scales.shape[0]):
                    _magnitudes(a, scales[s], edges, mags, m)
                    dot = np.float32(0.0)
                    sq = np.float32(0.0)
                    for j in range(d):
                        dot += a[j] * m[j]
                        sq += m[j] * m[j]
                    cos = dot / np.sqrt(sq)
                    if cos > best_cos:
                        best_cos = cos
                        best = scales[s]
            _cell_counts(a, best, edges, k)
            _magnitudes(a, best, edges, mags, m)
            acc = np.float32(0.0)
            for j in range(d):
                acc += a[j] * m[j]
                positive = u[j] >= 0
                k[j] = half + k[j] if positive else half - 1 - k[j]
                if want_residual:
                    residual[i, j] = u[j] - m[j] if positive else u[j] + m[j]
            dots[i] = acc
            pack_row(k, bits, codes[i])


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
    """Inverse of the packing in :func:`encode_rows`.

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
