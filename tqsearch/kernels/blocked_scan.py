"""Top-k scan of codes in the fast-scan (blocked 4-bit) layout, and of 3-bit codes.

Codes whose bits per coordinate divide 4 (1, 2 or 4) are stored as ``M``
nibbles per vector in the layout of :mod:`tqsearch.kernels.fastscan` (3-bit
codes in that of :mod:`tqsearch.kernels.triplets`, scanned only by
``ENGINE_DOT3``, as int8 dot products like 4-bit codes). Per
query the float table ``T`` (M, 16) is quantized to ``uint8`` (one scale per
query; for the byte-shuffle engine coarse enough that two steps of lookups add
as bytes, ``TABLE_GROUP``); the SIMD scanner sums a block of 32 vectors at a
time and, without the sums leaving the registers, tests every row's *upper
bound* against the current top-k threshold
(:func:`tqsearch.kernels.fastscan.scan_blocks_filter`). Only the rows that pass
are re-scored exactly with ``T``. The bound is rigorous, so results equal those
of a float scan of the same codes (up to the order of float additions).

The bound of a row is affine in its integer sum ``S``::

    estimate <= fa[v] * (offset + scale * S) - fc[v]

with ``offset = bias + err`` (``err`` the largest rounding error of the
quantized table, summed over sub-codes) and per-vector factors formed in
registers from the stored norms and gains (:func:`filter_fields`):
``fa = norm * gain`` and ``fc = 0``, or in the distance form (``2 n s - n^2``)
``fa = 2 * norm * gain`` and ``fc = norm^2`` (``gain`` is 1 for the "mse"
estimator, ``norm`` 1 when none is stored). Nothing per vector is kept beside
the stored fields. The filter's
float32 arithmetic differs from the exact score's, so the threshold it tests
against is lowered by a relative margin (:func:`_lowered`) far above the
rounding error.

Batches go in groups of queries that scan the codes a cache-sized tile of
blocks at a time, so that codes are read from memory once per group rather
than once per query. Within a tile an *engine* (:func:`scan_engine`) scores
the blocks: byte shuffles with 16-bit sums, two queries sharing each pass
(every SIMD variant); or, where AVX-512 VNNI and VBMI exist, eight queries a
pass with 64-byte table lookups summed by byte dot products (tables quantized
to the full 8 bits, ``group = 1``), or, for 4-bit TurboQuant codes, int8 dot
products of the quantized query with the codebook levels
(:mod:`tqsearch.kernels.dotscan`). All test the same rigorous bound.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH
from . import serial_twin, triplets
from .bits import lowest_bit
from .books import book_lut
from .borrow import borrowed, keep_alive
from .dotscan import DOT_AVAILABLE, QUERIES_PER_PASS, dot_levels, prepare_dot
from .fastscan import (
    BLOCK,
    lut_group,
    quantize_lut,
    scan_blocks_filter,
    scan_blocks_filter2,
)
from .rescore16 import level_sum, level_sum_pairs, level_sum_quads
from .scan import GAIN_ONE, MODE_CORRECTED, ZERO_VECTOR_SCORE, build_field_lut, combine_factors
from .simd import (
    block_dot_filter_q1,
    block_dot_filter_q8,
    block_perm_filter_q1,
    block_perm_filter_q8,
    block_triplet_dot_filter_q1,
    block_triplet_dot_filter_q8,
)
from .topk import bound_push, heap_init, heap_push

__all__ = ["scan_blocked_topk", "scan_blocked_topk_serial", "filter_fields", "tile_blocks_for",
           "scan_engine", "ENGINE_SHUFFLE", "ENGINE_PERM", "ENGINE_DOT", "ENGINE_DOT3",
           "MODE_CORRECTED", "GAIN_ONE"]

# Relative margin of the filter's threshold: covers the float32 rounding of
# ``fa * x - fc`` against the exact score's own order of operations (a few ulps
# of ``|score| + norm^2``, i.e. ~1e-7 relative), with a wide safety factor.
MARGIN = 1e-5

# Queries per task of a batch, and bytes of codes per tile they scan together:
# a tile stays in the core's L2 cache while every query of the group reads it.
GROUP_QUERIES = 16
# Query tables are quantized so that lookups of two consecutive steps add as bytes
# before widening to 16 bits (``fastscan.quantize_lut`` with ``group=2``): a step
# about 1.4x coarser than the finest, so the bound is a little looser, but the
# scan does a third fewer widening operations. Measured at 2 bits, one thread:
# batch QPS +5-13 %, single-query latency -3-10 % (more for the PCA codec), the
# extra rows re-scored cost less than the widening saved; 4 was no better.
TABLE_GROUP = 2
TILE_BYTES = 256 * 1024
# When the VNNI engines hold the rows that pass for re-scoring at the end
# (:func:`_defer`) instead of re-scoring them as they pass: an exact re-score
# costs M lookups, holding costs a looser threshold (lower bounds instead of exact
# scores), a few more rows passing and float64 bounds per row. Held: for a query
# alone, codes of DEFER_SUB_CODES sub-codes or more, and scans of at most
# DEFER_SHORT_BLOCKS blocks (their first blocks, before any threshold, are a large
# share). Measured, batches of 1,000, one thread, k = 10 against re-scoring as
# rows pass: 128 sub-codes (4-bit d = 128) +12 %, 192 and 384 +6 % and +22 %, the
# PCA codec at 128 and 192 +8 % and +15 %; 25-64 sub-codes over 100,000-200,000
# codes -1.5 to +1 % (PCA at 64 -13 %, k = 100 at 25 -4 %); 5,000 and 20,000
# codes +1 to +61 %. Rows held per query, at least HELD_ROWS and HELD_PER_RESULT
# for each of the k results (never more than the rows scanned): when full, those
# that may still be among the best are re-scored against a threshold lower than
# the final one. At k = 100 on the 384-d set, 512 rows made 4-bit batches 1.3x
# slower than 3,200.
DEFER_SUB_CODES = 128
# 1- and 2-bit TurboQuant codes of at least this many sub-codes are re-scored from the
# codebook (:mod:`.rescore16`, 16 sub-codes a step) rather than the float table.
# Measured against the table, one thread, batches of 1,000: 2 bits, 64 sub-codes
# (128-d) +4 % at k = 10 and +14 % at k = 100, 192 (384-d) +0-2.5 % and +9 %, over
# 5,000 codes +4-7 % and +20 %; 1 bit, 96 sub-codes +2 % and +6 %; but 25 sub-codes
# (50-d at 2 bits: one step of 16, the rest one by one) -6 % and -14 %.
LEVEL_SUM_SUB_CODES = 64
DEFER_SHORT_BLOCKS = 1024
HELD_ROWS = 512
HELD_PER_RESULT = 32


def filter_fields(norms, gains, n, mode, distance_form):
    """What the scan filter reads to form its per-vector factors (see the module docstring).

    Parameters
    ----------
    norms : float32 (>= 32 * ceil(n / 32),) or (0,)
        Stored norms, zero-padded to whole blocks (as the store keeps them).
    gains : uint16 (>= 32 * ceil(n / 32),) or (0,)
    n : int
        Vectors stored.
    mode : int
        ``MODE_MSE`` or ``MODE_CORRECTED``.
    distance_form : bool

    Returns
    -------
    filter_norms : float32
        ``norms``, or 32 ones shared by every block when none are stored.
    filter_gains : uint16
        ``gains`` for the corrected estimator, else 32 times ``GAIN_ONE``.
    form : float32 (4,)
        ``(pre, dist, norm_step, gain_step)``: ``fa = pre * norm * gain``,
        ``fc = dist * norm^2``; a step is 0 for a shared stand-in.
    fc_max : float
        Largest ``fc`` (enters the threshold margin).
    """
    has_norms = norms.shape[0] > 0
    has_gains = mode == MODE_CORRECTED
    filter_norms = norms if has_norms else np.ones(BLOCK, dtype=np.float32)
    filter_gains = gains if has_gains else np.full(BLOCK, GAIN_ONE, dtype=np.uint16)
    pre = (2.0 if distance_form and has_norms else 1.0) / GAIN_ONE
    dist = 1.0 if distance_form and has_norms else 0.0
    form = np.array([pre, dist, float(has_norms), float(has_gains)], dtype=np.float32)
    fc_max = 0.0
    if has_norms and n:
        nv = norms[:n]
        if distance_form:
            fc_max = float(np.float64(nv.max()) ** 2)
            fc_max = max(fc_max, float(np.float64(nv.min()) ** 2))
            if nv.min() < 0:
                fc_max = max(fc_max, -ZERO_VECTOR_SCORE)
    return filter_norms, filter_gains, form, fc_max


# Not inlined, and without fast-math: the sum's order of additions is fixed, so every
# caller (serial or threaded, any batch size) gets the same float32 result.
@njit(cache=True)
def _nibble_sum(blocked, M, v, luts, q, vector_steps):
    """Float table sum of vector ``v`` as four interleaved partial sums: independent
    adds, not one chain of ``M`` dependent ones. ``vector_steps``: the block's full
    steps are regrouped per vector (:func:`.fastscan.to_vector_steps`)."""
    r = v & (BLOCK - 1)
    p = 2 * (r & 7) + ((r >> 3) & 1)  # as in nibble_at
    shift = 4 * (r >> 4)
    row = blocked[v // BLOCK]
    lut = luts[q]
    # sub-code m + i of a full step: byte at + stride * i
    at, stride = (4 * p, 1) if vector_steps else (p, 16)
    a0 = a1 = a2 = a3 = np.float32(0.0)
    m = 0
    while m + 4 <= M:
        base = 16 * m + at
        a0 += lut[m, (row[base] >> shift) & 15]
        a1 += lut[m + 1, (row[base + stride] >> shift) & 15]
        a2 += lut[m + 2, (row[base + 2 * stride] >> shift) & 15]
        a3 += lut[m + 3, (row[base + 3 * stride] >> shift) & 15]
        m += 4
    while m < M:  # a last partial step is canonical
        a0 += lut[m, (row[16 * m + p] >> shift) & 15]
        m += 1
    return (a0 + a1) + (a2 + a3)


if DOT_AVAILABLE:

    # A function of its own, like _nibble_sum; rescore16's arithmetic (explicit
    # rounding) keeps one order of additions wherever LLVM inlines it.
    @njit(cache=True)
    def _level_sum(blocked, M, v, y, q, centroids, per):
        """Exact score sum of vector ``v``'s codes for query ``y[q]`` from the
        codebook, ``per`` coordinates a nibble (:mod:`.rescore16`: no table)."""
        if per == 1:
            return level_sum(blocked, M, v, y, q, centroids)
        if per == 2:
            return level_sum_pairs(blocked, M, v, y, q, centroids)
        return level_sum_quads(blocked, M, v, y, q, centroids)

else:

    @njit(cache=True)
    def _level_sum(blocked, M, v, y, q, centroids, per):
        """Never called: the VNNI engines are only chosen where VNNI is available."""
        return np.float32(0.0)


@njit(inline="always")
def _exact_sum(engine, blocked, M, v, exact, q):
    """Float table sum of vector ``v``'s ``M`` codes for query ``q`` of a group,
    in a fixed order: from the query and the codebook where ``per`` says so
    (:mod:`.rescore16`), else from the float table, by nibbles (full steps
    regrouped per vector for the VNNI engines) or in the 3-bit layout of
    :mod:`.triplets` when the engine scans it. ``exact = (luts, y, q0, book16,
    per)``: the group's tables (none for ``ENGINE_DOT``), the rotated queries,
    the group's first query, the codebook padded to 16 entries and the
    coordinates a nibble of codes re-scored from it (0: from the table)."""
    luts, y, q0, book16, per = exact
    if per > 0:
        return _level_sum(blocked, M, v, y, q0 + q, book16, per)
    if engine == ENGINE_DOT3:
        return triplets.exact_sum(blocked, M, v, luts, q)
    return _nibble_sum(blocked, M, v, luts, q, engine != ENGINE_SHUFFLE)


@njit(inline="always")
def _lowered(threshold, fc_max):
    """The filter's threshold: ``threshold`` minus the rounding margin (-inf when empty)."""
    t = np.float64(threshold)
    return np.float32(t - MARGIN * (abs(t) + fc_max))


@njit(inline="always", fastmath=FASTMATH)
def _prepare(y, centroids, bits, coords, books, luts, luts_u8, q, params, bounds, group):
    """Float and quantized tables of one query, and its filter's offset and scale.

    The table comes from the nibble codebooks ``books`` when there are any
    (the PCA codec, :mod:`.books`), else from the scalar ``centroids``.
    The quantized table is exact for scanners adding ``group`` steps as bytes
    (:func:`.fastscan.quantize_lut`). Writes ``luts[q]``, ``luts_u8[q]``,
    ``params[3 q : 3 q + 2]`` and ``bounds[q] = (bias - err, bias + err,
    scale)`` (the table sum lies in ``scale * S + [bias - err, bias + err]``);
    returns the byte grouping that is exact for the quantized table.
    """
    M = luts.shape[1]
    lut = luts[q]
    if books.shape[0] > 0:
        book_lut(y, coords, books, lut)
    else:
        build_field_lut(y, centroids, bits, lut)
    # err: bound on |float table sum - (bias + scale * integer sum)|
    scale, bias, err = quantize_lut(lut, luts_u8[q], group)
    # float32 rounding of the exact sums and of the filter's own arithmetic, with margin
    err = err * 1.0001 + 1e-6 * (abs(bias) + scale * 255.0 * M)
    params[3 * q] = np.float32(bias + err)
    params[3 * q + 1] = np.float32(scale)
    bounds[q, 0] = bias - err
    bounds[q, 1] = bias + err
    bounds[q, 2] = scale
    return lut_group(luts_u8[q]) if group > 1 else 1


@njit(inline="always")
def _range_mask(base, start, stop):
    """Bits of the rows ``r`` of a block starting at vector ``base`` with
    ``start <= base + r < stop``."""
    lo = max(start - base, 0)
    hi = min(stop - base, BLOCK)
    if hi <= lo:
        return np.int64(0)
    return ((np.int64(1) << hi) - 1) & ~((np.int64(1) << lo) - 1)


@njit(inline="always", fastmath=FASTMATH)
def _take(engine, blocked, M, base, mask, exact, q, norms, gains, mode, distance_form, fc_max,
          params, heap_s, heap_i):
    """Re-score the rows of ``mask`` exactly and push those above the threshold."""
    zero = np.float32(0.0)
    threshold = heap_s[0]
    while mask != 0:
        v = base + lowest_bit(mask)
        mask &= mask - 1
        total = _exact_sum(engine, blocked, M, v, exact, q)
        gain = np.float32(gains[v]) if gains.shape[0] > 0 else zero
        norm = norms[v] if norms.shape[0] > 0 else np.float32(1.0)
        s = combine_factors(total, zero, gain, norm, norms.shape[0] > 0, mode, zero,
                            distance_form)
        if s > threshold:
            heap_push(heap_s, heap_i, s, v)
            threshold = heap_s[0]
    params[3 * q + 2] = _lowered(threshold, fc_max)


@njit(inline="always")
def _raised(score, fc_max):
    """``score`` plus the rounding margin of :func:`_lowered`."""
    t = np.float64(score)
    return np.float32(t + MARGIN * (abs(t) + fc_max))


@njit(inline="always", fastmath=FASTMATH)
def _defer(engine, base, in_range, o, width, masks, pending, blocked, M, exact, norms, gains,
           mode, distance_form, fc_max, params, out_score, out_label, q0, c):
    """Bound the rows that pass for queries ``o .. o + width - 1`` (``masks[q] &
    in_range``) from both sides by their integer sums and keep them.

    ``pending = (sums, bounds, lb_s, lb_i, rows, upper, count)``: the block's
    integer sums from the filter, the queries' sum bounds (:func:`_prepare`), a
    heap of the ``k`` best lower bounds (labelled with where their rows are
    held), the rows held with their upper bounds and how many. The ``k``-th
    lower bound is no larger than the ``k``-th best exact score, so it raises
    the filter's threshold like an exact score would, and only the rows whose
    upper bound reaches the final threshold are re-scored (:func:`_resolve`):
    a few, instead of every row that once passed. One call takes all the
    queries of a pass: its array arguments are bound once a block.
    """
    sums, bounds, lb_s, lb_i, rows, upper, count = pending
    zero = np.float32(0.0)
    for q in range(o, o + width):
        mask = masks[q] & in_range
        if mask == 0:
            continue
        low, high, scale = bounds[q, 0], bounds[q, 1], bounds[q, 2]
        while mask != 0:
            r = lowest_bit(mask)
            mask &= mask - 1
            v = base + r
            x = scale * np.float64(sums[q, r])
            gain = np.float32(gains[v]) if gains.shape[0] > 0 else zero
            norm = norms[v] if norms.shape[0] > 0 else np.float32(1.0)
            lb = _lowered(combine_factors(np.float32(low + x), zero, gain, norm,
                                          norms.shape[0] > 0, mode, zero, distance_form),
                          fc_max)
            if count[q] == rows.shape[1]:
                _resolve(engine, q, pending, blocked, M, exact, norms, gains, mode,
                         distance_form, out_score[q0 + q, c], out_label[q0 + q, c])
            n = count[q]
            if lb > lb_s[q, 0]:  # the heap keeps where the row is held
                bound_push(lb_s[q], lb_i[q], lb, n)
            rows[q, n] = v
            upper[q, n] = _raised(combine_factors(np.float32(high + x), zero, gain, norm,
                                                  norms.shape[0] > 0, mode, zero,
                                                  distance_form), fc_max)
            count[q] = n + 1
        params[3 * q + 2] = _lowered(max(lb_s[q, 0], out_score[q0 + q, c, 0]), fc_max)


@njit(inline="always", fastmath=FASTMATH)
def _resolve(engine, q, pending, blocked, M, exact, norms, gains, mode, distance_form, heap_s,
             heap_i):
    """Re-score exactly the rows of query ``q`` whose upper bound reaches both
    thresholds (lower bounds', exact scores') and release them all.

    The rows with the ``k`` best lower bounds go first: their exact scores fill
    the heap high at once, so fewer of the others (in the order they were
    held) still reach the threshold.
    """
    sums, bounds, lb_s, lb_i, rows, upper, count = pending
    zero = np.float32(0.0)
    n = count[q]
    for first in (True, False):
        for j in range(lb_i.shape[1] if first else n):
            i = lb_i[q, j] if first else j
            if i < 0 or i >= n or rows[q, i] < 0:
                continue
            if upper[q, i] >= max(lb_s[q, 0], heap_s[0]):
                v = rows[q, i]
                rows[q, i] = -1
                gain = np.float32(gains[v]) if gains.shape[0] > 0 else zero
                norm = norms[v] if norms.shape[0] > 0 else np.float32(1.0)
                s = combine_factors(_exact_sum(engine, blocked, M, v, exact, q), zero, gain, norm,
                                    norms.shape[0] > 0, mode, zero, distance_form)
                # rows come out of scan order: a tie with the worst kept goes to the
                # smaller id, as in a scan
                if s > heap_s[0] or (s == heap_s[0] and v < heap_i[0]):
                    heap_push(heap_s, heap_i, s, v)
    count[q] = 0


#: How a batch's blocks are scored (:func:`scan_engine`): byte shuffles with
#: 16-bit sums, two queries per pass (any SIMD variant); 64-byte table lookups
#: summed by byte dot products, eight queries per pass; int8 dot products of
#: 4-bit codes with the quantized query, eight queries per pass; the same for
#: 3-bit codes in the layout of :mod:`.triplets`.
ENGINE_SHUFFLE, ENGINE_PERM, ENGINE_DOT, ENGINE_DOT3 = 0, 1, 2, 3


if DOT_AVAILABLE:

    @njit(inline="always", fastmath=FASTMATH)
    def _vnni_pass(engine, blocked, t0, t1, M, start, stop, luts_u8, weights, o, width, levels,
                   biases, filter_norms, filter_gains, form, params, masks, defer, pending,
                   exact, norms, gains, mode, distance_form, fc_max, out_score, out_label, q0,
                   c):
        """Queries ``o .. o + width - 1`` (width 8 or 1) of a group against blocks
        ``t0 .. t1 - 1``, by ``ENGINE_DOT`` or ``ENGINE_PERM``; the rows that pass
        are re-scored, or with ``defer`` held for re-scoring (:func:`_defer`)."""
        sums = pending[0]
        for b in range(t0, t1):
            if engine == ENGINE_DOT3:
                if width == QUERIES_PER_PASS:
                    hits = block_triplet_dot_filter_q8(blocked, b, weights.shape[1], weights, o,
                                                       levels, biases, filter_norms,
                                                       filter_gains, form, params, masks, sums)
                else:
                    hits = block_triplet_dot_filter_q1(blocked, b, weights.shape[1], weights, o,
                                                       levels, biases, filter_norms,
                                                       filter_gains, form, params, masks, sums)
            elif engine == ENGINE_DOT:
                if width == QUERIES_PER_PASS:
                    hits = block_dot_filter_q8(blocked, b, M, weights, o, levels, biases,
                                               filter_norms, filter_gains, form, params, masks,
                                               sums)
                else:
                    hits = block_dot_filter_q1(blocked, b, M, weights, o, levels, biases,
                                               filter_norms, filter_gains, form, params, masks,
                                               sums)
            elif width == QUERIES_PER_PASS:
                hits = block_perm_filter_q8(blocked, b, M, luts_u8, o, filter_norms,
                                            filter_gains, form, params, masks, sums)
            else:
                hits = block_perm_filter_q1(blocked, b, M, luts_u8, o, filter_norms,
                                            filter_gains, form, params, masks, sums)
            if hits == 0:
                continue
            base = b * BLOCK
            rows = _range_mask(base, start, stop)
            if defer:
                _defer(engine, base, rows, o, width, masks, pending, blocked, M, exact, norms,
                       gains, mode, distance_form, fc_max, params, out_score, out_label, q0, c)
                continue
            for g in range(o, o + width):
                mask = masks[g] & rows
                if mask != 0:
                    _take(engine, blocked, M, base, mask, exact, g, norms, gains, mode,
                          distance_form, fc_max, params, out_score[q0 + g, c],
                          out_label[q0 + g, c])

else:

    @njit(inline="always")
    def _vnni_pass(engine, blocked, t0, t1, M, start, stop, luts_u8, weights, o, width, levels,
                   biases, filter_norms, filter_gains, form, params, masks, defer, pending,
                   exact, norms, gains, mode, distance_form, fc_max, out_score, out_label, q0,
                   c):
        """Never called: only ``ENGINE_SHUFFLE`` is chosen where VNNI is not available."""


def scan_engine(bits, books):
    """The fastest engine this process can scan codes of ``bits`` with (``books``:
    nibble codebooks, empty for TurboQuant codes): where AVX-512 VNNI and VBMI
    are available ``ENGINE_DOT`` for 4-bit TurboQuant codes, ``ENGINE_DOT3`` for
    3-bit ones (:mod:`.triplets` layout) and ``ENGINE_PERM`` for any other
    nibble tables; else ``ENGINE_SHUFFLE`` (which does not read 3-bit codes)."""
    if not DOT_AVAILABLE:
        return ENGINE_SHUFFLE
    if books.shape[0] == 0 and bits in (3, 4):
        return ENGINE_DOT3 if bits == 3 else ENGINE_DOT
    return ENGINE_PERM


def tile_blocks_for(blocked):
    """Blocks per tile: about ``TILE_BYTES`` of codes."""
    return max(1, TILE_BYTES // max(1, blocked.shape[1]))


@njit(cache=True, fastmath=FASTMATH)
def _scan_group(blocked, b0, b1, start, stop, filter_norms, filter_gains, form, fc_max, norms,
                gains, y, q0, n_queries, centroids, bits, coords, books, mode, distance_form,
                out_score, out_label, c, tile_blocks, engine):
    """Queries ``q0 .. q0 + n_queries - 1`` against blocks ``b0 .. b1 - 1``.

    Blocks are taken ``tile_blocks`` at a time and every query of the group
    scans a tile before the next is read: the tile's codes come from cache
    for all but the first query. Within a tile, ``ENGINE_SHUFFLE`` takes
    queries in pairs, both tables applied in one pass over each block (shared
    code loads and nibble splits); ``ENGINE_PERM``, ``ENGINE_DOT`` and
    ``ENGINE_DOT3`` (see :func:`scan_engine`) take them eight at a time and the
    rest one by one.
    Rows that pass are re-scored as they pass, except on the VNNI engines for
    long codes (``DEFER_SUB_CODES``), short scans (``DEFER_SHORT_BLOCKS``) and a
    query alone, which hold them and re-score at the end only those that may
    still be among the best (:func:`_defer`). Vectors
    outside ``[start, stop)`` are skipped; the heaps are ``out_score[q, c]`` /
    ``out_label[q, c]``.
    """
    # table rows: nibbles, or coordinates for 3-bit codes (stored padded to whole steps)
    # The loops below hand these arrays to inlined helpers once a block and once a
    # row: borrowed views spare the atomic reference counting of each hand-over
    # (.borrow); the arguments outlive the call, the arrays made here are kept
    # alive to the end.
    blocked, filter_norms, filter_gains = borrowed(blocked), borrowed(filter_norms), \
        borrowed(filter_gains)
    norms, gains, y = borrowed(norms), borrowed(gains), borrowed(y)
    out_score, out_label = borrowed(out_score), borrowed(out_label)
    M = y.shape[1] if engine == ENGINE_DOT3 else blocked.shape[1] // 16
    k = out_score.shape[2]
    form = (form[0], form[1], form[2], form[3])  # scalars for the filter
    dot = engine == ENGINE_DOT or engine == ENGINE_DOT3
    # float tables re-score rows, quantized ones are scanned; the int8 engines scan
    # weights, and ENGINE_DOT re-scores from the query and the codebook (_level_sum)
    luts_owner = np.empty((0 if engine == ENGINE_DOT else n_queries, M, 16), dtype=np.float32)
    luts_u8_owner = np.empty((0 if dot else n_queries, M, 16), dtype=np.uint8)
    params_owner = np.empty(3 * n_queries, dtype=np.float32)
    luts, luts_u8, params = borrowed(luts_owner), borrowed(luts_u8_owner), borrowed(params_owner)
    groups = np.empty(n_queries, dtype=np.int64)
    vnni = engine != ENGINE_SHUFFLE
    octets = (n_queries // QUERIES_PER_PASS) * QUERIES_PER_PASS if vnni else 0
    singles = n_queries if vnni else 0  # the rest of the octets go one at a time
    weights_owner = np.zeros((n_queries if dot else 0, -(-M // 4) * 4), dtype=np.int8)
    biases_owner = np.empty(n_queries, dtype=np.int32)
    masks_owner = np.empty(n_queries, dtype=np.int64)
    hit_owner = np.zeros(1, dtype=np.int64)
    weights, biases = borrowed(weights_owner), borrowed(biases_owner)
    masks, hit = borrowed(masks_owner), borrowed(hit_owner)
    levels = np.zeros(16, dtype=np.uint8)
    level_scale = 1.0
    # the int8 engines read a 16-entry codebook: 3-bit codes leave the upper 8 at zero;
    # so do the re-scores from the codebook: 4-bit codes (ENGINE_DOT), and long 1- and
    # 2-bit TurboQuant codes in the regrouped steps of ENGINE_PERM (LEVEL_SUM_SUB_CODES)
    book16 = np.zeros(16, dtype=np.float32)
    per = 0
    if engine == ENGINE_DOT or (engine == ENGINE_PERM and books.shape[0] == 0
                                and M >= LEVEL_SUM_SUB_CODES):
        per = 4 // bits
    if dot or per > 0:
        book16[: centroids.shape[0]] = centroids
    if dot:
        levels, level_scale = dot_levels(book16)
    levels_owner, book16_owner = levels, book16
    levels = borrowed(levels_owner)
    exact = (luts, y, q0, borrowed(book16_owner), per)  # what re-scoring reads (_exact_sum)
    # 64-byte lookups add in 32 bits: tables may use all of 0 .. 255
    table_group = 1 if engine == ENGINE_PERM else TABLE_GROUP
    # Rows that pass are held and only those that can still be among the best are
    # re-scored at the end (see _defer, DEFER_SUB_CODES); short codes over many
    # blocks re-score as they pass, keeping the tighter threshold of exact scores.
    defer = vnni and (n_queries == 1 or M >= DEFER_SUB_CODES
                      or b1 - b0 <= DEFER_SHORT_BLOCKS)
    held = n_queries if defer else 0
    held_rows = min(max(HELD_ROWS, HELD_PER_RESULT * k), max(b1 - b0, 1) * BLOCK)
    bounds_owner = np.empty((n_queries, 3), dtype=np.float64)
    lb_s_owner = np.empty((held, k), dtype=np.float32)
    lb_i_owner = np.empty((held, k), dtype=np.int64)
    sums_owner = np.empty((n_queries if vnni else 0, BLOCK), dtype=np.int32)
    rows_owner = np.empty((held, held_rows), dtype=np.int64)
    upper_owner = np.empty((held, held_rows), dtype=np.float32)
    count_owner = np.zeros(held, dtype=np.int64)
    bounds, lb_s, lb_i = borrowed(bounds_owner), borrowed(lb_s_owner), borrowed(lb_i_owner)
    pending = (borrowed(sums_owner), bounds, lb_s, lb_i, borrowed(rows_owner),
               borrowed(upper_owner), borrowed(count_owner))
    for g in range(n_queries):
        heap_init(out_score[q0 + g, c], out_label[q0 + g, c])
        if g < held:
            heap_init(lb_s[g], lb_i[g])
        if dot:
            prepare_dot(y[q0 + g], book16, levels, level_scale, luts, weights, biases, g,
                        params, bounds)
        else:
            groups[g] = _prepare(y[q0 + g], centroids, bits, coords, books, luts, luts_u8, g,
                                 params, bounds, table_group)
        params[3 * g + 2] = _lowered(out_score[q0 + g, c, 0], fc_max)
    low = np.int64(0xFFFFFFFF)
    for t0 in range(b0, b1, tile_blocks):
        t1 = min(b1, t0 + tile_blocks)
        for o in range(0, octets, QUERIES_PER_PASS):
            _vnni_pass(engine, blocked, t0, t1, M, start, stop, luts_u8, weights, o,
                       QUERIES_PER_PASS, levels, biases, filter_norms, filter_gains, form, params,
                       masks, defer, pending, exact, norms, gains, mode, distance_form, fc_max,
                       out_score, out_label, q0, c)
        for o in range(octets, singles):
            _vnni_pass(engine, blocked, t0, t1, M, start, stop, luts_u8, weights, o, 1, levels,
                       biases, filter_norms, filter_gains, form, params, masks, defer, pending,
                       exact, norms, gains, mode, distance_form, fc_max, out_score, out_label, q0,
                       c)

        # the filters scan blocks until one has a row that passes (its mask in hit[0])
        g = singles
        while g + 1 < n_queries:
            group = min(groups[g], groups[g + 1])
            b = t0
            while True:
                b = scan_blocks_filter2(blocked, b, t1, M, luts_u8, g, filter_norms,
                                        filter_gains, form, params, hit, group)
                if b >= t1:
                    break
                base = b * BLOCK
                rows = _range_mask(base, start, stop)
                m0 = hit[0] & low & rows
                m1 = (hit[0] >> 32) & low & rows
                if m0 != 0:
                    _take(engine, blocked, M, base, m0, exact, g, norms, gains, mode, distance_form,
                          fc_max, params, out_score[q0 + g, c], out_label[q0 + g, c])
                if m1 != 0:
                    _take(engine, blocked, M, base, m1, exact, g + 1, norms, gains, mode,
                          distance_form, fc_max, params, out_score[q0 + g + 1, c],
                          out_label[q0 + g + 1, c])
                b += 1
            g += 2
        if g < n_queries:
            b = t0
            while True:
                b = scan_blocks_filter(blocked, b, t1, M, luts_u8, g, filter_norms,
                                       filter_gains, form, params, hit, groups[g])
                if b >= t1:
                    break
                base = b * BLOCK
                mask = hit[0] & _range_mask(base, start, stop)
                if mask != 0:
                    _take(engine, blocked, M, base, mask, exact, g, norms, gains, mode,
                          distance_form, fc_max, params, out_score[q0 + g, c],
                          out_label[q0 + g, c])
                b += 1
    for g in range(held):
        _resolve(engine, g, pending, blocked, M, exact, norms, gains, mode, distance_form,
                 out_score[q0 + g, c], out_label[q0 + g, c])
    keep_alive((luts_owner, luts_u8_owner, params_owner, weights_owner, biases_owner,
                masks_owner, hit_owner, levels_owner, book16_owner, bounds_owner, lb_s_owner,
                lb_i_owner, sums_owner, rows_owner, upper_owner, count_owner))


@njit(parallel=True, cache=True)
def scan_blocked_topk(blocked, start, stop, filter_norms, filter_gains, form, fc_max, norms,
                      gains, y, centroids, bits, coords, books, mode, distance_form, n_chunks,
                      grouped, tile_blocks, engine, out_score, out_label):
    """Best ``k`` codes of rows ``start .. stop - 1`` for every query.

    Parameters
    ----------
    blocked : uint8 (nblocks, 16 * M)
        Codes in the fast-scan layout, ``M = ceil(d * bits / 4)``; for
        ``ENGINE_DOT3`` 3-bit codes in the triplets layout, uint8 (nblocks,
        12 * D4) (:mod:`.triplets`).
    start, stop : int
        Range of vectors scanned (labels are the vector numbers).
    filter_norms, filter_gains, form, fc_max
        What the candidate filter reads (:func:`filter_fields`).
    norms : float32 (n,) or (0,)
    gains : uint16 (n,) or (0,)
    y : float32 (nq, d)
        Rotated queries.
    centroids : float32 (2**bits,)
    bits : int
        1, 2 or 4 (the PCA codec: 1 to 4, average over coordinates).
    coords : int32 (M, G) or (0, 1)
    books : float32 (M, G, 16) or (0, 1, 16)
        Nibble codebooks of the PCA codec, axis by axis (:mod:`.books`); empty
        for TurboQuant codes, whose tables come from ``centroids``.
    mode : int
        ``MODE_MSE`` or ``MODE_CORRECTED``.
    distance_form : bool
    n_chunks : int
        Ranges per query scanned in parallel.
    grouped : bool
        Scan queries ``GROUP_QUERIES`` at a time (see :func:`_scan_group`);
        otherwise one query per task.
    tile_blocks : int
        Blocks per tile the queries of a group scan together (see
        :func:`tile_blocks_for`).
    engine : int
        ``ENGINE_SHUFFLE``, ``ENGINE_PERM`` or ``ENGINE_DOT``; the last two only
        where :func:`scan_engine` would choose them.
    out_score, out_label : float32 / int64 (nq, n_chunks, k), written
    """
    nq = y.shape[0]
    first_block = start // BLOCK
    last_block = (stop + BLOCK - 1) // BLOCK
    per_chunk = (last_block - first_block + n_chunks - 1) // n_chunks
    per_task = GROUP_QUERIES if grouped else 1
    n_groups = (nq + per_task - 1) // per_task
    for task in prange(n_groups * n_chunks):
        q0 = (task // n_chunks) * per_task
        c = task % n_chunks
        b0 = first_block + c * per_chunk
        b1 = min(last_block, b0 + per_chunk)
        _scan_group(blocked, b0, b1, start, stop, filter_norms, filter_gains, form, fc_max, norms,
                    gains, y, q0, min(per_task, nq - q0), centroids, bits, coords, books, mode,
                    distance_form, out_score, out_label, c, tile_blocks, engine)


#: :func:`scan_blocked_topk` compiled without threads: no thread-pool launch, for
#: single queries and single-threaded calls.
scan_blocked_topk_serial = serial_twin(scan_blocked_topk, "scan_blocked_topk_serial")
