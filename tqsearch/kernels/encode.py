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
from .lanes import (
    LANES,
    add_row,
    centre_rows,
    grid_cells,
    grid_fit,
    move_row,
    scale_lanes,
    store_block,
)
from .rotate import load_rows, rotate_tile

# Tiles coded per parallel task (scratch is allocated once per task); whole blocks of
# the fast-scan layout.
_TILES_PER_TASK = 16


@njit(inline="always")
def read_bits(row, bitpos, bits):
    """Read ``bits`` (<= 8) bits of ``row`` (uint8) starting at bit ``bitpos``."""
    byte = bitpos >> 3
    shift = bitpos & 7
    word = np.uint32(row[byte])
    if shift + bits > 8:
        word |= np.uint32(row[byte + 1]) << 8
    return (word >> shift) & ((1 << bits) - 1)


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


@njit(cache=True, fastmath=FASTMATH)
def prepare_rows(x, unit, mean, out, sq_norms):
    """``out[i] = x[i] / ||x[i]|| (if unit) - mean``, and ``sq_norms[i] = ||out[i]||^2``.

    The query side of the codec in one pass (zero rows stay zero before the
    mean is subtracted).

    Parameters
    ----------
    x : float32 (n, d)
    unit : bool
    mean : float32 (d,) or (0,)
        Subtracted when it has ``d`` entries.
    out : float32 (n, d), written
    sq_norms : float32 (n,), written
    """
    n, d = x.shape
    centre = mean.shape[0] == d
    for i in range(n):
        scale = np.float32(1.0)
        if unit:
            acc = np.float32(0.0)
            for j in range(d):
                acc += x[i, j] * x[i, j]
            scale = np.float32(1.0) / np.sqrt(acc) if acc > 0 else np.float32(1.0)
        sq = np.float32(0.0)
        for j in range(d):
            v = x[i, j] * scale
            if centre:
                v -= mean[j]
            out[i, j] = v
            sq += v * v
        sq_norms[i] = sq


@njit(cache=True, fastmath=FASTMATH)
def column_sums(x, unit, out):
    """``out = sum_i x[i]`` (``x[i] / ||x[i]||`` if ``unit``), accumulated in float64.

    Parameters
    ----------
    x : float32 (n, d)
    unit : bool
        Normalise rows first (zero rows add nothing).
    out : float64 (d,), written
    """
    n, d = x.shape
    for j in range(d):
        out[j] = 0.0
    for i in range(n):
        w = 1.0
        if unit:
            sq = np.float32(0.0)
            for j in range(d):
                sq += x[i, j] * x[i, j]
            w = 1.0 / np.sqrt(sq) if sq > 0 else 0.0
        for j in range(d):
            out[j] += w * x[i, j]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def encode_rows(x, unit_first, shift, pre, matrix, signs, factors, perms, offsets, block,
                edges, mags, bits, scales, codes, blocked, first_block, norms, dots, residual):
    """Normalise, rotate, quantize and pack vectors, ``LANES`` vectors at a time.

    Vectors are processed as transposed tiles (see :mod:`.rotate`), so every
    step below -- rotation, centring, norms, the cell search -- is a SIMD
    operation across the vectors of a tile.

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
    unit_first : bool
        Normalise rows before anything else (cosine).
    shift : float32 (d,) or (0,)
        Subtracted after the rotation: the rotated centering mean, ``R mean``.
    pre, matrix, signs, factors, perms, offsets, block
        The forward rotation (:meth:`tqsearch.rotation.Rotation.kernel_args`).
    edges : float32 (2**(bits-1) - 1,)
        Positive decision boundaries, increasing.
    mags : float32 (2**(bits-1),)
        Positive centroids, increasing.
    bits : int
        Bits per coordinate, 1 to 8.
    scales : float32 (S,)
        Candidate rescalings; ``[1.0]`` is the plain Lloyd-Max quantizer.
    codes : uint8 (n, >= ceil(d * bits / 8)) or (n, 0)
        Packed rows, written (first bytes of each row) unless ``blocked`` is used.
    blocked : uint8 (nblocks, 16 * M) or (0, 0)
        When it has rows (1, 2 or 4 bits), the codes go straight into the
        fast-scan layout of :mod:`.fastscan` instead, ``x[0]`` being the first
        vector of block ``first_block``; every byte of the blocks covered is
        written (padding slots get code 0).
    first_block : int
    norms : float32 (n,), written with ``||y||`` (negated for zero input rows when
        ``unit_first`` and centring: their direction is undefined)
    dots : float32 (n,), written with ``<u, c(u)>``
    residual : float32 (n, d) or (0, 0)
        When it has n rows, written with ``u - c(u)``.
    """
    n, d = x.shape
    n_tiles = (n + LANES - 1) // LANES
    to_blocks = blocked.shape[0] > 0
    nibbles = blocked.shape[1] // 16
    # scratch is allocated once per group of tiles (whole blocks), not per tile
    for group in prange((n_tiles + _TILES_PER_TASK - 1) // _TILES_PER_TASK):
        t0 = np.empty((d, LANES), dtype=np.float32)
        spare0 = np.empty((d, LANES), dtype=np.float32)
        packed = np.empty((max(d, 1), LANES), dtype=np.float32)
        cells = np.empty(d, dtype=np.int32)
        per_lane = np.empty((_PER_LANE_ROWS, LANES), dtype=np.float32)
        quarters = np.zeros((_TILES_PER_BLOCK, nibbles, LANES), dtype=np.float32)
        for tile in range(group * _TILES_PER_TASK, min(n_tiles, (group + 1) * _TILES_PER_TASK)):
            first = tile * LANES
            live = min(LANES, n - first)
            t0[:] = 0.0
            levels = _encode_tile(x, first, unit_first, shift, pre, matrix, signs, factors,
                                  perms, offsets, block, edges, mags, scales, norms, dots,
                                  residual, t0, spare0, per_lane)
            if to_blocks:
                quarter = tile % _TILES_PER_BLOCK
                _nibble_rows(levels, bits, live, quarters[quarter])
                if quarter == _TILES_PER_BLOCK - 1 or tile == n_tiles - 1:
                    for rest in range(quarter + 1, _TILES_PER_BLOCK):
                        quarters[rest][:] = 0.0
                    store_block(blocked, first_block + tile // _TILES_PER_BLOCK, quarters[0],
                                quarters[1], quarters[2], quarters[3])
            else:
                _pack_tile(levels, bits, first, live, codes, packed, cells)


_NO_SHIFT = np.empty(0, dtype=np.float32)

# Rows of the per-lane scratch of _encode_tile.
_PER_LANE_ROWS = 8

# Tiles per block of the fast-scan layout (32 vectors).
_TILES_PER_BLOCK = 4


@njit(inline="always", fastmath=FASTMATH)
def _nibble_rows(levels, bits, live, out):
    """Nibbles (float32 (M, LANES)) of a tile of levels at 1, 2 or 4 bits; 0 in empty lanes."""
    d = levels.shape[0]
    per = 4 // bits
    for m in range(out.shape[0]):
        move_row(out, m, levels, m * per, np.float32(1.0))
        for sub in range(1, min(per, d - m * per)):
            add_row(out, m, levels, m * per + sub, np.float32(1 << (bits * sub)))
    for lane in range(live, LANES):
        for m in range(out.shape[0]):
            out[m, lane] = 0.0


@njit(inline="always", fastmath=FASTMATH)
def _pack_tile(levels, bits, first, live, codes, packed, cells):
    """Write the packed rows of a tile's ``live`` vectors into ``codes``."""
    d = levels.shape[0]
    if bits == 1 or bits == 2 or bits == 4 or bits == 8:
        # whole coordinates per byte: form the bytes as rows, then store them per vector
        per = 8 // bits
        n_bytes = (d + per - 1) // per
        for q in range(n_bytes):
            move_row(packed, q, levels, q * per, np.float32(1.0))
            for sub in range(1, min(per, d - q * per)):
                add_row(packed, q, levels, q * per + sub, np.float32(1 << (bits * sub)))
        for lane in range(live):
            for q in range(n_bytes):
                codes[first + lane, q] = np.uint8(np.int32(packed[q, lane]))
    else:
        for lane in range(live):
            for j in range(d):
                cells[j] = np.int32(levels[j, lane])
            pack_row(cells, bits, codes[first + lane])


@njit(inline="always", fastmath=FASTMATH)
def _encode_tile(x, first, unit_first, shift, pre, matrix, signs, factors, perms, offsets, block,
                 edges, mags, scales, norms, dots, residual, t, spare, per_lane):
    """Code rows ``first .. first + LANES`` (fewer at the end); returns their levels.

    The levels (float32 (d, LANES)) are the signed cell indices, in one of the
    scratch tiles ``t`` / ``spare``.
    """
    n, d = x.shape
    half = mags.shape[0]
    centre = shift.shape[0] == d
    want_residual = residual.shape[0] == n
    live = min(LANES, n - first)
    unit_scale, zero_input, sq, dot, inv, grid, best, best_cos = (
        per_lane[0], per_lane[1], per_lane[2], per_lane[3], per_lane[4], per_lane[5],
        per_lane[6], per_lane[7])
    unit_scale[:] = 1.0
    zero_input[:] = 0.0
    best[:] = scales[0]
    best_cos[:] = -np.inf

    # load and rotate, transposed; cosine normalises by ||x|| (which the rotation keeps)
    load_rows(t, x, first, live, pre)
    if unit_first:
        centre_rows(t, _NO_SHIFT, sq)
        for lane in range(LANES):
            zero_input[lane] = 1.0 if sq[lane] == 0 else 0.0
            unit_scale[lane] = np.float32(1.0) / np.sqrt(sq[lane]) if sq[lane] > 0 else 0.0
    t, spare = rotate_tile(t, spare, matrix, signs, factors, perms, offsets, block, False)
    if unit_first:
        scale_lanes(t, unit_scale)

    # centre and normalise: t holds the unit vectors u
    centre_rows(t, shift, sq)
    for lane in range(LANES):
        norm = np.sqrt(sq[lane])
        if lane < live:
            # a zero vector has no direction: flagged by a negative norm when centring
            norms[first + lane] = -norm if zero_input[lane] > 0 and centre else norm
        inv[lane] = np.float32(1.0) / norm if norm > 0 else np.float32(0.0)
    scale_lanes(t, inv)

    # per-vector grid scale: the one whose centroids keep the direction best
    if scales.shape[0] > 1:
        for s in range(scales.shape[0]):
            grid[:] = scales[s]
            grid_fit(t, grid, edges, mags, dot, sq, spare)
            for lane in range(LANES):
                cos = dot[lane] / np.sqrt(sq[lane])
                if cos > best_cos[lane]:
                    best_cos[lane] = cos
                    best[lane] = scales[s]

    # levels of the chosen grid (in spare), residuals, packing
    grid_cells(t, best, edges, mags, dot, sq, spare)
    for lane in range(live):
        dots[first + lane] = dot[lane]
    if want_residual:
        for lane in range(live):
            for j in range(d):
                level = np.int32(spare[j, lane])
                c = mags[level - half] if level >= half else -mags[half - 1 - level]
                residual[first + lane, j] = t[j, lane] - c
    return spare


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
