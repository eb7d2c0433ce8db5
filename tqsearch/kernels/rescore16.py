"""Exact float score of one row from the codebook, 16 nibbles at a time (AVX-512).

Rows that pass a VNNI engine's filter are re-scored exactly: for 4-bit codes
``sum_m y[m] * c[code_m]``, the rotated query ``y`` against the codebook ``c``.
From a float table ``T[m, e] = y[m] c[e]`` that is a byte load, a shift, a
mask, an index and a float load per coordinate, and building ``T`` costs a query
``16 d`` products and ``64 d`` bytes. Here there is no table: in the layout the
VNNI engines scan (:func:`.fastscan.to_vector_steps`) a full step keeps one
vector's four nibbles in four consecutive bytes, so four 32-bit loads, 64 bytes
apart, bring 16 nibbles in order; a variable shift (the high nibble for vectors
16 to 31 of a block) and a mask give their indices, ``vpermps`` looks the 16
codebook values up in one register, and one multiply by ``y[m : m + 16]``
gives what ``T`` would have held (a float32 product either way). 2-bit and
1-bit codes hold two or four coordinates a nibble: one lookup and one multiply
per coordinate of the nibble, the query's coordinates de-interleaved by
shuffles (:func:`level_sum_pairs`, :func:`level_sum_quads`).

The order of additions is fixed, the same in every caller and in
:func:`level_sum_numpy`: a nibble's coordinates first to last, then 16 partial
sums, lane ``j`` taking the nibbles ``m = j (mod 16)`` in increasing ``m``
(those of a last partial group one by one, the last partial step's stored
canonically), then halves added pairwise (lanes ``j`` and ``j + 8``, then
``j + 4``, ``j + 2``, ``j + 1``). Every product and sum is an AVX-512
operation with explicit rounding, which LLVM neither fuses nor regroups in
any fast-math context it is inlined into.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .simd import BLOCK, DOT_REQUIRES, _splat_value, dot_supported
from .typecheck import check_c_array

__all__ = ["LANES", "level_sum", "level_sum_numpy", "level_sum_pairs", "level_sum_quads"]

#: Coordinates summed together: one 512-bit register of float32.
LANES = 16

_i8 = ir.IntType(8)
_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_f32 = ir.FloatType()
_v4i32 = ir.VectorType(_i32, 4)
_v16i8 = ir.VectorType(_i8, LANES)
_v16i32 = ir.VectorType(_i32, LANES)
_v16f32 = ir.VectorType(_f32, LANES)


# Products and sums go through the AVX-512 forms with an explicit rounding
# ({rn-sae}: round to nearest, the default): LLVM neither fuses them into FMAs
# nor regroups them, whatever fast-math context the code is inlined into, so
# every caller (a batch, a single query's one compiled call) gets the same bits.
_ROUND_NEAREST = ir.Constant(_i32, 8)


def _arith(builder, name, a, b):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_v16f32, [_v16f32, _v16f32, _i32]),
        f"llvm.x86.avx512.{name}.ps.512")
    return builder.call(fn, [a, b, _ROUND_NEAREST])


def _add(builder, a, b):
    return _arith(builder, "add", a, b)


def _mul(builder, a, b):
    return _arith(builder, "mul", a, b)


def _reduce(builder, acc):
    """Lanes of ``acc`` added pairwise in halves: ``j + 8``, ``j + 4``, ``j + 2``, ``j + 1``."""
    zeros = ir.Constant(_v16f32, [0.0] * LANES)
    width = LANES
    while width > 1:
        width //= 2
        # lane j takes lane j + width (zero past the end)
        upper = builder.shuffle_vector(acc, zeros, ir.Constant(
            _v16i32, [j + width if j + width < LANES else LANES for j in range(LANES)]))
        acc = _add(builder, acc, upper)
    return builder.extract_element(acc, ir.Constant(_i32, 0))


def _make_level_sum(per):
    """The ``@intrinsic`` for codes of ``4 // per`` bits: ``per`` coordinates a nibble."""
    bits = 4 // per
    fname = {1: "level_sum", 2: "level_sum_pairs", 4: "level_sum_quads"}[per]

    def impl(typingctx, blocked, M, v, y, q, centroids):
        if not dot_supported():
            raise TypingError(f"{fname}: the compile target lacks {', '.join(DOT_REQUIRES)}")
        check_c_array(fname, "blocked", blocked, types.uint8, 2)
        check_c_array(fname, "y", y, types.float32, 2)
        check_c_array(fname, "centroids", centroids, types.float32, 1)
        for name, ty in (("M", M), ("v", v), ("q", q)):
            if not isinstance(ty, types.Integer):
                raise TypingError(f"{fname}: {name} must be an integer, got {ty}")
        sig = types.float32(blocked, types.intp, types.intp, y, types.intp, centroids)

        def codegen(context, builder, signature, args):
            arrays = [context.make_array(signature.args[i])(context, builder, args[i])
                      for i in (0, 3, 5)]
            codes, queries, book = (a.data for a in arrays)
            M, v, q = args[1], args[2], args[4]
            d = cgutils.unpack_tuple(builder, arrays[1].shape, 2)[1]
            c64 = lambda x: ir.Constant(_i64, x)  # noqa: E731
            c32 = lambda x: ir.Constant(_i32, x)  # noqa: E731
            permps = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_v16f32, [_v16f32, _v16i32]),
                "llvm.x86.avx512.permvar.sf.512")
            stride = cgutils.unpack_tuple(builder, arrays[1].strides, 2)[0]  # bytes a query
            y_row = builder.bitcast(
                builder.gep(builder.bitcast(queries, _i8.as_pointer()), [builder.mul(q, stride)]),
                _f32.as_pointer())
            values = builder.load(builder.bitcast(book, _v16f32.as_pointer()), align=4)
            low_bits = (1 << bits) - 1

            # the vector's block, its byte p within a step and its nibble's shift
            r = builder.and_(v, c64(BLOCK - 1))
            p = builder.add(builder.shl(builder.and_(r, c64(7)), c64(1)),
                            builder.and_(builder.lshr(r, c64(3)), c64(1)))
            shift = builder.trunc(builder.shl(builder.lshr(r, c64(4)), c64(2)), _i32)
            shifts = _splat_value(builder, shift, LANES)
            row = builder.gep(codes, [builder.mul(builder.lshr(v, c64(5)),
                                                  builder.mul(M, c64(16)))])
            words = builder.gep(row, [builder.mul(p, c64(4))])
            acc = cgutils.alloca_once_value(builder, ir.Constant(_v16f32, [0.0] * LANES))

            def coordinates(first):
                """``per`` vectors: lane j of vector t holds ``y[first + per j + t]``."""
                loads = [builder.load(builder.bitcast(
                    builder.gep(y_row, [builder.add(first, c64(LANES * i))]),
                    _v16f32.as_pointer()), align=4) for i in range(per)]
                if per == 1:
                    return loads
                out = []
                for t in range(per):
                    halves = []
                    for a, b in zip(loads[::2], loads[1::2], strict=True):
                        lanes = 2 * LANES // per
                        halves.append(builder.shuffle_vector(a, b, ir.Constant(
                            ir.VectorType(_i32, lanes), [per * j + t for j in range(lanes)])))
                    out.append(halves[0] if len(halves) == 1 else builder.shuffle_vector(
                        halves[0], halves[1], ir.Constant(_v16i32, list(range(LANES)))))
                return out

            # four full steps (16 sub-codes, 16 per coordinates) an iteration, while
            # all their coordinates are within the query
            groups = builder.udiv(M, c64(LANES))
            inside = builder.udiv(d, c64(LANES * per))
            groups = builder.select(builder.icmp_unsigned("<", inside, groups), inside, groups)
            with cgutils.for_range(builder, groups) as loop:
                word4 = ir.Constant(_v4i32, ir.Undefined)
                for t in range(4):
                    at = builder.mul(builder.add(builder.mul(loop.index, c64(4)), c64(t)),
                                     c64(64))
                    ptr = builder.bitcast(builder.gep(words, [at]), _i32.as_pointer())
                    word4 = builder.insert_element(word4, builder.load(ptr, align=1), c32(t))
                nibbles = builder.lshr(builder.zext(builder.bitcast(word4, _v16i8), _v16i32),
                                       shifts)
                ys = coordinates(builder.mul(loop.index, c64(LANES * per)))
                total = None
                for t in range(per):  # coordinate 0 of the nibble first
                    index = builder.and_(builder.lshr(nibbles, ir.Constant(
                        _v16i32, [bits * t] * LANES)), ir.Constant(_v16i32, [low_bits] * LANES))
                    product = _mul(builder, ys[t], builder.call(permps, [values, index]))
                    total = product if total is None else _add(builder, total, product)
                builder.store(_add(builder, builder.load(acc), total), acc)
            # the rest one by one: in full steps at byte 64 s + 4 p + t, in a last
            # partial step (from 4 * (M // 4) on) at byte 16 m + p; coordinates
            # from d on (padding) add nothing
            full_end = builder.mul(builder.udiv(M, c64(4)), c64(4))
            first = builder.mul(groups, c64(LANES))
            with cgutils.for_range(builder, builder.sub(M, first)) as loop:
                m = builder.add(first, loop.index)
                in_full = builder.icmp_unsigned("<", m, full_end)
                at_full = builder.add(builder.add(
                    builder.mul(builder.sub(m, builder.and_(m, c64(3))), c64(16)),
                    builder.mul(p, c64(4))), builder.and_(m, c64(3)))
                at_tail = builder.add(builder.mul(m, c64(16)), p)
                byte = builder.load(builder.gep(row, [builder.select(in_full, at_full,
                                                                     at_tail)]))
                nib = builder.lshr(builder.zext(byte, _i32), shift)
                total = None  # the nibble's value in every lane
                for t in range(per):
                    coord = builder.add(builder.mul(m, c64(per)), c64(t))
                    there = builder.icmp_unsigned("<", coord, d)
                    y_at = builder.load(builder.gep(y_row, [builder.select(there, coord,
                                                                           c64(0))]))
                    y_at = builder.select(there, y_at, ir.Constant(_f32, 0.0))
                    index = builder.and_(builder.lshr(nib, c32(bits * t)), c32(low_bits))
                    level = builder.extract_element(values, index)
                    product = _mul(builder, _splat_value(builder, y_at, LANES),
                                   _splat_value(builder, level, LANES))
                    total = product if total is None else _add(builder, total, product)
                # into lane m % 16 alone (the others add +0)
                lane = builder.trunc(builder.and_(m, c64(LANES - 1)), _i32)
                mine = builder.icmp_unsigned("==", ir.Constant(_v16i32, list(range(LANES))),
                                             _splat_value(builder, lane, LANES))
                total = builder.select(mine, total, ir.Constant(_v16f32, [0.0] * LANES))
                builder.store(_add(builder, builder.load(acc), total), acc)
            return _reduce(builder, builder.load(acc))

        return sig, codegen

    impl.__name__ = fname
    impl.__doc__ = f"""``sum_m sum_t y[q, {per} m + t] * centroids[field_t(code_m(v))]`` of
    vector ``v`` (float32), in this module's order: {4 // per}-bit codes, {per}
    coordinate(s) a nibble (coordinate ``{per} m + t`` in bits ``{bits} t`` of
    nibble ``m``).

    Parameters
    ----------
    blocked : uint8 (nblocks, 16 * M), C-contiguous
        Codes in the blocked layout with full steps regrouped per vector
        (:func:`.fastscan.to_vector_steps`); a last partial step canonical.
    M : int
        Sub-codes (nibbles) per vector.
    v : int
        Vector number: block ``v // 32``, position ``v % 32``.
    y : float32 (nq, d), C-contiguous
        Rotated queries; coordinates from ``d`` on count as zero.
    q : int
    centroids : float32 (16,), C-contiguous
        The codebook, zero-padded to 16 entries.

    Nothing is bounds-checked: callers pass ``v < 32 * nblocks`` and ``q < nq``.
    """
    return intrinsic(impl)


#: 4-bit codes: one coordinate a nibble.
level_sum = _make_level_sum(1)
#: 2-bit codes: two coordinates a nibble.
level_sum_pairs = _make_level_sum(2)
#: 1-bit codes: four coordinates a nibble.
level_sum_quads = _make_level_sum(4)


def level_sum_numpy(blocked, M, v, y, q, centroids, per=1):
    """:func:`level_sum` (``per`` 1), :func:`level_sum_pairs` (2) or
    :func:`level_sum_quads` (4) in NumPy, in the same order of additions."""
    bits = 4 // per
    r = int(v) & (BLOCK - 1)
    p = 2 * (r & 7) + ((r >> 3) & 1)
    shift = 4 * (r >> 4)
    row = blocked[int(v) // BLOCK]
    m = np.arange(M)
    full = 4 * (M // 4)
    at = np.where(m < full, 16 * (m - m % 4) + 4 * p + m % 4, 16 * m + p)
    nibbles = (row[at] >> shift) & 15
    d = y.shape[1]
    values = np.zeros(M, dtype=np.float32)
    for t in range(per):  # coordinate 0 of the nibble first
        coord = per * m + t
        coords = np.where(coord < d, y[q, np.minimum(coord, d - 1)], 0).astype(np.float32)
        product = (coords * centroids[(nibbles >> (bits * t)) & ((1 << bits) - 1)])
        values = (values + product.astype(np.float32)).astype(np.float32)
    acc = np.zeros(LANES, dtype=np.float32)
    for j in range(M):
        acc[j % LANES] = np.float32(acc[j % LANES] + values[j])
    width = LANES
    while width > 1:
        width //= 2
        acc = (acc[:width] + acc[width: 2 * width]).astype(np.float32)
    return np.float32(acc[0])
