"""Scores of codes against a rotated query: row-major scans, nibble tables, estimators.

A code's score against the rotated query ``y = R q`` is ``s_main = <y, c>``, ``c``
the centroids its coordinates code, and with QJL also ``s_sign = <S R q, signs>``.
The estimator combines them with the per-vector factors:

* ``MODE_MSE``:       s = s_main
* ``MODE_CORRECTED``: s = s_main / <u, c(u)>              (gain = 1 / <u, c(u)> in units of 2**-14)
* ``MODE_QJL``:       s = s_main + gamma * sqrt(pi/2) / d * s_sign   (gamma = ||u - c(u)||)

times the stored norm when there is one. In the distance form (L2, and
centred cosine) the similarity ranked is ``2 n s - n^2`` (larger is better),
``-||q - x||^2`` up to a per-query constant, restored by the caller.

:func:`scan_topk` scores row-major codes (3 and 5 to 8 bits, QJL) by decoding each
row once for a group of queries; the blocked layouts are scanned through per-query
nibble tables (:func:`build_field_lut`) by :mod:`tqsearch.kernels.blocked_scan`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH
from .encode import read_bits
from .tables16 import expand_bytes, fill_table
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
    """Query tables over nibbles of whole coordinates (``bits`` in 1, 2, 4).

    ``lut`` is float32 (fields, 16), C-contiguous; a nibble holds ``4 // bits``
    coordinates, coordinate ``j`` in bits ``(j % per) * bits ..`` of nibble
    ``j // per``, and ``lut[f, c]`` is the inner product of the rotated query
    with the centroids that value ``c`` codes, summed coordinate 0 first; a row
    at a time as one vector (:func:`.tables16.fill_table`).
    """
    per = 4 // bits
    mask = (1 << bits) - 1
    patterns = np.empty((per, 16), dtype=np.float32)
    for t in range(per):
        for e in range(16):
            patterns[t, e] = centroids[(e >> (t * bits)) & mask]
    fill_table(lut, y, patterns)


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


@njit(inline="always")
def byte_table(values, bits):
    """float32 (256, 8 // bits): the values a byte of ``bits``-bit codes decodes to,
    coordinate ``t`` of byte ``c`` being ``values[(c >> (bits * t)) & mask]``
    (``bits`` in 1, 2, 4, 8)."""
    per = 8 // bits
    table = np.empty((256, per), dtype=np.float32)
    for c in range(256):
        for t in range(per):
            table[c, t] = values[(c >> (bits * t)) & ((1 << bits) - 1)]
    return table


@njit(inline="always")
def decode_row(row, start, bits, centroids, table, values):
    """``values[j]``: the value coordinate ``j`` of the packed codes at byte ``start``
    of ``row`` decodes to, for the ``len(values)`` coordinates.

    Whole bytes of 1-, 2- and 4-bit codes (and QJL signs, ``centroids`` = (-1, 1))
    go through ``table`` (:func:`byte_table`), pairs of 3-bit codes through
    ``table`` (:func:`pair_table`), 8-bit codes index ``centroids``, other widths
    eight coordinates (``bits`` bytes) a word.
    """
    d = values.shape[0]
    if bits == 8:
        for j in range(d):
            values[j] = centroids[row[start + j]]
        return
    if bits == 4 or bits == 2 or bits == 1:
        per = 8 // bits
        whole = d // per
        expand_bytes(row, start, whole, table, values)
        for j in range(whole * per, d):
            values[j] = table[row[start + whole], j - whole * per]
        return
    if bits == 3:
        # eight coordinates a 24-bit word, as four 6-bit pairs through ``table``
        # (:func:`pair_table`): single queries of QJL codes at 4 bits (3-bit
        # indices) take 3.5 ms over 20,000 codes at d = 384, 5 ms field by field
        words = d // 8
        for g in range(words):
            at = start + 3 * g
            word = (np.uint32(row[at]) | (np.uint32(row[at + 1]) << 8)
                    | (np.uint32(row[at + 2]) << 16))
            for p in range(4):
                pair = table[(word >> (6 * p)) & 63]
                values[8 * g + 2 * p] = pair[0]
                values[8 * g + 2 * p + 1] = pair[1]
        for j in range(8 * words, d):
            values[j] = centroids[read_bits(row, 8 * start + 3 * j, 3)]
        return
    # 5 to 7 bits: eight coordinates fill ``bits`` whole bytes, read as one word
    mask = (1 << bits) - 1
    groups = d // 8
    for g in range(groups):
        at = start + bits * g
        word = np.uint64(0)
        for i in range(bits):
            word |= np.uint64(row[at + i]) << np.uint64(8 * i)
        for t in range(8):
            values[8 * g + t] = centroids[(word >> np.uint64(bits * t)) & np.uint64(mask)]
    for j in range(8 * groups, d):
        values[j] = centroids[read_bits(row, 8 * start + j * bits, bits)]


@njit(inline="always")
def pair_table(values):
    """float32 (64, 2): the two values a 6-bit field of 3-bit codes decodes to."""
    table = np.empty((64, 2), dtype=np.float32)
    for c in range(64):
        table[c, 0] = values[c & 7]
        table[c, 1] = values[c >> 3]
    return table


@njit(inline="always")
def task_span(task, n_chunks, per_task, nq, n):
    """What task ``task`` of a row scan covers: queries ``q0 .. q1 - 1`` (groups of
    ``per_task``) over range ``c`` of ``n_chunks`` of the ``n`` rows, ``lo .. hi - 1``.
    Returns ``(q0, q1, c, lo, hi)``."""
    chunk = (n + n_chunks - 1) // n_chunks
    q0 = (task // n_chunks) * per_task
    c = task % n_chunks
    lo = c * chunk
    return q0, min(nq, q0 + per_task), c, lo, min(n, lo + chunk)


@njit(inline="always")
def row_tables(centroids, bits):
    """What :func:`decode_row` reads for codes of ``bits`` and for QJL signs:
    ``(main_table, sign_values, sign_table)``, the first empty for widths it
    decodes from ``centroids`` directly."""
    if bits == 1 or bits == 2 or bits == 4:
        main_table = byte_table(centroids, bits)
    elif bits == 3:
        main_table = pair_table(centroids)
    else:
        main_table = np.zeros((0, 1), np.float32)
    sign_values = np.array([-1.0, 1.0], dtype=np.float32)
    return main_table, sign_values, byte_table(sign_values, 1)


@njit(inline="always", fastmath=FASTMATH)
def dot(a, b):
    """``sum_j a[j] b[j]`` (float32): one compiled loop, so every caller adds in the
    same order."""
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += a[j] * b[j]
    return acc


#: Queries that share each decoded row of :func:`scan_topk` (their rotated queries,
#: 16 x d floats, stay in the L1 cache for d up to about 400).
ROW_QUERIES = 16


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_topk(codes, norms, gains, y, y_sign, centroids, bits, mode, distance_form,
              n_chunks, label_offset, out_score, out_label):
    """Score every code against every query, keep the k best per (query, chunk).

    Row-major codes of any width (3 and 5 to 8 bits, QJL): each row is decoded
    once into its centroid values (and QJL signs as +-1) for a group of
    ``ROW_QUERIES`` queries, which then take one dot product each. A per-query
    table would cost ``d * 2**bits`` floats (384 KB at d = 384, 8 bits) and a
    lookup per coordinate and query; decoded, a row costs one lookup per
    coordinate for the whole group and a vectorised product per query.

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
    main_bytes = (d * bits + 7) // 8
    qjl = mode == MODE_QJL
    qjl_scale = np.float32(np.sqrt(np.pi / 2.0) / d / GAIN_ONE)
    n_groups = (nq + ROW_QUERIES - 1) // ROW_QUERIES
    main_table, sign_values, sign_table = row_tables(centroids, bits)
    for task in prange(n_groups * n_chunks):
        q0, q1, c, lo, hi = task_span(task, n_chunks, ROW_QUERIES, nq, n)
        for q in range(q0, q1):
            heap_init(out_score[q, c], out_label[q, c])
        values = np.zeros(d, dtype=np.float32)
        signs = np.zeros(d if qjl else 0, dtype=np.float32)
        for v in range(lo, hi):
            row = codes[v]
            if bits > 0:
                decode_row(row, 0, bits, centroids, main_table, values)
            if qjl:
                decode_row(row, main_bytes, 1, sign_values, sign_table, signs)
            for q in range(q0, q1):
                s_main = dot(values, y[q])
                s_sign = dot(signs, y_sign[q]) if qjl else np.float32(0.0)
                s = combine(s_main, s_sign, v, mode, qjl_scale, norms, gains, distance_form)
                if s > out_score[q, c, 0]:
                    heap_push(out_score[q, c], out_label[q, c], s, v + label_offset)
