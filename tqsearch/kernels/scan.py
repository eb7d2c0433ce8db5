"""Asymmetric scan: float query lookup tables against packed codes, top-k kept.

Per query, the rotated query ``y = R q`` turns into a table per byte of the
code, ``T[i, c] = sum over the coordinates j packed in byte i of
y_j * centroid[c_j]`` (bits in {1, 2, 4, 8}: whole coordinates per byte), or
a table per coordinate for other bit widths. A code's score is then a sum of
table entries, combined with its per-vector factors by the estimator:

* ``MODE_MSE``:       s = sum_T
* ``MODE_CORRECTED``: s = sum_T / <u, c(u)>              (gain = 1 / <u, c(u)> in units of 2**-14)
* ``MODE_QJL``:       s = sum_T + gamma * sqrt(pi/2) / d * sum_S   (gamma = ||u - c(u)||)

times the stored norm when there is one. In the distance form (L2, and
centred cosine) the similarity ranked is ``2 n s - n^2`` (larger is better),
``-||q - x||^2`` up to a per-query constant, restored by the caller.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH
from .encode import read_bits
from .tables16 import fill_table
from .topk import heap_init, heap_push

MODE_MSE = 0
MODE_CORRECTED = 1
MODE_QJL = 2

GAIN_ONE = 16384.0  # fixed-point unit of the uint16 per-vector gain

# Score of a zero vector in a centred cosine index (stored with a negative norm):
# below any real vector's (centred unit vectors score >= -12), so such vectors
# rank last; the index reports their cosine as 0.
ZERO_VECTOR_SCORE = -16.0


# The table builders are compiled on their own, without fast-math: contracting a
# multiply and an add into one rounding in some code paths and not in others (LLVM
# picks between vector and scalar loops at run time, from the arrays' addresses)
# would make the same query's table, and so its exact scores, differ by an ulp.
@njit(cache=True)
def build_field_lut(y, centroids, bits, lut):
    """Tables over packed fields of whole coordinates (``bits`` in 1, 2, 4, 8).

    ``lut`` is (fields, 256) for byte fields or (fields, 16) for nibble fields;
    a field holds ``field_bits // bits`` coordinates, coordinate ``j`` in bits
    ``[(j % per) * bits, ...)`` of field ``j // per``, and ``lut[f, c]`` is the
    inner product of the rotated query with the centroids that value ``c``
    codes.
    """
    d = y.shape[0]
    entries = lut.shape[1]
    if entries == 16:
        _build_nibble_lut(y, centroids, bits, lut)
        return
    per = 8 // bits
    levels = 1 << bits
    for f in range(lut.shape[0]):
        # Built a coordinate at a time: after coordinate t the first levels**(t+1)
        # entries hold every sum over coordinates 0..t (the higher ones' value 0).
        row = lut[f]
        row[0] = np.float32(0.0)
        size = 1
        for t in range(per):
            j = f * per + t
            yj = y[j] if j < d else np.float32(0.0)
            for v in range(levels - 1, -1, -1):  # v = 0 last: it overwrites its sources
                w = yj * centroids[v]
                for i in range(size):
                    row[v * size + i] = row[i] + w
            size *= levels


@njit(cache=True)
def _build_nibble_lut(y, centroids, bits, lut):
    """:func:`build_field_lut` for nibble fields (``lut`` (fields, 16)): a row at a
    time as one vector (:func:`.tables16.fill_table`), the same sums added in the
    same order (coordinate 0 first)."""
    per = 4 // bits
    mask = (1 << bits) - 1
    patterns = np.empty((per, 16), dtype=np.float32)
    for t in range(per):
        for e in range(16):
            patterns[t, e] = centroids[(e >> (t * bits)) & mask]
    fill_table(lut, y, patterns)


@njit(cache=True)
def build_coord_lut(y, centroids, lut):
    """Fill ``lut`` (d, levels) with ``y_j * centroid[c]``."""
    for j in range(lut.shape[0]):
        for c in range(lut.shape[1]):
            lut[j, c] = y[j] * centroids[c]


@njit(cache=True)
def build_pair_lut(y, centroids, lut):
    """Fill ``lut`` (ceil(d / 2), 64) for 3-bit codes: entry ``c`` of pair ``p`` scores
    coordinates ``2p`` (bits 0-2 of ``c``) and ``2p + 1`` (bits 3-5)."""
    d = y.shape[0]
    for p in range(lut.shape[0]):
        for c in range(64):
            acc = y[2 * p] * centroids[c & 7]
            if 2 * p + 1 < d:
                acc += y[2 * p + 1] * centroids[c >> 3]
            lut[p, c] = acc


@njit(inline="always", fastmath=FASTMATH)
def pair_lut_sum(row, lut):
    """Table sum of a 3-bit code: pairs of coordinates are 6-bit fields, four per
    3 bytes, so whole groups are read as 24-bit words with fixed shifts."""
    npairs = lut.shape[0]
    acc = np.float32(0.0)
    groups = npairs // 4
    for g in range(groups):
        word = (np.uint32(row[3 * g]) | (np.uint32(row[3 * g + 1]) << 8)
                | (np.uint32(row[3 * g + 2]) << 16))
        acc += lut[4 * g, word & 63]
        acc += lut[4 * g + 1, (word >> 6) & 63]
        acc += lut[4 * g + 2, (word >> 12) & 63]
        acc += lut[4 * g + 3, (word >> 18) & 63]
    for p in range(4 * groups, npairs):
        acc += lut[p, read_bits(row, 6 * p, 6)]
    return acc


@njit(inline="always", fastmath=FASTMATH)
def byte_lut_sum(row, start, lut):
    acc = np.float32(0.0)
    for i in range(lut.shape[0]):
        acc += lut[i, row[start + i]]
    return acc


@njit(inline="always", fastmath=FASTMATH)
def coord_lut_sum(row, bits, lut):
    acc = np.float32(0.0)
    for j in range(lut.shape[0]):
        acc += lut[j, read_bits(row, j * bits, bits)]
    return acc


@njit(inline="always", fastmath=FASTMATH)
def combine(s_main, s_sign, v, mode, qjl_scale, norms, gains, distance_form):
    """Per-vector estimator: table sums and stored factors -> similarity."""
    gain = np.float32(gains[v]) if gains.shape[0] > 0 else np.float32(0.0)
    norm = norms[v] if norms.shape[0] > 0 else np.float32(1.0)
    return combine_factors(s_main, s_sign, gain, norm, norms.shape[0] > 0, mode, qjl_scale,
                           distance_form)


@njit(inline="always", fastmath=FASTMATH)
def combine_factors(s_main, s_sign, gain, norm, has_norm, mode, qjl_scale, distance_form):
    """:func:`combine` of a vector whose stored factors are loaded: ``gain``
    (float32 of the stored uint16) and ``norm`` (used when ``has_norm``). Takes
    no arrays, so per-row loops that call it touch no reference counts."""
    if mode == MODE_CORRECTED:
        s = s_main * (gain * np.float32(1.0 / GAIN_ONE))
    elif mode == MODE_QJL:
        s = s_main + gain * qjl_scale * s_sign
    else:
        s = s_main
    if has_norm:
        if distance_form:
            if norm < 0:
                return np.float32(ZERO_VECTOR_SCORE)
            s = norm * (np.float32(2.0) * s - norm)
        else:
            s = s * norm
    return s


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_topk(codes, norms, gains, y, y_sign, centroids, bits, mode, distance_form,
              n_chunks, label_offset, out_score, out_label):
    """Score every code against every query, keep the k best per (query, chunk).

    Parameters
    ----------
    codes : uint8 (n, code_bytes)
        Packed codes: ``ceil(d * bits / 8)`` index bytes, then ``ceil(d / 8)``
        sign bytes when ``mode == MODE_QJL``.
    norms : float32 (n,) or (0,)
        Stored vector norms (absent for cosine).
    gains : uint16 (n,) or (0,)
        Per-vector estimator factor (see module docstring).
    y : float32 (nq, d)
        Rotated queries.
    y_sign : float32 (nq, d) or (nq, 0)
        Queries projected for the QJL signs (``S R q``).
    centroids : float32 (2**bits,)
    bits, mode : int
    distance_form : bool
        Rank by ``2 n s - n^2`` instead of ``n s``.
    n_chunks : int
        Split the codes into this many ranges per query (parallelism for few queries).
    label_offset : int
        Label of row 0 (scanning a slice of a larger store).
    out_score : float32 (nq, n_chunks, k), written (similarities, unsorted heaps)
    out_label : int64 (nq, n_chunks, k), written (-1 where fewer than k codes)
    """
    n = codes.shape[0]
    nq, d = y.shape
    byte_aligned = bits > 0 and 8 % bits == 0
    main_bytes = (d * bits + 7) // 8
    sign_bytes = (d + 7) // 8 if mode == MODE_QJL else 0
    qjl_scale = np.float32(np.sqrt(np.pi / 2.0) / d / GAIN_ONE)
    sign_centroids = np.array([-1.0, 1.0], dtype=np.float32)
    chunk = (n + n_chunks - 1) // n_chunks
    for task in prange(nq * n_chunks):
        q = task // n_chunks
        c = task % n_chunks
        lo = c * chunk
        hi = min(n, lo + chunk)
        heap_s = out_score[q, c]
        heap_i = out_label[q, c]
        heap_init(heap_s, heap_i)
        lut_b = np.empty((main_bytes if byte_aligned else 0, 256), dtype=np.float32)
        pairs = bits == 3
        lut_c = np.empty((0 if byte_aligned or pairs else d, 1 << bits), dtype=np.float32)
        lut_p = np.empty(((d + 1) // 2 if pairs else 0, 64), dtype=np.float32)
        lut_s = np.empty((sign_bytes, 256), dtype=np.float32)
        if byte_aligned:
            build_field_lut(y[q], centroids, bits, lut_b)
        elif pairs:
            build_pair_lut(y[q], centroids, lut_p)
        elif bits > 0:
            build_coord_lut(y[q], centroids, lut_c)
        if sign_bytes > 0:
            build_field_lut(y_sign[q], sign_centroids, 1, lut_s)
        for v in range(lo, hi):
            row = codes[v]
            if byte_aligned:
                s_main = byte_lut_sum(row, 0, lut_b)
            elif pairs:
                s_main = pair_lut_sum(row, lut_p)
            elif bits > 0:
                s_main = coord_lut_sum(row, bits, lut_c)
            else:
                s_main = np.float32(0.0)
            s_sign = byte_lut_sum(row, main_bytes, lut_s) if sign_bytes > 0 else np.float32(0.0)
            s = combine(s_main, s_sign, v, mode, qjl_scale, norms, gains, distance_form)
            if s > heap_s[0]:
                heap_push(heap_s, heap_i, s, v + label_offset)
