"""Exact float score of one row of 4-bit codes, 16 coordinates at a time (AVX-512).

Rows that pass the int8 engine's filter (:mod:`.dotscan`) are re-scored exactly:
``sum_m y[m] * c[code_m]``, the rotated query ``y`` against the codebook ``c``.
From a float table ``T[m, e] = y[m] c[e]`` that is a byte load, a shift, a
mask, an index and a float load per coordinate, and building ``T`` costs a query
``16 d`` products and ``64 d`` bytes. Here there is no table: in the layout the
int8 engine scans (:func:`.fastscan.to_vector_steps`) a full step keeps one
vector's four codes in four consecutive bytes, so four 32-bit loads, 64 bytes
apart, bring 16 codes in order; a variable shift (the high nibble for vectors
16 to 31 of a block) and a mask give their indices, ``vpermps`` looks the 16
codebook values up in one register, and one multiply by ``y[m : m + 16]``
gives what ``T`` would have held (a float32 product either way).

The order of additions is fixed, the same in every caller and in
:func:`level_sum_numpy`: 16 partial sums, lane ``j`` taking the coordinates
``m = j (mod 16)`` in increasing ``m`` (those of a last partial group one by
one, the last partial step's stored canonically), then halves added pairwise
(lanes ``j`` and ``j + 8``, then ``j + 4``, ``j + 2``, ``j + 1``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .simd import BLOCK, DOT_REQUIRES, dot_supported
from .typecheck import check_c_array

__all__ = ["LANES", "level_sum", "level_sum_numpy"]

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


def _reduce(builder, acc):
    """Lanes of ``acc`` added pairwise in halves: ``j + 8``, ``j + 4``, ``j + 2``, ``j + 1``."""
    width = LANES
    while width > 1:
        width //= 2
        lo = builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(_i32, width),
                                                          list(range(width))))
        hi = builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(_i32, width),
                                                          list(range(width, 2 * width))))
        acc = builder.fadd(lo, hi)
    return builder.extract_element(acc, ir.Constant(_i32, 0))


@intrinsic
def level_sum(typingctx, blocked, M, v, y, q, centroids):
    """``sum_m y[q, m] * centroids[code_m(v)]`` of vector ``v`` (float32), in this
    module's order.

    Parameters
    ----------
    blocked : uint8 (nblocks, 16 * M), C-contiguous
        4-bit codes in the blocked layout with full steps regrouped per vector
        (:func:`.fastscan.to_vector_steps`); a last partial step canonical.
    M : int
        Coordinates (sub-codes) per vector.
    v : int
        Vector number: block ``v // 32``, position ``v % 32``.
    y : float32 (nq, >= M), C-contiguous
        Rotated queries.
    q : int
    centroids : float32 (16,), C-contiguous

    Nothing is bounds-checked: callers pass ``v < 32 * nblocks`` and ``q < nq``.
    """
    fname = "level_sum"
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

        # the vector's block, its byte p within a step and its nibble's shift
        r = builder.and_(v, c64(BLOCK - 1))
        p = builder.add(builder.shl(builder.and_(r, c64(7)), c64(1)),
                        builder.and_(builder.lshr(r, c64(3)), c64(1)))
        shift = builder.trunc(builder.shl(builder.lshr(r, c64(4)), c64(2)), _i32)
        one = builder.insert_element(ir.Constant(_v16i32, ir.Undefined), shift, c32(0))
        shifts = builder.shuffle_vector(one, ir.Constant(_v16i32, ir.Undefined),
                                        ir.Constant(_v16i32, [0] * LANES))
        row = builder.gep(codes, [builder.mul(builder.lshr(v, c64(5)), builder.mul(M, c64(16)))])
        words = builder.gep(row, [builder.mul(p, c64(4))])
        acc = cgutils.alloca_once_value(builder, ir.Constant(_v16f32, [0.0] * LANES))

        # four full steps (16 codes) an iteration
        with cgutils.for_range(builder, builder.udiv(M, c64(LANES))) as loop:
            word4 = ir.Constant(_v4i32, ir.Undefined)
            for t in range(4):
                at = builder.mul(builder.add(builder.mul(loop.index, c64(4)), c64(t)), c64(64))
                ptr = builder.bitcast(builder.gep(words, [at]), _i32.as_pointer())
                word4 = builder.insert_element(word4, builder.load(ptr, align=1), c32(t))
            index = builder.and_(builder.lshr(builder.zext(builder.bitcast(word4, _v16i8),
                                                           _v16i32), shifts),
                                 ir.Constant(_v16i32, [15] * LANES))
            coords = builder.load(builder.bitcast(
                builder.gep(y_row, [builder.mul(loop.index, c64(LANES))]),
                _v16f32.as_pointer()), align=4)
            product = builder.fmul(coords, builder.call(permps, [values, index]))
            builder.store(builder.fadd(builder.load(acc), product), acc)
        # the rest one by one: in full steps at byte 64 s + 4 p + t, in a last
        # partial step (from 4 * (M // 4) on) at byte 16 m + p
        full_end = builder.mul(builder.udiv(M, c64(4)), c64(4))
        first = builder.mul(builder.udiv(M, c64(LANES)), c64(LANES))
        with cgutils.for_range(builder, builder.sub(M, first)) as loop:
            m = builder.add(first, loop.index)
            in_full = builder.icmp_unsigned("<", m, full_end)
            at_full = builder.add(builder.add(builder.mul(builder.sub(m, builder.and_(m, c64(3))),
                                                          c64(16)),
                                              builder.mul(p, c64(4))), builder.and_(m, c64(3)))
            at_tail = builder.add(builder.mul(m, c64(16)), p)
            byte = builder.load(builder.gep(row, [builder.select(in_full, at_full, at_tail)]))
            nib = builder.and_(builder.lshr(builder.zext(byte, _i32), shift), c32(15))
            product = builder.fmul(builder.load(builder.gep(y_row, [m])),
                                   builder.extract_element(values, nib))
            lane = builder.and_(m, c64(LANES - 1))
            sums = builder.load(acc)
            builder.store(builder.insert_element(
                sums, builder.fadd(builder.extract_element(sums, lane), product), lane), acc)
        return _reduce(builder, builder.load(acc))

    return sig, codegen


def level_sum_numpy(blocked, M, v, y, q, centroids):
    """:func:`level_sum` in NumPy, in the same order of additions."""
    r = int(v) & (BLOCK - 1)
    p = 2 * (r & 7) + ((r >> 3) & 1)
    shift = 4 * (r >> 4)
    row = blocked[int(v) // BLOCK]
    m = np.arange(M)
    full = 4 * (M // 4)
    at = np.where(m < full, 16 * (m - m % 4) + 4 * p + m % 4, 16 * m + p)
    products = (y[q, :M] * centroids[(row[at] >> shift) & 15]).astype(np.float32)
    acc = np.zeros(LANES, dtype=np.float32)
    for j in range(M):
        acc[j % LANES] = np.float32(acc[j % LANES] + products[j])
    width = LANES
    while width > 1:
        width //= 2
        acc = (acc[:width] + acc[width: 2 * width]).astype(np.float32)
    return np.float32(acc[0])
