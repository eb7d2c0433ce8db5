"""Top-k scan of codes in the fast-scan (blocked 4-bit) layout.

Codes whose bits per coordinate divide 4 (1, 2 or 4) are stored as ``M``
nibbles per vector in the layout of :mod:`tqsearch.kernels.fastscan`. Per
query the float table ``T`` (M, 16) is quantized to ``uint8`` (one scale per
query); the SIMD scanner sums a block of 32 vectors at a time, and only the
vectors whose *upper bound* could enter the current top k are re-scored
exactly with ``T``. The bound is rigorous (the largest rounding error of the
quantized table, summed over sub-codes), so results equal those of a float
scan of the same codes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH
from .fastscan import BLOCK, lut_group, nibble_at, quantize_lut, scan_block
from .scan import GAIN_ONE, MODE_CORRECTED, combine
from .topk import SENTINEL, heap_init, heap_push


@njit(inline="always", fastmath=FASTMATH)
def build_nibble_lut(y, centroids, bits, lut):
    """``lut[m, c]`` = contribution of nibble value ``c`` in sub-code ``m`` (float32 (M, 16)).

    A nibble holds ``4 // bits`` coordinates, coordinate ``j`` in bits
    ``[(j % per) * bits, ...)`` of nibble ``j // per``.
    """
    d = y.shape[0]
    per = 4 // bits
    mask = (1 << bits) - 1
    for m in range(lut.shape[0]):
        for c in range(16):
            acc = np.float32(0.0)
            for t in range(per):
                j = m * per + t
                if j < d:
                    acc += y[j] * centroids[(c >> (t * bits)) & mask]
            lut[m, c] = acc


@njit(inline="always", fastmath=FASTMATH)
def _exact_sum(blocked, M, v, lut):
    acc = np.float32(0.0)
    for m in range(M):
        acc += lut[m, nibble_at(blocked, M, v, m)]
    return acc


@njit(inline="always", fastmath=FASTMATH)
def _block_hits(sums, base, lo, hi, offset, scale, norms, gains, mode, distance_form,
                threshold):
    """How many rows ``lo .. hi - 1`` have an estimate of ``offset + scale * sums[r]``
    above ``threshold``.

    One counting loop per estimator shape, with no branch and no store
    inside and unsigned (wrap-around free) indices, so each vectorizes over
    the block's rows (a float max reduction would not: it needs no-NaN
    fast-math, which the kernels avoid).
    """
    unit = np.float32(1.0 / GAIN_ONE)
    two = np.float32(2.0)
    hits = 0
    if norms.shape[0] == 0:
        if mode == MODE_CORRECTED:
            for r in range(lo, hi):
                i = np.uint64(base + r)
                s = (offset + scale * np.float32(sums[np.uint64(r)])) * np.float32(gains[i])
                hits += np.int32(s * unit > threshold)
        else:
            for r in range(lo, hi):
                hits += np.int32(offset + scale * np.float32(sums[np.uint64(r)]) > threshold)
    elif distance_form:
        if mode == MODE_CORRECTED:
            for r in range(lo, hi):
                i = np.uint64(base + r)
                s = (offset + scale * np.float32(sums[np.uint64(r)])) * (np.float32(gains[i]) * unit)
                hits += np.int32(norms[i] * (two * s - norms[i]) > threshold)
        else:
            for r in range(lo, hi):
                i = np.uint64(base + r)
                s = offset + scale * np.float32(sums[np.uint64(r)])
                hits += np.int32(norms[i] * (two * s - norms[i]) > threshold)
    else:
        if mode == MODE_CORRECTED:
            for r in range(lo, hi):
                i = np.uint64(base + r)
                s = (offset + scale * np.float32(sums[np.uint64(r)])) * (np.float32(gains[i]) * unit)
                hits += np.int32(norms[i] * s > threshold)
        else:
            for r in range(lo, hi):
                i = np.uint64(base + r)
                hits += np.int32(norms[i] * (offset + scale * np.float32(sums[np.uint64(r)])) > threshold)
    return hits


@njit(cache=True, fastmath=FASTMATH)
def _scan_range(blocked, b0, b1, start, stop, norms, gains, y, centroids, bits, mode,
                distance_form, heap_s, heap_i):
    """One query against blocks ``b0 .. b1 - 1`` (vectors outside ``[start, stop)`` skipped)."""
    M = blocked.shape[1] // 16
    zero = np.float32(0.0)
    heap_init(heap_s, heap_i)
    lut = np.empty((M, 16), dtype=np.float32)
    lut_u8 = np.empty((M, 16), dtype=np.uint8)
    sums = np.empty(BLOCK, dtype=np.int32)
    build_nibble_lut(y, centroids, bits, lut)
    scale, bias = quantize_lut(lut, lut_u8, 1)
    # exact bound on |float table sum - (bias + scale * integer sum)|
    err = 0.0
    for m in range(M):
        worst = 0.0
        lo = lut[m, 0]
        for e in range(16):
            lo = min(lo, lut[m, e])
        for e in range(16):
            diff = abs(np.float64(lut[m, e]) - (lo + scale * np.float64(lut_u8[m, e])))
            worst = max(worst, diff)
        err += worst
    # float32 rounding of the exact sums, with margin
    err = err * 1.0001 + 1e-6 * (abs(bias) + scale * 255.0 * M)
    group = lut_group(lut_u8)
    scale32 = np.float32(scale)
    offset32 = np.float32(bias + err)
    threshold = heap_s[0]
    for b in range(b0, b1):
        scan_block(blocked, b, M, lut_u8, sums, group)
        base = b * BLOCK
        lo = max(start - base, 0)
        hi = min(stop - base, BLOCK)
        if _block_hits(sums, base, lo, hi, offset32, scale32, norms, gains, mode,
                       distance_form, threshold) == 0:
            continue
        for r in range(lo, hi):
            v = base + r
            upper = offset32 + scale32 * np.float32(sums[r])
            if combine(upper, zero, v, mode, zero, norms, gains, distance_form) > threshold:
                exact = _exact_sum(blocked, M, v, lut)
                s = combine(exact, zero, v, mode, zero, norms, gains, distance_form)
                if s > threshold:
                    heap_push(heap_s, heap_i, s, v)
                    threshold = heap_s[0]


@njit(parallel=True, cache=True)
def scan_blocked_topk(blocked, start, stop, norms, gains, y, centroids, bits, mode,
                      distance_form, n_chunks, out_score, out_label):
    """Best ``k`` codes of rows ``start .. stop - 1`` for every query.

    Parameters
    ----------
    blocked : uint8 (nblocks, 16 * M)
        Codes in the fast-scan layout, ``M = ceil(d * bits / 4)``.
    start, stop : int
        Range of vectors scanned (labels are the vector numbers).
    norms : float32 (n,) or (0,)
    gains : uint16 (n,) or (0,)
    y : float32 (nq, d)
        Rotated queries.
    centroids : float32 (2**bits,)
    bits : int
        1, 2 or 4.
    mode : int
        ``MODE_MSE`` or ``MODE_CORRECTED``.
    distance_form : bool
    n_chunks : int
        Ranges per query scanned in parallel.
    out_score, out_label : float32 / int64 (nq, n_chunks, k), written
    """
    nq = y.shape[0]
    first_block = start // BLOCK
    last_block = (stop + BLOCK - 1) // BLOCK
    per_chunk = (last_block - first_block + n_chunks - 1) // n_chunks
    for task in prange(nq * n_chunks):
        q = task // n_chunks
        c = task % n_chunks
        b0 = first_block + c * per_chunk
        b1 = min(last_block, b0 + per_chunk)
        _scan_range(blocked, b0, b1, start, stop, norms, gains, y[q], centroids, bits,
                    mode, distance_form, out_score[q, c], out_label[q, c])


__all__ = ["scan_blocked_topk", "build_nibble_lut", "MODE_CORRECTED", "GAIN_ONE"]
