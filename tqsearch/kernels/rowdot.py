"""Row-major codes (5 to 8 bits, QJL) scored as int8 dot products, 16 rows at a time.

Codes of 5 to 8 bits and QJL codes are stored row by row, packed. Decoding every
row to floats for a float dot product per query (:func:`.scan.scan_topk`) costs
a lookup per coordinate and ``d`` multiply-adds per query. Here, where AVX-512
VNNI and VBMI are available, each group of 16 rows is decoded once into int8
levels, the codebook quantized with one scale (:func:`byte_levels`), for all
the queries of a group: per 64 codes a ``vpermb`` and a ``vpmultishiftqb`` cut
codes under 8 bits into bytes, ``vpermi2b`` looks their levels up (two lookups
and a blend on the top bit for 8 bits); QJL sign bits decode the same way to
levels of +-1. A query, quantized to int8 weights (:func:`prepare_weights`;
QJL: its projection too), then scores the 16 rows with one ``vpdpbusd`` per 64
coordinates and row (and as many for the signs). The integer sums bound the
float score from both sides (the quantization errors of weights and levels,
each coordinate at its worst, plus float32 rounding), and the rows whose upper
bound reaches the query's ``k``-th best are re-scored exactly as
:func:`.scan.scan_topk` scores them (:func:`.scan.decode_row`, :func:`.scan.dot`,
:func:`.scan.combine`): the results are the row scan's.

``vpdpbusd`` multiplies unsigned bytes by signed ones: the weights go in as ``w +
128`` (uint8) and the levels as int8, so the sum carries ``128 * sum(levels)``,
a per-row term computed when the row is decoded and taken off before the test.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..config import FASTMATH
from .bits import lowest_bit
from .blocked_scan import _lowered  # the threshold less the filter's rounding margin
from .fastscan import DOT_AVAILABLE
from .scan import (
    GAIN_ONE,
    MODE_CORRECTED,
    MODE_QJL,
    ZERO_VECTOR_SCORE,
    combine,
    decode_row,
    dot,
    row_tables,
    task_span,
)
from .topk import heap_init, heap_push
from .typecheck import check_c_array

__all__ = ["DOT_AVAILABLE", "PARAMS", "ROWS", "byte_levels", "prepare_weights", "scan_rowdot"]

#: Rows decoded together; the int32 sums of a query's 16 rows fill one 512-bit register.
ROWS = 16
#: Queries that share each decoded group of rows.
GROUP_QUERIES = 16

_i1 = ir.IntType(1)
_i8 = ir.IntType(8)
_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_f32 = ir.FloatType()
_v64i8 = ir.VectorType(_i8, 64)
_v16i32 = ir.VectorType(_i32, 16)
_v16f32 = ir.VectorType(_f32, 16)


def _const(value, ty=_i64):
    return ir.Constant(ty, value)


def _splat(builder, value, vec):
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, _const(0, _i32))
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(_i32, vec.count), [0] * vec.count))


def _x86(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module,
                                        ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _dpbusd(builder, acc, unsigned, signed):
    return _x86(builder, "llvm.x86.avx512.vpdpbusd.512", _v16i32,
                [acc, builder.bitcast(unsigned, _v16i32), builder.bitcast(signed, _v16i32)])


def _transpose_sum_masks():
    """Shuffle masks that add 16 vectors of 16 lanes into one vector of their sums.

    Each round pairs vectors holding ``R`` rows in segments of ``P`` lanes and
    adds the first half of every segment to its second half, leaving ``2 R``
    rows in segments of ``P / 2``; after four rounds lane ``i`` holds the sum of
    row ``order[i]``. Returns the rounds' ``(low, high)`` masks over a pair's
    32 lanes and ``order``.
    """
    vectors = [[r] * 16 for r in range(16)]
    rounds = []
    seg = 16
    while len(vectors) > 1:
        half = seg // 2
        low = [s * seg + i + side * 16 for s in range(16 // seg) for side in (0, 1)
               for i in range(half)]
        rounds.append((low, [x + half for x in low]))
        vectors = [[(vectors[2 * p] + vectors[2 * p + 1])[x] for x in low]
                   for p in range(len(vectors) // 2)]
        seg = half
    return rounds, vectors[0]


_ROUNDS, _ORDER = _transpose_sum_masks()
# the last shuffle puts row r's sum in lane r
_TO_ROW_ORDER = [_ORDER.index(r) for r in range(16)]


# Under 8 bits, eight codes fill ``bits`` bytes. Byte 8 i + t of the gather takes
# byte bits * i + t of a 64-code chunk, so that 64-bit lane i starts with codes
# 8 i .. 8 i + 7; the multishift then moves code t (bits bits * t ..) to byte t.
_WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8)
_SPREAD = {b: [b * (i // 8) + i % 8 for i in range(64)] for b in _WIDTHS[:-1]}
_SHIFTS = {b: [b * (i % 8) for i in range(64)] for b in _WIDTHS[:-1]}


@intrinsic
def decode_levels(typingctx, codes, v0, count, start, bits, d, levels, buf, level_sums):
    """Decode rows ``v0 .. v0 + count - 1`` of ``codes`` into int8 levels.

    ``codes`` uint8 (n, >= start + ceil(d * bits / 8)): from byte ``start`` of a
    row, ``d`` codes of ``bits`` (1 to 8) bits packed as
    :func:`tqsearch.kernels.encode.pack_row` packs them (8 bits: a byte each;
    QJL sign bits: 1); ``levels`` uint8 (256,), the int8 level (two's complement) of
    each code value, repeating every ``2**bits`` entries; ``buf`` uint8 (16,
    D64) with ``D64`` a multiple of 64, at least ``d``: ``buf[i, j]`` is the
    level of row ``i``'s code ``j`` for ``j < d``, 0 beyond; ``level_sums[i]``
    (int32) the sum of row ``i``'s levels. Per 64 codes: a load, under 8 bits
    a ``vpermb`` and a ``vpmultishiftqb`` that cut the codes into bytes
    (their top bits are the next code's, which the repeating table ignores),
    then ``vpermi2b`` lookups (two and a blend on the top bit for 8 bits).
    All C-contiguous; nothing is bounds-checked.
    """
    fname = "decode_levels"
    check_c_array(fname, "codes", codes, types.uint8, 2)
    check_c_array(fname, "levels", levels, types.uint8, 1)
    check_c_array(fname, "buf", buf, types.uint8, 2)
    check_c_array(fname, "level_sums", level_sums, types.int32, 1)
    sig = types.void(codes, types.intp, types.intp, types.intp, types.intp, types.intp, levels,
                     buf, level_sums)

    def codegen(context, builder, signature, args):
        c_arr = context.make_array(signature.args[0])(context, builder, args[0])
        t_arr = context.make_array(signature.args[6])(context, builder, args[6])
        b_arr = context.make_array(signature.args[7])(context, builder, args[7])
        s_arr = context.make_array(signature.args[8])(context, builder, args[8])
        v0, count, start, bits, d = args[1], args[2], args[3], args[4], args[5]
        row_bytes = cgutils.unpack_tuple(builder, c_arr.shape, 2)[1]
        width = cgutils.unpack_tuple(builder, b_arr.shape, 2)[1]
        table = [builder.load(builder.bitcast(builder.gep(t_arr.data, [_const(64 * i)]),
                                              _v64i8.as_pointer()), align=1) for i in range(4)]
        ones = ir.Constant(_v64i8, [1] * 64)
        zero8 = ir.Constant(_v64i8, [0] * 64)
        v_mask = ir.VectorType(_i1, 64)
        full = builder.udiv(d, _const(64))
        rest = builder.sub(d, builder.mul(full, _const(64)))

        def low_bits(n):
            """The first ``n`` (<= 64) lanes as a 64-lane mask."""
            short = builder.icmp_signed("<", n, _const(64))
            bits_ = builder.sub(builder.shl(_const(1), builder.select(short, n, _const(0))),
                                _const(1))
            return builder.bitcast(builder.select(short, bits_, _const(-1)), v_mask)

        # the last chunk's codes as a lane mask (a lane compare would take eight
        # 512-bit compares of 64-bit lanes)
        rest_mask = low_bits(rest)
        masked_load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_v64i8, [_v64i8.as_pointer(), _i32, v_mask, _v64i8]),
            "llvm.masked.load.v64i8.p0")
        multishift = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_v64i8, [_v64i8, _v64i8]),
            "llvm.x86.avx512.pmultishift.qb.512")

        def codes_of(src, chunk, width_bits, last):
            """Chunk ``chunk``'s 64 codes, one a byte (above a code under 8 bits
            lie the next code's bits); bytes past the row read as 0."""
            size = 8 * width_bits
            at = builder.mul(chunk, _const(size))
            ptr = builder.bitcast(builder.gep(src, [at]), _v64i8.as_pointer())
            if width_bits == 8 and not last:
                return builder.load(ptr, align=1)
            take = _const(size)
            if last:
                left = builder.sub(builder.sub(row_bytes, start), at)
                take = builder.select(builder.icmp_signed("<", left, take), left, take)
            data = builder.call(masked_load, [ptr, _const(1, _i32), low_bits(take), zero8])
            if width_bits == 8:
                return data
            spread = _x86(builder, "llvm.x86.avx512.permvar.qi.512", _v64i8,
                          [data, ir.Constant(_v64i8, _SPREAD[width_bits])])
            return builder.call(multishift, [ir.Constant(_v64i8, _SHIFTS[width_bits]), spread])

        def level_chunk(src, dst, acc, chunk, width_bits, last):
            index = codes_of(src, chunk, width_bits, last)
            low = _x86(builder, "llvm.x86.avx512.vpermi2var.qi.512", _v64i8,
                       [table[0], index, table[1]])
            if width_bits == 8:
                high = _x86(builder, "llvm.x86.avx512.vpermi2var.qi.512", _v64i8,
                            [table[2], index, table[3]])
                level = builder.select(builder.icmp_signed("<", index, zero8), high, low)
            else:
                level = low
            if last:  # lanes past d hold no code
                level = builder.select(rest_mask, level, zero8)
            at = builder.mul(chunk, _const(64))
            builder.store(level, builder.bitcast(builder.gep(dst, [at]), _v64i8.as_pointer()),
                          align=1)
            builder.store(_dpbusd(builder, builder.load(acc), ones, level), acc)

        for width_bits in _WIDTHS:  # one straight-line body per code width
            with builder.if_then(builder.icmp_signed("==", bits, _const(width_bits))):
                with cgutils.for_range(builder, count) as row:
                    src = builder.gep(c_arr.data, [builder.add(
                        builder.mul(builder.add(v0, row.index), row_bytes), start)])
                    dst = builder.gep(b_arr.data, [builder.mul(row.index, width)])
                    acc = cgutils.alloca_once_value(builder, ir.Constant(_v16i32, [0] * 16))
                    with cgutils.for_range(builder, full) as chunk:
                        level_chunk(src, dst, acc, chunk.index, width_bits, False)
                    with builder.if_then(builder.icmp_unsigned("!=", rest, _const(0))):
                        level_chunk(src, dst, acc, full, width_bits, True)
                    total = _x86(builder, "llvm.vector.reduce.add.v16i32", _i32,
                                 [builder.load(acc)])
                    builder.store(total, builder.gep(s_arr.data, [row.index]))
        return context.get_dummy_value()

    return sig, codegen


#: Per query and task: ``(offset, scale, threshold, sign offset, sign scale)``.
PARAMS = 5


def _emit_sums(builder, buf, width, w_row, level_sums):
    """``<16 x i32>``: ``sum_j (w_row[j] - 128) * buf[i, j]`` for rows ``i`` in lanes
    ``i``, one ``vpdpbusd`` per 64 bytes and row, the rows' 16 partial-sum
    registers added by one transposing reduction."""
    zero = ir.Constant(_v16i32, [0] * 16)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(ROWS)]
    with cgutils.for_range(builder, builder.udiv(width, _const(64))) as chunk:
        at = builder.mul(chunk.index, _const(64))
        w = builder.load(builder.bitcast(builder.gep(w_row, [at]), _v64i8.as_pointer()),
                         align=1)
        for r, acc in enumerate(accs):
            src = builder.gep(buf, [builder.add(builder.mul(_const(r), width), at)])
            level = builder.load(builder.bitcast(src, _v64i8.as_pointer()), align=1)
            builder.store(_dpbusd(builder, builder.load(acc), w, level), acc)
    vectors = [builder.load(acc) for acc in accs]
    for low, high in _ROUNDS:
        low_mask = ir.Constant(ir.VectorType(_i32, 16), low)
        high_mask = ir.Constant(ir.VectorType(_i32, 16), high)
        vectors = [builder.add(builder.shuffle_vector(a, b, low_mask),
                               builder.shuffle_vector(a, b, high_mask))
                   for a, b in zip(vectors[::2], vectors[1::2], strict=True)]
    sums = builder.shuffle_vector(vectors[0], vectors[0],
                                  ir.Constant(ir.VectorType(_i32, 16), _TO_ROW_ORDER))
    level_sums16 = builder.load(builder.bitcast(level_sums, _v16i32.as_pointer()), align=4)
    return builder.sub(sums, builder.shl(level_sums16, ir.Constant(_v16i32, [7] * 16)))


@intrinsic
def dot_filter(typingctx, buf, signs, count, weights, sign_weights, q, level_sums, sign_sums,
               fa, fc, fs, params, p):
    """Bit mask of the decoded rows whose score can exceed query ``q``'s threshold.

    ``buf`` and ``level_sums`` as :func:`decode_levels` wrote them (rows ``0 ..
    count - 1`` valid), and for QJL codes ``signs`` and ``sign_sums`` the rows'
    sign bits (levels of +-1; ``signs`` has no rows otherwise); ``weights`` and
    ``sign_weights`` uint8 (nq, D64), query ``q``'s int8 weights plus 128
    (:func:`prepare_weights`) for the codes and the signs; ``fa``, ``fc``,
    ``fs`` float32 (16,), the rows' factors; ``params`` float32, ``PARAMS``
    values at ``PARAMS * p``: ``(offset, scale, threshold, sign_offset,
    sign_scale)``. With the integer sums ``S = sum_j (weights[q, j] - 128) *
    buf[i, j]`` and ``T`` likewise of the signs (one ``vpdpbusd`` per 64 bytes
    and row), bit ``i`` is set when ``fa[i] * x - fc[i] > threshold`` for ``x =
    offset + scale * S``, plus ``fs[i] * (sign_offset + sign_scale * T)`` with
    signs; float32 in that order. Returns int64.
    """
    fname = "dot_filter"
    for name, ty in (("buf", buf), ("signs", signs), ("weights", weights),
                     ("sign_weights", sign_weights)):
        check_c_array(fname, name, ty, types.uint8, 2)
    for name, ty in (("level_sums", level_sums), ("sign_sums", sign_sums)):
        check_c_array(fname, name, ty, types.int32, 1)
    for name, ty in (("fa", fa), ("fc", fc), ("fs", fs), ("params", params)):
        check_c_array(fname, name, ty, types.float32, 1)
    sig = types.int64(buf, signs, types.intp, weights, sign_weights, types.intp, level_sums,
                      sign_sums, fa, fc, fs, params, types.intp)

    def codegen(context, builder, signature, args):
        arr = {i: context.make_array(signature.args[i])(context, builder, args[i])
               for i in (0, 1, 3, 4, 6, 7, 8, 9, 10, 11)}
        count, q, p = args[2], args[5], args[12]
        width = cgutils.unpack_tuple(builder, arr[0].shape, 2)[1]
        sums = _emit_sums(builder, arr[0].data, width,
                          builder.gep(arr[3].data, [builder.mul(q, width)]), arr[6].data)
        at = builder.mul(p, _const(PARAMS))
        offset, scale, threshold, sign_offset, sign_scale = (
            _splat(builder, builder.load(builder.gep(arr[11].data, [builder.add(at, _const(i))])),
                   _v16f32) for i in range(PARAMS))
        x = builder.fadd(offset, builder.fmul(scale, builder.sitofp(sums, _v16f32)))
        total = cgutils.alloca_once_value(builder, x)
        has_signs = builder.icmp_signed(">", cgutils.unpack_tuple(builder, arr[1].shape, 2)[0],
                                        _const(0))
        with builder.if_then(has_signs):
            sign_sums = _emit_sums(builder, arr[1].data, width,
                                   builder.gep(arr[4].data, [builder.mul(q, width)]),
                                   arr[7].data)
            xs = builder.fadd(sign_offset,
                              builder.fmul(sign_scale, builder.sitofp(sign_sums, _v16f32)))
            factor_s = builder.load(builder.bitcast(arr[10].data, _v16f32.as_pointer()),
                                    align=4)
            builder.store(builder.fadd(x, builder.fmul(factor_s, xs)), total)
        factor_a = builder.load(builder.bitcast(arr[8].data, _v16f32.as_pointer()), align=4)
        factor_c = builder.load(builder.bitcast(arr[9].data, _v16f32.as_pointer()), align=4)
        score = builder.fsub(builder.fmul(factor_a, builder.load(total)), factor_c)
        passed = builder.bitcast(builder.fcmp_ordered(">", score, threshold), ir.IntType(16))
        mask = builder.zext(passed, _i64)
        rows = builder.sub(builder.shl(_const(1), count), _const(1))
        return builder.and_(mask, rows)

    return sig, codegen


@njit(inline="always", fastmath=FASTMATH)
def byte_levels(centroids):
    """A codebook of ``2**bits`` entries (``bits`` 1 to 8) as int8 levels of one scale.

    Returns ``(levels, scale, error, top)``: ``levels`` uint8 (256,), entry ``e``
    the int8 ``round(centroids[e % 2**bits] / scale)`` in two's complement (the
    table repeats, so that code bytes with other bits above the code look up
    the same level); ``scale = top / 127``; ``error``, the largest ``|centroid -
    scale * level|``; ``top``, the largest ``|centroid|``.
    """
    top = 0.0
    for c in centroids:
        top = max(top, abs(np.float64(c)))
    scale = top / 127.0 if top > 0 else 1.0
    size = centroids.shape[0]
    levels = np.empty(256, dtype=np.uint8)
    error = 0.0
    for e in range(256):
        value = np.float64(centroids[e % size])
        level = min(max(np.int64(np.round(value / scale)), -127), 127)
        levels[e] = np.uint8(level & 255)
        error = max(error, abs(value - scale * level))
    return levels, scale, error, top


@njit(inline="always", fastmath=FASTMATH)
def prepare_weights(y, level_scale, level_error, top, weights, q):
    """Query ``q``'s int8 weights (plus 128, uint8) and its bound's ``(offset, scale)``.

    ``y`` float32 (d,), the rotated query (or its QJL projection); ``weights``
    uint8 (nq, D64): row ``q`` gets ``round(y / w_scale) + 128``, 128 past
    ``d``. Returns ``(offset, scale, mass)``: ``scale = w_scale * level_scale``;
    ``offset``, the largest ``|sum_j y_j c_j - scale * S|`` over any codes (the
    weights' and the levels' rounding, each coordinate at its worst) plus the
    float32 rounding of the exact score's dot product; ``mass = sum_j |y_j| *
    top``, the largest ``|sum_j y_j c_j|``.
    """
    d = y.shape[0]
    largest = 0.0
    for j in range(d):
        largest = max(largest, abs(np.float64(y[j])))
    w_scale = largest / 127.0 if largest > 0 else 1.0
    error = 0.0
    mass = 0.0
    for j in range(d):
        yj = np.float64(y[j])
        w = np.int64(np.round(yj / w_scale))
        weights[q, j] = np.uint8(w + 128)
        error += abs(yj - w_scale * w) * top + w_scale * abs(w) * level_error
        mass += abs(yj) * top
    for j in range(d, weights.shape[1]):
        weights[q, j] = np.uint8(128)
    return error * 1.0001 + (d + 2) * 1.2e-7 * mass, w_scale * level_scale, mass


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_rowdot(codes, norms, gains, form, fc_max, y, y_sign, centroids, bits, mode,
                distance_form, n_chunks, label_offset, out_score, out_label):
    """:func:`.scan.scan_topk` through int8 dot products: the same arguments and results.

    Parameters
    ----------
    codes : uint8 (n, code_bytes)
        Packed row by row: ``ceil(d * bits / 8)`` index bytes (8 bits: a byte per
        coordinate), then ``ceil(d / 8)`` sign bytes when ``mode == MODE_QJL``.
    norms : float32 (n,) or (0,)
    gains : uint16 (n,) or (0,)
    form : float32 (4,)
        ``(pre, dist, ...)`` of :func:`.blocked_scan.filter_fields`: a row's
        factors are ``fa = pre * norm * gain`` (gain ``GAIN_ONE`` without the
        corrected estimator's gains) and ``fc = dist * norm^2``.
    fc_max : float
        Largest ``fc`` (the threshold's margin).
    y : float32 (nq, d)
        Rotated queries.
    y_sign : float32 (nq, d) or (nq, 0)
        Queries projected for the QJL signs.
    centroids : float32 (2**bits,)
    bits : int
        Index bits, 1 to 8.
    mode : int
    distance_form : bool
    n_chunks : int
        Split the codes into this many ranges per query.
    label_offset : int
        Label of row 0.
    out_score : float32 (nq, n_chunks, k), written (unsorted heaps)
    out_label : int64 (nq, n_chunks, k), written (-1 where fewer than k codes)
    """
    n = codes.shape[0]
    nq, d = y.shape
    width = (d + 63) // 64 * 64
    qjl = mode == MODE_QJL
    main_bytes = (d * bits + 7) // 8
    qjl_scale = np.float32(np.sqrt(np.pi / 2.0) / d / GAIN_ONE)
    # re-scored rows decode as in the row scan, through its tables
    main_table, sign_values, sign_table = row_tables(centroids, bits)
    levels, level_scale, level_error, top = byte_levels(centroids)
    sign_levels, sign_scale, sign_error, sign_top = byte_levels(sign_values)
    weights = np.empty((nq, width), dtype=np.uint8)
    sign_weights = np.empty((nq if qjl else 0, width), dtype=np.uint8)
    params = np.zeros(PARAMS * nq, dtype=np.float32)
    for q in range(nq):
        offset, scale, mass = prepare_weights(y[q], level_scale, level_error, top, weights, q)
        if qjl:
            s_offset, s_scale, s_mass = prepare_weights(y_sign[q], sign_scale, sign_error,
                                                        sign_top, sign_weights, q)
            # the filter adds two terms before the factors: allow for float32
            # rounding of each at its largest (gains are below 2**16)
            fs_max = 65536.0 * qjl_scale
            offset += 1e-6 * (mass + offset + fs_max * (s_mass + s_offset))
            params[PARAMS * q + 3] = np.float32(s_offset)
            params[PARAMS * q + 4] = np.float32(s_scale)
        params[PARAMS * q] = np.float32(offset)
        params[PARAMS * q + 1] = np.float32(scale)
    pre, dist = form[0], form[1]
    has_norms = norms.shape[0] > 0
    has_gains = mode == MODE_CORRECTED
    one = np.float32(1.0)
    gain_one = np.float32(GAIN_ONE)
    n_groups = (nq + GROUP_QUERIES - 1) // GROUP_QUERIES
    for task in prange(n_groups * n_chunks):
        q0, q1, c, lo, hi = task_span(task, n_chunks, GROUP_QUERIES, nq, n)
        local = params[PARAMS * q0: PARAMS * q1].copy()
        for q in range(q0, q1):
            heap_init(out_score[q, c], out_label[q, c])
            local[PARAMS * (q - q0) + 2] = _lowered(out_score[q, c, 0], fc_max)
        buf = np.zeros((ROWS, width), dtype=np.uint8)
        signs = np.zeros((ROWS if qjl else 0, width), dtype=np.uint8)
        level_sums = np.zeros(ROWS, dtype=np.int32)
        sign_sums = np.zeros(ROWS, dtype=np.int32)
        fa = np.zeros(ROWS, dtype=np.float32)
        fc = np.zeros(ROWS, dtype=np.float32)
        fs = np.zeros(ROWS, dtype=np.float32)
        values = np.zeros(d, dtype=np.float32)
        sign_row = np.zeros(d if qjl else 0, dtype=np.float32)
        for r0 in range(lo, hi, ROWS):
            count = min(ROWS, hi - r0)
            decode_levels(codes, r0, count, 0, bits, d, levels, buf, level_sums)
            if qjl:
                decode_levels(codes, r0, count, main_bytes, 1, d, sign_levels, signs,
                              sign_sums)
            for i in range(count):
                norm = norms[r0 + i] if has_norms else one
                gain = np.float32(gains[r0 + i]) if has_gains else gain_one
                if norm < 0:  # a zero vector of a centred cosine index
                    fa[i] = np.float32(0.0)
                    fc[i] = np.float32(-ZERO_VECTOR_SCORE)
                else:
                    fa[i] = pre * norm * gain
                    fc[i] = dist * norm * norm
                if qjl:
                    fs[i] = np.float32(gains[r0 + i]) * qjl_scale
            for q in range(q0, q1):
                mask = dot_filter(buf, signs, count, weights, sign_weights, q, level_sums,
                                  sign_sums, fa, fc, fs, local, q - q0)
                if mask == 0:
                    continue
                while mask != 0:
                    i = lowest_bit(mask)
                    mask &= mask - 1
                    v = r0 + i
                    row = codes[v]
                    decode_row(row, 0, bits, centroids, main_table, values)
                    s_sign = np.float32(0.0)
                    if qjl:
                        decode_row(row, main_bytes, 1, sign_values, sign_table, sign_row)
                        s_sign = dot(sign_row, y_sign[q])
                    s = combine(dot(values, y[q]), s_sign, v, mode, qjl_scale, norms, gains,
                                distance_form)
                    if s > out_score[q, c, 0]:
                        heap_push(out_score[q, c], out_label[q, c], s, v + label_offset)
                local[PARAMS * (q - q0) + 2] = _lowered(out_score[q, c, 0], fc_max)
