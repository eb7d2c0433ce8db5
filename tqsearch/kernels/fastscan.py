"""Fast scan of 4-bit sub-codes with 8-bit lookup tables, in a blocked, transposed layout.

A vector's code is a sequence of ``M`` sub-codes of 4 bits (nibbles). For one query a
``uint8`` table ``lut`` of shape ``(M, 16)`` gives each sub-code value's contribution,
and the scanner returns, for every vector ``v``, the integer sum

    S(v) = sum_m lut[m, code_m(v)]

Layout (``BLOCK = 32`` vectors per block)
-----------------------------------------
``blocked`` is ``uint8`` of shape ``(nblocks, 16 * M)`` with ``nblocks = ceil(n / 32)``,
C-contiguous: ``M * 32 / 2`` bytes per block, the same bytes as packed nibbles (only the
last block is padded, with code 0). Vector ``v`` lives in block ``v // 32`` at position
``r = v % 32``. Inside a block, sub-code ``m`` owns the 16 bytes
``blocked[b, 16 * m : 16 * m + 16]``, and

    byte p = 2 * e + j   (e in 0..7, j in 0..1)
        low nibble  (bits 0-3) = code_m of position r = e + 8 * j
        high nibble (bits 4-7) = code_m of position r = e + 8 * j + 16

so position ``r`` is at byte ``2 * (r % 8) + (r // 8) % 2``, in the high nibble iff
``r >= 16``. Why this order: a 16-byte load of sub-code ``m`` is one byte-shuffle index
vector whose table is row ``m`` of ``lut`` (and a 32- or 64-byte load covers sub-codes
``m .. m + 1`` or ``m .. m + 3``, matching rows of the C-contiguous ``lut``); after the
lookup, the even bytes of each 16-bit lane are positions 0..7 and the odd bytes positions
8..15, which is the order the 16-bit accumulators come out in.

Functions
---------
``scan_blocked(blocked, n, M, lut, out)``: all ``n`` sums of one table (checked).
``scan_blocked_multi(blocked, n, M, luts, out)``: several tables, two per pass over a
block and ``QUERY_CHUNK`` per sweep of the codes (checked).
``scan_block(blocked, b, M, lut, out32, group)`` and ``scan_block_multi``: one block,
inlined into ``@njit`` callers for fused top-k loops; they return the block's largest
sum (so a block can be rejected without reading ``out32``) and check nothing: call
``check_block_args`` / ``check_block_multi_args`` once before the loop.
``nibble_at(blocked, M, v, m)``: one sub-code, for exact re-scoring from this layout.

Variants
--------
``portable`` (plain Numba, any CPU), ``avx2`` (32-byte ``vpshufb``) and ``avx512``
(64-byte ``vpshufb``, needs AVX-512BW); all return identical integers. The best
available one is chosen at import; ``TQSEARCH_SIMD=portable|avx2|avx512|auto`` forces a
choice. Every variant has its own functions (``scan_block_avx2``, ...), and
``scan_block`` / ``scan_blocked`` / ... are the chosen variant's. Kernels that call them
and are cached by Numba keep the variant (and the code) they were compiled with: Numba
does not notice changes in called modules, so clear their cache after changing
``TQSEARCH_SIMD`` or this module.

Exactness: sums are accumulated in 16-bit lanes, flushed to 32-bit before they can
overflow, so any ``uint8`` table and any ``M`` < 2**23 give exact ``int32`` sums. With
``group`` = 2 or 4 the kernels add the lookups of 2 or 4 steps as bytes before widening
(fewer instructions per lookup), which is exact when those rows' maxima sum to at most
255: :func:`lut_group` checks that for a table, ``scan_blocked`` uses it by itself, and
:func:`quantize_lut` quantizes float tables so that a chosen group holds.
"""

from __future__ import annotations

import os
import types
import warnings

import numba
import numpy as np
from numba import njit, prange

from ..config import FASTMATH
from . import renamed_copy, simd
from .scan import ZERO_VECTOR_SCORE
from .tables16 import quantize_rows, row_ranges

BLOCK = simd.BLOCK

VARIANTS = ("portable", "avx2", "avx512")
_WIDTH = {"avx2": 32, "avx512": 64}


def available_variants():
    """Variants this CPU (Numba's compile target) can run, slowest first.

    Returns
    -------
    tuple of str
        A subset of ``("portable", "avx2", "avx512")``; ``"portable"`` always.
    """
    if numba.config.DISABLE_JIT:  # the intrinsics only exist in compiled code
        return ("portable",)
    feats = simd.target_features()
    return tuple(v for v in VARIANTS if v == "portable" or simd.width_supported(_WIDTH[v], feats))


def _choose_variant():
    avail = available_variants()
    want = os.environ.get("TQSEARCH_SIMD", "auto").strip().lower() or "auto"
    if want == "auto":
        return avail[-1]
    if want not in VARIANTS:
        warnings.warn(
            f"TQSEARCH_SIMD={want!r} is not one of {VARIANTS + ('auto',)}; using {avail[-1]!r}",
            stacklevel=2,
        )
        return avail[-1]
    if want not in avail:
        fallback = [v for v in avail if VARIANTS.index(v) < VARIANTS.index(want)][-1]
        warnings.warn(
            f"TQSEARCH_SIMD={want!r} is not supported by this CPU; using {fallback!r}",
            stacklevel=2,
        )
        return fallback
    return want


#: The variant behind :func:`scan_block` and :func:`scan_blocked` in this process.
VARIANT = _choose_variant()

#: Whether 4-bit codes can be scored as int8 dot products here (AVX-512 VNNI and
#: VBMI, with the AVX-512 variant chosen): see :mod:`tqsearch.kernels.dotscan`.
DOT_AVAILABLE = VARIANT == "avx512" and simd.dot_supported()


# ---------------------------------------------------------------------------------
# Layout: packing and single-nibble access
# ---------------------------------------------------------------------------------


def n_blocks(n):
    """Number of blocks holding ``n`` vectors: ``ceil(n / BLOCK)``."""
    return -(-int(n) // BLOCK)


def pack_blocked(nibbles):
    """Pack sub-codes into the blocked layout.

    Parameters
    ----------
    nibbles : uint8 (n, M)
        Sub-codes, values 0..15.

    Returns
    -------
    blocked : uint8 (ceil(n / 32), 16 * M), C-contiguous
        See the module docstring; padding vectors have code 0.
    """
    nibbles = np.asarray(nibbles)
    if nibbles.ndim != 2:
        raise ValueError(f"nibbles must be 2-D (n, M), got shape {nibbles.shape}")
    if nibbles.dtype != np.uint8:
        raise TypeError(f"nibbles must be uint8, got {nibbles.dtype}; use nibbles.astype(np.uint8)")
    n, M = nibbles.shape
    if M < 1:
        raise ValueError("nibbles must have at least one sub-code (M >= 1)")
    if n and int(nibbles.max()) > 15:
        raise ValueError("nibbles must hold 4-bit values (0..15)")
    nb = n_blocks(n)
    padded = np.zeros((nb * BLOCK, M), dtype=np.uint8)
    padded[:n] = nibbles
    # (block, high nibble?, j, e, m) -> byte (block, m, e, j)
    x = padded.reshape(nb, 2, 2, 8, M)
    byte = x[:, 0] | (x[:, 1] << 4)
    return np.ascontiguousarray(byte.transpose(0, 3, 2, 1)).reshape(nb, 16 * M)


def unpack_blocked(blocked, n, M):
    """Inverse of :func:`pack_blocked`.

    Parameters
    ----------
    blocked : uint8 (nblocks, 16 * M)
    n : int
        Number of vectors, ``<= 32 * nblocks``.
    M : int
        Sub-codes per vector.

    Returns
    -------
    nibbles : uint8 (n, M)
    """
    blocked = _check_blocked(blocked, n, M)
    nb = blocked.shape[0]
    byte = blocked.reshape(nb, M, 8, 2).transpose(0, 3, 2, 1)  # (block, j, e, m)
    x = np.stack([byte & 0x0F, byte >> 4], axis=1)  # (block, high?, j, e, m)
    return np.ascontiguousarray(x.reshape(nb * BLOCK, M)[:n])


def append_blocked(blocked, n, nibbles):
    """Blocked codes of ``n`` vectors followed by ``nibbles``; re-packs only the last block.

    Parameters
    ----------
    blocked : uint8 (ceil(n / 32), 16 * M)
    n : int
        Vectors already in ``blocked``.
    nibbles : uint8 (n_new, M)

    Returns
    -------
    uint8 (ceil((n + n_new) / 32), 16 * M), a new array.
    """
    nibbles = np.asarray(nibbles)
    if nibbles.ndim != 2:
        raise ValueError(f"nibbles must be 2-D (n, M), got shape {nibbles.shape}")
    M = nibbles.shape[1]
    blocked = _check_blocked(blocked, n, M)
    keep = n // BLOCK
    tail = unpack_blocked(blocked[keep:], n - keep * BLOCK, M)
    new = pack_blocked(np.concatenate([tail, nibbles.astype(np.uint8, copy=False)]))
    return np.concatenate([blocked[:keep], new]) if keep else new


@njit(parallel=True, cache=True)
def scatter_rows(rows, start, blocked):
    """Write packed code rows into the blocked layout at vectors ``start ..``.

    Parameters
    ----------
    rows : uint8 (n, >= ceil(M / 2))
        Packed codes, nibble ``m`` of a row being bits ``4 (m % 2)`` of byte ``m // 2``.
    start : int
        Vector number of ``rows[0]``.
    blocked : uint8 (nblocks, 16 * M), updated in place
        The slots written must hold code 0 (fresh or padding), as the nibbles are OR-ed in.
    """
    n = rows.shape[0]
    M = blocked.shape[1] // 16
    first = start // BLOCK
    last = (start + n + BLOCK - 1) // BLOCK
    for b in prange(first, last):
        for v in range(max(start, b * BLOCK), min(start + n, b * BLOCK + BLOCK)):
            r = v - b * BLOCK
            p = 2 * (r & 7) + ((r >> 3) & 1)
            shift = 4 * (r >> 4)
            row = rows[v - start]
            for m in range(M):
                nib = (row[m >> 1] >> (4 * (m & 1))) & 15
                blocked[b, 16 * m + p] |= np.uint8(nib << shift)


#: Whether stores on this machine keep the full steps of their blocks regrouped per
#: vector (:func:`to_vector_steps`): where the VNNI engines scan them, which then need
#: no regrouping shuffle per step (single queries 5-13 % faster, 2-bit batches
#: 8-14 %). The byte-shuffle engine reads the canonical order.
VECTOR_STEPS = DOT_AVAILABLE


# byte i of a vector-ordered step is byte _VECTOR_STEP[i] of the canonical one: the
# regrouping the VNNI engines did per step, now done once when codes are stored
_VECTOR_STEP = np.array(simd._TO_VECTOR_MAJOR, dtype=np.int64)
_CANONICAL_STEP = np.argsort(_VECTOR_STEP)


@njit(parallel=True, cache=True)
def _regroup_steps(blocked, first, last, source):
    """Regroup the full 64-byte steps of blocks ``first .. last - 1`` in place:
    byte ``i`` of a step becomes its byte ``source[i]`` (:data:`_VECTOR_STEP`:
    byte ``4 L + t`` of a vector-ordered step is byte ``16 t + L`` of the
    canonical one, ``t`` the sub-code within the step and ``L`` the position, so
    that each 32-bit lane holds the four sub-codes of one pair of vectors)."""
    full = 64 * (blocked.shape[1] // 64)
    for b in prange(first, last):
        row = blocked[b]
        tmp = np.empty(64, dtype=np.uint8)
        for at in range(0, full, 64):
            for i in range(64):
                tmp[i] = row[at + source[i]]
            for i in range(64):
                row[at + i] = tmp[i]


def to_vector_steps(blocked, first=0, last=None):
    """Regroup blocks ``first .. last - 1`` of canonical blocked codes (as
    :func:`pack_blocked` lays them out) per vector, in place; a last partial step
    (``M % 4`` sub-codes) stays canonical. Returns ``blocked``."""
    _regroup_steps(blocked, first, blocked.shape[0] if last is None else last, _VECTOR_STEP)
    return blocked


def to_canonical_steps(blocked, first=0, last=None):
    """Inverse of :func:`to_vector_steps`, in place. Returns ``blocked``."""
    _regroup_steps(blocked, first, blocked.shape[0] if last is None else last,
                   _CANONICAL_STEP)
    return blocked


@njit(inline="always")
def nibble_position(M, r, m, vector_steps):
    """Byte of a block holding sub-code ``m`` of its vector ``r`` (the nibble is
    the high one from ``r = 16`` on), in canonical or vector-ordered steps."""
    p = 2 * (r & 7) + ((r >> 3) & 1)
    if vector_steps and m < M - M % 4:
        return 64 * (m >> 2) + 4 * p + (m & 3)
    return 16 * m + p


def _check_blocked(blocked, n, M):
    if not isinstance(blocked, np.ndarray) or blocked.dtype != np.uint8 or blocked.ndim != 2:
        raise TypeError("blocked must be a 2-D uint8 array from pack_blocked()")
    if blocked.shape[1] != 16 * M:
        raise ValueError(
            f"blocked has {blocked.shape[1]} bytes per block, expected 16 * M = {16 * M}"
        )
    if n < 0 or n > blocked.shape[0] * BLOCK:
        raise ValueError(f"n = {n} does not fit {blocked.shape[0]} blocks of {BLOCK}")
    return np.ascontiguousarray(blocked)


@njit(inline="always", cache=True)
def nibble_at(blocked, M, v, m, vector_steps=False):
    """Sub-code ``m`` of vector ``v``, read from the blocked layout.

    Parameters
    ----------
    blocked : uint8 (nblocks, 16 * M)
    M : int
        Sub-codes per vector.
    v, m : int
        Vector and sub-code index; not bounds-checked beyond Numba's own indexing.
    vector_steps : bool
        The full steps are regrouped per vector (:func:`to_vector_steps`).

    Returns
    -------
    int, 0..15
    """
    r = v & (BLOCK - 1)
    byte = blocked[v // BLOCK, nibble_position(M, r, m, vector_steps)]
    return (byte >> (4 * (r >> 4))) & 15


#: Sub-codes per byte-shuffle step of each variant: lane ``l`` of step ``s`` looks up
#: sub-code ``s * STEP + l``. Grouping adds the lookups of ``group`` consecutive steps
#: of a lane as bytes, so its exactness depends on the step.
STEPS = {"portable": 1, "avx2": 2, "avx512": 4}
STEP = STEPS[VARIANT]


@njit(inline="always", cache=True)
def _group_fits(mx, step, group):
    """Whether every lane's sum of ``group`` consecutive steps of maxima is <= 255."""
    niters = (mx.shape[0] // step) // group
    for i in range(niters):
        for lane in range(step):
            total = 0
            for j in range(group):
                total += mx[(i * group + j) * step + lane]
            if total > 255:
                return False
    return True


@njit(cache=True)
def lut_group(lut, step=STEP):
    """Largest ``group`` in (4, 2, 1) for which byte-grouped scanning of ``lut`` is exact.

    The kernels add the lookups of ``group`` consecutive steps (sub-codes ``m``,
    ``m + step``, ..., one per lane) as bytes before widening, which is exact when,
    for every such set, the sum of the rows' maxima is at most 255. ``group * lut.max()
    <= 255`` is enough; :func:`quantize_lut` builds tables that meet it with less loss.

    Parameters
    ----------
    lut : uint8 (M, 16)
    step : int
        Sub-codes per step of the variant that will scan: ``STEPS[variant]``; the
        default is this process's variant.

    Returns
    -------
    int
        4, 2 or 1 (1 is always exact).
    """
    M = lut.shape[0]
    mx = np.empty(M, dtype=np.int64)
    for m in range(M):
        top = lut[m, 0]
        for c in range(1, 16):
            x = lut[m, c]
            top = x if x > top else top
        mx[m] = top
    if _group_fits(mx, step, 4):
        return 4
    if _group_fits(mx, step, 2):
        return 2
    return 1


#: Largest error of one quantized entry, in steps: half a step, and a margin for
#: the float rounding of the entry's position (below 1e-5 steps).
ROUNDING = 0.5 + 2.0 ** -10


@njit(cache=True, fastmath=FASTMATH)
def quantize_lut(T, L, group=1, step=STEP):
    """Quantize a float table to ``uint8`` so that ``group`` is exact for the scanner.

    ``L[m, c] = round((T[m, c] - min_m) / scale)`` with one ``scale`` for the table,
    the smallest for which every entry fits in 8 bits and, when ``group > 1``, every
    grouped set of rows (see :func:`lut_group`) sums to at most 255. Then

        |sum_m T[m, code_m] - (scale * S + bias)| <= err = ROUNDING * scale * M

    where ``S`` is the scanner's integer sum. For TurboQuant tables (row ranges
    proportional to ``|y_m|``) the step for ``group = 2`` is ~1.4x, for ``group = 4``
    ~2.2x, the plain 8-bit step, instead of 2x and 4x for 7- and 6-bit tables.

    Rows are taken whole, as vectors (:mod:`.tables16`).

    Parameters
    ----------
    T : float32 (M, 16), C-contiguous, finite
    L : uint8 (M, 16), C-contiguous, written
    group : int
        1, 2 or 4.
    step : int
        As in :func:`lut_group`.

    Returns
    -------
    scale, bias : float
    err : float
        Bound on the error of any table sum (half a step per row, with margin).
    """
    M = T.shape[0]
    lo = np.empty(M, dtype=np.float32)
    width = np.empty(M, dtype=np.float64)
    row_ranges(T, lo, width)
    need = width.max() / 255.0
    if group > 1:
        # each of the group's entries rounds up by at most 1/2
        room = 255.0 - 0.5 * group
        niters = (M // step) // group
        for i in range(niters):
            for lane in range(step):
                total = 0.0
                for j in range(group):
                    total += width[(i * group + j) * step + lane]
                need = max(need, total / room)
    scale = need if need > 0.0 else 1.0
    bias = 0.0
    for m in range(M):
        bias += np.float64(lo[m])
    quantize_rows(T, lo, 1.0 / scale, L)
    return scale, bias, ROUNDING * scale * M


# ---------------------------------------------------------------------------------
# Argument checks shared by the scanners (compiled into them)
# ---------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _check_tables(blocked, M, lut):
    if M < 1:
        raise ValueError("M must be >= 1")
    if blocked.shape[1] != 16 * M:
        raise ValueError("blocked must have 16 * M bytes per block (shape (nblocks, 16 * M))")
    if lut.shape[0] != M or lut.shape[1] != 16:
        raise ValueError("lut must have shape (M, 16)")


@njit(cache=True)
def check_block_args(blocked, M, lut, out):
    """Validate the arguments of :func:`scan_block` once, before a loop over blocks.

    :func:`scan_block` itself checks nothing (a check inside a caller's per-block loop
    costs as much as scanning a small block); ``block_index`` must then be in
    ``range(blocked.shape[0])``.

    Raises
    ------
    ValueError
        If ``M < 1``, ``blocked`` is not ``(nblocks, 16 * M)``, ``lut`` is not
        ``(M, 16)`` or ``out`` holds fewer than 32 sums.
    """
    _check_tables(blocked, M, lut)
    if out.shape[0] < BLOCK:
        raise ValueError("out must hold at least BLOCK (32) sums")


@njit(inline="always", cache=True)
def _check_scan_call(blocked, n, M, lut, out):
    _check_tables(blocked, M, lut)
    nb = (n + BLOCK - 1) // BLOCK
    if n < 0 or nb > blocked.shape[0]:
        raise ValueError("n exceeds the vectors held by blocked (32 per block)")
    if out.shape[0] < n:
        raise ValueError("out must hold at least n sums")
    return nb


@njit(inline="always", cache=True)
def _check_multi_call(blocked, n, M, luts, out):
    if M < 1:
        raise ValueError("M must be >= 1")
    if blocked.shape[1] != 16 * M:
        raise ValueError("blocked must have 16 * M bytes per block (shape (nblocks, 16 * M))")
    if luts.shape[1] != M or luts.shape[2] != 16:
        raise ValueError("luts must have shape (nq, M, 16)")
    if out.shape[0] != luts.shape[0]:
        raise ValueError("out must have one row per table: shape (nq, >= n)")
    nb = (n + BLOCK - 1) // BLOCK
    if n < 0 or nb > blocked.shape[0]:
        raise ValueError("n exceeds the vectors held by blocked (32 per block)")
    if out.shape[1] < n:
        raise ValueError("out rows must hold at least n sums")
    return nb


@njit(cache=True)
def check_block_multi_args(blocked, M, luts, out):
    """:func:`check_block_args` for :func:`scan_block_multi` (``luts`` (nq, M, 16),
    ``out`` (nq, >= 32))."""
    if M < 1:
        raise ValueError("M must be >= 1")
    if blocked.shape[1] != 16 * M:
        raise ValueError("blocked must have 16 * M bytes per block (shape (nblocks, 16 * M))")
    if luts.shape[1] != M or luts.shape[2] != 16:
        raise ValueError("luts must have shape (nq, M, 16)")
    if out.shape[0] != luts.shape[0] or out.shape[1] < BLOCK:
        raise ValueError("out must have shape (nq, >= 32)")


@njit(cache=True)
def luts_group(luts, step=STEP):
    """:func:`lut_group` for a stack of tables ``uint8 (nq, M, 16)`` (one group for all)."""
    group = 4
    for q in range(luts.shape[0]):
        group = min(group, lut_group(luts[q], step))
        if group == 1:
            break
    return group


# Queries whose tables are scanned together per block in the batch scanners, so the
# block's codes are read from memory once per chunk and then hit L1.
QUERY_CHUNK = 8


# ---------------------------------------------------------------------------------
# portable
# ---------------------------------------------------------------------------------


@njit(inline="always", cache=True)
def _block_portable(blocked, b, M, luts, q, out, start):
    """Sums of block ``b`` for table ``luts[q]`` into flat ``out[start : start + 32]``;
    returns their maximum."""
    top = np.int64(0)
    for p in range(16):
        lo = np.int64(0)  # not a bare 0: uint8 + int stays uint8 in NumPy (JIT disabled)
        hi = np.int64(0)
        for m in range(M):
            byte = blocked[b, 16 * m + p]
            lo += luts[q, m, byte & 15]
            hi += luts[q, m, byte >> 4]
        r = (p >> 1) + 8 * (p & 1)
        out[start + r] = lo
        out[start + r + 16] = hi
        top = max(top, lo, hi)
    return top


@njit(inline="always", cache=True)
def scan_block_portable(blocked, block_index, M, lut, out, group=1):
    """:func:`scan_block` in plain Numba (``group`` is accepted and ignored); unchecked."""
    return _block_portable(blocked, block_index, M, lut.reshape(1, M, 16), 0, out, 0)


@njit(cache=True)
def scan_blocked_portable(blocked, n, M, lut, out):
    """:func:`scan_blocked` in plain Numba."""
    nb = _check_scan_call(blocked, n, M, lut, out)
    luts = lut.reshape(1, M, 16)
    full = nb if out.shape[0] >= nb * BLOCK else nb - 1
    for b in range(full):
        _block_portable(blocked, b, M, luts, 0, out, b * BLOCK)
    if full < nb:
        tmp = np.empty(BLOCK, dtype=out.dtype)
        _block_portable(blocked, full, M, luts, 0, tmp, 0)
        for r in range(n - full * BLOCK):
            out[full * BLOCK + r] = tmp[r]


@njit(inline="always", cache=True)
def scan_block_multi_portable(blocked, block_index, M, luts, out, group=1):
    """:func:`scan_block_multi` in plain Numba; unchecked."""
    flat = out.reshape(out.size)
    for q in range(luts.shape[0]):
        _block_portable(blocked, block_index, M, luts, q, flat, q * out.shape[1])


@njit(inline="always", cache=True)
def _filter_portable(blocked, b, M, luts, q, norms, gains, form, params):
    """Row mask of block ``b`` for table ``q`` (see :func:`scan_blocks_filter`)."""
    pre, dist = form[0], form[1]
    norm_row = b * BLOCK * np.int64(form[2])
    gain_row = b * BLOCK * np.int64(form[3])
    offset = params[3 * q]
    scale = params[3 * q + 1]
    threshold = params[3 * q + 2]
    mask = np.int64(0)
    for p in range(16):
        lo = np.int64(0)
        hi = np.int64(0)
        for m in range(M):
            byte = blocked[b, 16 * m + p]
            lo += luts[q, m, byte & 15]
            hi += luts[q, m, byte >> 4]
        r = (p >> 1) + 8 * (p & 1)
        for rr, total in ((r, lo), (r + 16, hi)):
            n = norms[norm_row + rr]
            fa = pre * n * np.float32(gains[gain_row + rr])
            fc = dist * n * n
            if n < 0:
                fa = np.float32(0.0)
                fc = np.float32(-ZERO_VECTOR_SCORE)
            x = offset + scale * np.float32(total)
            if fa * x - fc > threshold:
                mask |= np.int64(1) << rr
    return mask


@njit(inline="always", cache=True)
def scan_blocks_filter_portable(blocked, block_start, block_stop, M, luts, q, norms, gains, form,
                                params, hit, group=1):
    """:func:`scan_blocks_filter` in plain Numba (``group`` ignored); unchecked."""
    for b in range(block_start, block_stop):
        mask = _filter_portable(blocked, b, M, luts, q, norms, gains, form, params)
        if mask != 0:
            hit[0] = mask
            return b
    return max(block_start, block_stop)


@njit(inline="always", cache=True)
def scan_blocks_filter2_portable(blocked, block_start, block_stop, M, luts, q, norms, gains,
                                 form, params, hit, group=1):
    """:func:`scan_blocks_filter2` in plain Numba; unchecked."""
    for b in range(block_start, block_stop):
        first = _filter_portable(blocked, b, M, luts, q, norms, gains, form, params)
        second = _filter_portable(blocked, b, M, luts, q + 1, norms, gains, form, params)
        mask = first | (second << 32)
        if mask != 0:
            hit[0] = mask
            return b
    return max(block_start, block_stop)


@njit(cache=True)
def scan_blocked_multi_portable(blocked, n, M, luts, out):
    """:func:`scan_blocked_multi` in plain Numba (one table at a time)."""
    _check_multi_call(blocked, n, M, luts, out)
    for q in range(luts.shape[0]):
        scan_blocked_portable(blocked, n, M, luts[q], out[q])


# ---------------------------------------------------------------------------------
# avx2 and avx512: one source, compiled once per width
# ---------------------------------------------------------------------------------

# What the functions below call: a namespace per variant (:func:`_simd_variant`)
# holding that width's intrinsics, its table step and its own compiled helpers.
_ops = None


def _block_simd(blocked, b, M, luts, q, out, start, group):
    """Sums of block ``b`` for table ``q`` of ``luts`` into flat ``out[start : start + 32]``."""
    if group >= 4:
        return _ops.scan_g4(blocked, b, M, luts, q, out, start, BLOCK)
    elif group == 2:
        return _ops.scan_g2(blocked, b, M, luts, q, out, start, BLOCK)
    else:
        return _ops.scan_g1(blocked, b, M, luts, q, out, start, BLOCK)


def _pair_simd(blocked, b, M, luts, q, out, start, stride, group):
    """Tables ``q`` and ``q + 1`` in one pass: sums to ``out[start + i * stride + r]``."""
    if group >= 4:
        return _ops.pair_g4(blocked, b, M, luts, q, out, start, stride)
    elif group == 2:
        return _ops.pair_g2(blocked, b, M, luts, q, out, start, stride)
    else:
        return _ops.pair_g1(blocked, b, M, luts, q, out, start, stride)


def _scan_block_simd(blocked, block_index, M, lut, out, group=1):
    """:func:`scan_block` with this variant's ``vpshufb``; unchecked."""
    return _ops.block(blocked, block_index, M, lut, 0, out, 0, group)


def _scan_blocked_simd(blocked, n, M, lut, out):
    """:func:`scan_blocked` with this variant's ``vpshufb``."""
    nb = _check_scan_call(blocked, n, M, lut, out)
    group = lut_group(lut, _ops.STEP)
    full = nb if out.shape[0] >= nb * BLOCK else nb - 1
    for b in range(full):
        _ops.block(blocked, b, M, lut, 0, out, b * BLOCK, group)
    if full < nb:
        tmp = np.empty(BLOCK, dtype=out.dtype)
        _ops.block(blocked, full, M, lut, 0, tmp, 0, group)
        for r in range(n - full * BLOCK):
            out[full * BLOCK + r] = tmp[r]


def _scan_block_multi_simd(blocked, block_index, M, luts, out, group=1):
    """:func:`scan_block_multi` with this variant's ``vpshufb``; unchecked."""
    nq = luts.shape[0]
    ld = out.shape[1]
    q = 0
    while q + 1 < nq:
        _ops.pair(blocked, block_index, M, luts, q, out, q * ld, ld, group)
        q += 2
    if q < nq:
        _ops.block(blocked, block_index, M, luts, q, out, q * ld, group)


def _scan_blocks_filter_simd(blocked, block_start, block_stop, M, luts, q, norms, gains, form,
                             params, hit, group=1):
    """:func:`scan_blocks_filter` with this variant's ``vpshufb``; unchecked."""
    args = (blocked, block_start, block_stop, M, luts, q, norms, gains, form, params, hit)
    if group >= 4:
        return _ops.filter_g4(*args)
    elif group == 2:
        return _ops.filter_g2(*args)
    else:
        return _ops.filter_g1(*args)


def _scan_blocks_filter2_simd(blocked, block_start, block_stop, M, luts, q, norms, gains, form,
                              params, hit, group=1):
    """:func:`scan_blocks_filter2` with this variant's ``vpshufb``; unchecked."""
    args = (blocked, block_start, block_stop, M, luts, q, norms, gains, form, params, hit)
    if group >= 4:
        return _ops.filter2_g4(*args)
    elif group == 2:
        return _ops.filter2_g2(*args)
    else:
        return _ops.filter2_g1(*args)


def _scan_blocked_multi_simd(blocked, n, M, luts, out):
    """:func:`scan_blocked_multi` with this variant's ``vpshufb``."""
    nb = _check_multi_call(blocked, n, M, luts, out)
    group = luts_group(luts, _ops.STEP)
    nq = luts.shape[0]
    ld = out.shape[1]
    full = nb if ld >= nb * BLOCK else nb - 1
    for c0 in range(0, nq, QUERY_CHUNK):
        c1 = min(c0 + QUERY_CHUNK, nq)
        for b in range(full):
            q = c0
            while q + 1 < c1:
                _ops.pair(blocked, b, M, luts, q, out, q * ld + b * BLOCK, ld, group)
                q += 2
            if q < c1:
                _ops.block(blocked, b, M, luts, q, out, q * ld + b * BLOCK, group)
    if full < nb:
        tmp = np.empty(BLOCK, dtype=out.dtype)
        for q in range(nq):
            _ops.block(blocked, full, M, luts, q, tmp, 0, group)
            for r in range(n - full * BLOCK):
                out[q, full * BLOCK + r] = tmp[r]


def _simd_variant(variant):
    """The ``*_simd`` functions above compiled for ``variant`` ("avx2" or "avx512").

    Each is a renamed copy (its own Numba cache entry, as in
    :func:`tqsearch.kernels.serial_twin`) whose ``_ops`` is a namespace holding
    the variant's intrinsics (:mod:`.simd`) and its compiled helpers. Returns
    that namespace; its attributes ``scan_block``, ``scan_blocked``, ... are the
    variant's kernels.
    """
    ops = types.ModuleType(f"{__name__}.{variant}")
    ops.STEP = STEPS[variant]
    for g in (1, 2, 4):
        setattr(ops, f"scan_g{g}", getattr(simd, f"block_scan_{variant}_g{g}"))
        setattr(ops, f"pair_g{g}", getattr(simd, f"block_scan_{variant}_q2_g{g}"))
        setattr(ops, f"filter_g{g}", getattr(simd, f"block_filter_{variant}_g{g}"))
        setattr(ops, f"filter2_g{g}", getattr(simd, f"block_filter_{variant}_q2_g{g}"))

    def compile_(function, name, inline):
        copy = renamed_copy(function, f"{name}_{variant}", {"_ops": ops})
        return njit(cache=True, inline="always")(copy) if inline else njit(cache=True)(copy)

    ops.block = compile_(_block_simd, "_block", True)
    ops.pair = compile_(_pair_simd, "_pair", True)
    for name, inline in (("scan_block", True), ("scan_blocked", False),
                         ("scan_block_multi", True), ("scan_blocks_filter", False),
                         ("scan_blocks_filter2", True), ("scan_blocked_multi", False)):
        setattr(ops, name, compile_(globals()[f"_{name}_simd"], name, inline))
    return ops


_AVX2 = _simd_variant("avx2")
_AVX512 = _simd_variant("avx512")
scan_block_avx2, scan_block_avx512 = _AVX2.scan_block, _AVX512.scan_block
scan_blocked_avx2, scan_blocked_avx512 = _AVX2.scan_blocked, _AVX512.scan_blocked
scan_block_multi_avx2, scan_block_multi_avx512 = _AVX2.scan_block_multi, _AVX512.scan_block_multi
scan_blocks_filter_avx2 = _AVX2.scan_blocks_filter
scan_blocks_filter_avx512 = _AVX512.scan_blocks_filter
scan_blocks_filter2_avx2 = _AVX2.scan_blocks_filter2
scan_blocks_filter2_avx512 = _AVX512.scan_blocks_filter2
scan_blocked_multi_avx2 = _AVX2.scan_blocked_multi
scan_blocked_multi_avx512 = _AVX512.scan_blocked_multi


# ---------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------

_SCAN_BLOCK = {
    "portable": scan_block_portable,
    "avx2": scan_block_avx2,
    "avx512": scan_block_avx512,
}
_SCAN_BLOCKED = {
    "portable": scan_blocked_portable,
    "avx2": scan_blocked_avx2,
    "avx512": scan_blocked_avx512,
}
_SCAN_BLOCK_MULTI = {
    "portable": scan_block_multi_portable,
    "avx2": scan_block_multi_avx2,
    "avx512": scan_block_multi_avx512,
}
_SCAN_BLOCKED_MULTI = {
    "portable": scan_blocked_multi_portable,
    "avx2": scan_blocked_multi_avx2,
    "avx512": scan_blocked_multi_avx512,
}


_SCAN_BLOCKS_FILTER = {
    "portable": scan_blocks_filter_portable,
    "avx2": scan_blocks_filter_avx2,
    "avx512": scan_blocks_filter_avx512,
}
_SCAN_BLOCKS_FILTER2 = {
    "portable": scan_blocks_filter2_portable,
    "avx2": scan_blocks_filter2_avx2,
    "avx512": scan_blocks_filter2_avx512,
}


def filter_kernels(variant):
    """``(scan_blocks_filter, scan_blocks_filter2)`` of one variant (see :func:`kernels`)."""
    kernels(variant)
    return _SCAN_BLOCKS_FILTER[variant], _SCAN_BLOCKS_FILTER2[variant]


def kernels(variant):
    """``(scan_block, scan_blocked, scan_block_multi, scan_blocked_multi)`` of one variant.

    Parameters
    ----------
    variant : {"portable", "avx2", "avx512"}

    Raises
    ------
    ValueError
        If the variant is unknown or this CPU cannot run it.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant not in available_variants():
        raise ValueError(
            f"variant {variant!r} needs CPU features this machine lacks; "
            f"available: {available_variants()}"
        )
    return (
        _SCAN_BLOCK[variant],
        _SCAN_BLOCKED[variant],
        _SCAN_BLOCK_MULTI[variant],
        _SCAN_BLOCKED_MULTI[variant],
    )


#: ``scan_block(blocked, block_index, M, lut, out, group=1)``: the ``BLOCK`` sums of
#: block ``block_index`` into ``out[:32]`` (int32 or uint32, C-contiguous); ``group``
#: from :func:`lut_group` (1 is always exact). Returns the largest of the 32 sums
#: (padding vectors of the last block included), from registers: a top-k loop can
#: skip the block when it is not above its threshold. Inlined into ``@njit`` callers
#: and unchecked: call :func:`check_block_args` once before the loop over blocks.
scan_block = _SCAN_BLOCK[VARIANT]

#: ``scan_blocked(blocked, n, M, lut, out)``: ``out[v] = sum_m lut[m, code_m(v)]`` for
#: ``v < n``; ``out`` int32 or uint32 of length >= n (a length of ``32 * nblocks`` avoids
#: a copy for the last block). Chooses ``group`` itself. Callable from ``@njit`` code.
scan_blocked = _SCAN_BLOCKED[VARIANT]

#: ``scan_block_multi(blocked, block_index, M, luts, out, group=1)``: block
#: ``block_index`` against every table of ``luts`` (uint8 (nq, M, 16)) into
#: ``out[q, :32]`` (``out`` int32/uint32 (nq, >= 32), C-contiguous); two tables share
#: each pass over the block's codes. ``group`` from :func:`luts_group`. Unchecked:
#: call :func:`check_block_multi_args` once before the loop.
scan_block_multi = _SCAN_BLOCK_MULTI[VARIANT]

#: ``scan_blocked_multi(blocked, n, M, luts, out)``: ``out[q, v]`` = sums for table
#: ``q`` of ``luts`` (uint8 (nq, M, 16)), ``out`` int32/uint32 (nq, >= n) C-contiguous.
#: Scans ``QUERY_CHUNK`` tables per sweep of the codes, two per pass over a block.
scan_blocked_multi = _SCAN_BLOCKED_MULTI[VARIANT]

#: ``scan_blocks_filter(blocked, block_start, block_stop, M, luts, q, norms, gains, form,
#: params, hit, group=1)``: scans blocks ``block_start .. block_stop - 1`` with table
#: ``q`` of ``luts`` (uint8 (nq, M, 16)) until one has a row that passes, and
#: returns that block's index (``block_stop`` when none does), its int64 bit mask
#: in ``hit[0]``: bit ``r`` is set iff ``fa(v) * (offset + scale * S(v)) - fc(v) >
#: threshold`` for ``v = 32 * b + r``, in float32, with ``(offset, scale,
#: threshold) = params[3 * q : 3 * q + 3]`` (``params`` float32, flat) and the
#: per-vector factors computed from ``norms`` / ``gains`` as
#: :func:`tqsearch.kernels.simd.emit_row_factors` says (``form`` a tuple of float32
#: ``(pre, dist, norm_step, gain_step)``). The sums stay in registers and the loop
#: over blocks in one function until a row passes: this is the fused candidate
#: test of a top-k scan, which then takes the rows and goes on from ``b + 1``.
#: ``group`` from :func:`lut_group`. Inlined and unchecked.
scan_blocks_filter = _SCAN_BLOCKS_FILTER[VARIANT]

#: ``scan_blocks_filter2(...)``: :func:`scan_blocks_filter` for tables ``q`` and
#: ``q + 1`` in one pass over each block; table ``q + 1``'s mask in bits 32..63.
scan_blocks_filter2 = _SCAN_BLOCKS_FILTER2[VARIANT]
