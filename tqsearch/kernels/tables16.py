"""Small tables applied a whole row at a time as LLVM vectors: query tables, byte decoders.

A query's scan starts by building its tables: a float table ``T`` (rows, 16) of
inner products with the codebook, its ``uint8`` quantization and the bound of the
quantization's error (:mod:`tqsearch.kernels.fastscan`, :mod:`.dotscan`). For a
single query this is a fixed cost beside a scan of a few thousand codes, and plain
Numba loops over 16 entries stay scalar: LLVM unrolls them fully before its loop
vectorizer runs and cannot prove the rows free of aliasing, and it does not
vectorize min/max reductions without ``nnan``. The functions here emit each row
as one ``<16 x float>`` (or ``<16 x double>``) value with the same operations, in
the same order, as the scalar definitions given in their docstrings (their NumPy
twins), so results do not depend on which runs.

Row-major codes are decoded the same way: :func:`expand_bytes` moves the values a
byte of codes stands for (a row of a byte table) as one short vector.

Nothing is bounds-checked: callers pass arrays of the shapes documented.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .typecheck import check_c_array

__all__ = ["fill_table", "row_ranges", "quantize_rows", "level_errors", "expand_bytes"]

WIDTH = 16

_f32 = ir.FloatType()
_f64 = ir.DoubleType()
_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_v32 = ir.VectorType(_f32, WIDTH)
_v64 = ir.VectorType(_f64, WIDTH)


def _array(context, builder, ty, value):
    return context.make_array(ty)(context, builder, value)


def _const(value):
    return ir.Constant(_i64, value)


def _row_ptr(builder, data, row, vec):
    return builder.bitcast(builder.gep(data, [builder.mul(row, _const(WIDTH))]), vec.as_pointer())


def _splat(builder, value, vec):
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(_i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(_i32, WIDTH), [0] * WIDTH))


def _call(builder, name, vec, args, ret=None):
    fnty = ir.FunctionType(ret or vec, [vec] * len(args))
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), args)


def _reduce(builder, vec, op):
    """Smallest (``op`` "<") or largest (">") lane of a vector of finite floats, by
    halving: compare and select, the reduction ``minps``/``maxps`` do (LLVM's
    reduction intrinsics keep NaN semantics and go lane by lane without ``nnan``)."""
    n = vec.type.count
    while n > 1:
        n //= 2
        lo = builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(_i32, n), list(range(n))))
        hi = builder.shuffle_vector(vec, vec,
                                    ir.Constant(ir.VectorType(_i32, n), list(range(n, 2 * n))))
        vec = builder.select(builder.fcmp_ordered(op, lo, hi), lo, hi)
    return builder.extract_element(vec, ir.Constant(_i32, 0))


def _rows(builder, array):
    return cgutils.unpack_tuple(builder, array.shape, 2)[0]


@intrinsic
def fill_table(typingctx, table, y, patterns):
    """``table[f, e] = sum_t y[per * f + t] * patterns[t, e]`` for every row ``f``.

    Terms are added left to right (``t = 0`` first), each a float32 product;
    coordinates ``per * f + t >= len(y)`` count as 0. ``table`` is float32 (F, 16),
    ``y`` float32 (d,), ``patterns`` float32 (per, 16) with ``per`` in 1, 2, 4:
    the nibble tables of :func:`tqsearch.kernels.scan.build_field_lut`, whose
    pattern ``t`` is the centroid coded by bits ``t * bits ..`` of each nibble.
    """
    fname = "fill_table"
    check_c_array(fname, "table", table, types.float32, 2)
    check_c_array(fname, "y", y, types.float32, 1)
    check_c_array(fname, "patterns", patterns, types.float32, 2)
    sig = types.void(table, y, patterns)

    def codegen(context, builder, signature, args):
        t, yv, p = (_array(context, builder, signature.args[i], args[i]) for i in range(3))
        d = cgutils.unpack_tuple(builder, yv.shape, 1)[0]
        per = _rows(builder, p)
        zero = ir.Constant(_f32, 0.0)
        for count in (1, 2, 4):  # one straight-line body per term count
            with builder.if_then(builder.icmp_signed("==", per, _const(count))):
                pats = [builder.load(_row_ptr(builder, p.data, _const(i), _v32), align=4)
                        for i in range(count)]
                with cgutils.for_range(builder, _rows(builder, t)) as loop:
                    acc = None
                    for i in range(count):
                        j = builder.add(builder.mul(loop.index, _const(count)), _const(i))
                        inside = builder.icmp_signed("<", j, d)
                        value = builder.load(builder.gep(yv.data, [builder.select(inside, j,
                                                                                  _const(0))]))
                        coef = builder.select(inside, value, zero)
                        term = builder.fmul(_splat(builder, coef, _v32), pats[i])
                        acc = term if acc is None else builder.fadd(acc, term)
                    builder.store(acc, _row_ptr(builder, t.data, loop.index, _v32), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def row_ranges(typingctx, table, low, width):
    """``low[m] = min(table[m])`` and ``width[m] = float64(max(table[m])) - float64(low[m])``.

    ``table`` float32 (M, 16) with finite entries, ``low`` float32 (M,),
    ``width`` float64 (M,).
    """
    fname = "row_ranges"
    check_c_array(fname, "table", table, types.float32, 2)
    check_c_array(fname, "low", low, types.float32, 1)
    check_c_array(fname, "width", width, types.float64, 1)
    sig = types.void(table, low, width)

    def codegen(context, builder, signature, args):
        t, lo, wd = (_array(context, builder, signature.args[i], args[i]) for i in range(3))
        with cgutils.for_range(builder, _rows(builder, t)) as loop:
            row = builder.load(_row_ptr(builder, t.data, loop.index, _v32), align=4)
            a, b = _reduce(builder, row, "<"), _reduce(builder, row, ">")
            builder.store(a, builder.gep(lo.data, [loop.index]))
            builder.store(builder.fsub(builder.fpext(b, _f64), builder.fpext(a, _f64)),
                          builder.gep(wd.data, [loop.index]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def quantize_rows(typingctx, table, low, inv, out):
    """``out[m, c] = min(trunc((table[m, c] - low[m]) * float32(inv) + 0.5), 255)``.

    ``table`` float32 (M, 16), ``low`` float32 (M,) with ``table[m] >= low[m]``,
    ``inv`` a float, ``out`` uint8 (M, 16); the arithmetic is float32 (its
    rounding moves a position by under 1e-4 of a step, inside the margin of
    :data:`tqsearch.kernels.fastscan.ROUNDING`).
    """
    fname = "quantize_rows"
    check_c_array(fname, "table", table, types.float32, 2)
    check_c_array(fname, "low", low, types.float32, 1)
    check_c_array(fname, "out", out, types.uint8, 2)
    if not isinstance(inv, types.Float):
        raise TypingError(f"{fname}: inv must be a float, got {inv}")
    sig = types.void(table, low, types.float32, out)

    def codegen(context, builder, signature, args):
        t = _array(context, builder, signature.args[0], args[0])
        lo = _array(context, builder, signature.args[1], args[1])
        o = _array(context, builder, signature.args[3], args[3])
        scale = _splat(builder, args[2], _v32)
        half = ir.Constant(_v32, [0.5] * WIDTH)
        top = ir.Constant(ir.VectorType(_i32, WIDTH), [255] * WIDTH)
        bytes16 = ir.VectorType(ir.IntType(8), WIDTH)
        with cgutils.for_range(builder, _rows(builder, t)) as loop:
            row = builder.load(_row_ptr(builder, t.data, loop.index, _v32), align=4)
            base = _splat(builder, builder.load(builder.gep(lo.data, [loop.index])), _v32)
            x = builder.fadd(builder.fmul(builder.fsub(row, base), scale), half)
            q = builder.fptosi(x, ir.VectorType(_i32, WIDTH))  # x >= 0.5: truncation floors
            q = builder.select(builder.icmp_signed("<", q, top), q, top)
            builder.store(builder.trunc(q, bytes16), _row_ptr(builder, o.data, loop.index,
                                                                bytes16), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def level_errors(typingctx, y, centroids, steps, levels, worst):
    """``worst[m] = max_e |float64(y[m] * centroids[e]) - steps[m] * levels[e]|``.

    The largest error of coordinate ``m``'s int8 term over the codebook
    (:func:`tqsearch.kernels.dotscan.prepare_dot`): ``y`` float32 (M,),
    ``centroids`` float32 (16,), ``steps`` float64 (M,), ``levels`` float64 (16,),
    ``worst`` float64 (M,).
    """
    fname = "level_errors"
    for name, ty, dtype in (("y", y, types.float32), ("centroids", centroids, types.float32),
                            ("steps", steps, types.float64), ("levels", levels, types.float64),
                            ("worst", worst, types.float64)):
        check_c_array(fname, name, ty, dtype, 1)
    sig = types.void(y, centroids, steps, levels, worst)

    def codegen(context, builder, signature, args):
        yv, cv, sv, lv, wv = (_array(context, builder, signature.args[i], args[i])
                              for i in range(5))
        book = builder.load(builder.bitcast(cv.data, _v32.as_pointer()), align=4)
        lvl = builder.load(builder.bitcast(lv.data, _v64.as_pointer()), align=8)
        n = cgutils.unpack_tuple(builder, yv.shape, 1)[0]
        with cgutils.for_range(builder, n) as loop:
            m = loop.index
            products = builder.fpext(
                builder.fmul(_splat(builder, builder.load(builder.gep(yv.data, [m])), _v32), book),
                _v64)
            step = _splat(builder, builder.load(builder.gep(sv.data, [m])), _v64)
            gaps = _call(builder, "llvm.fabs.v16f64", _v64,
                         [builder.fsub(products, builder.fmul(step, lvl))])
            builder.store(_reduce(builder, gaps, ">"), builder.gep(wv.data, [m]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def expand_bytes(typingctx, row, start, count, table, out):
    """``out[w * i : w * (i + 1)] = table[row[start + i]]`` for ``i < count``.

    Decodes packed codes a byte at a time: ``table`` float32 (256, w), ``w`` in
    2, 4, 8 (the values of the ``w`` coordinates a byte holds, see
    :func:`tqsearch.kernels.scan.byte_table`), each row moved as one ``<w x
    float>``; ``row`` uint8 (>= start + count,), ``out`` float32 (>= w * count,).
    """
    fname = "expand_bytes"
    check_c_array(fname, "row", row, types.uint8, 1)
    check_c_array(fname, "table", table, types.float32, 2)
    check_c_array(fname, "out", out, types.float32, 1)
    sig = types.void(row, types.intp, types.intp, table, out)

    def codegen(context, builder, signature, args):
        r = _array(context, builder, signature.args[0], args[0])
        t = _array(context, builder, signature.args[3], args[3])
        o = _array(context, builder, signature.args[4], args[4])
        start, count = args[1], args[2]
        width = cgutils.unpack_tuple(builder, t.shape, 2)[1]
        for w in (2, 4, 8):  # one straight-line body per width
            vec = ir.VectorType(_f32, w)
            with builder.if_then(builder.icmp_signed("==", width, _const(w))):
                with cgutils.for_range(builder, count) as loop:
                    byte = builder.load(builder.gep(r.data, [builder.add(start, loop.index)]))
                    src = builder.gep(t.data, [builder.mul(builder.zext(byte, _i64), _const(w))])
                    dst = builder.gep(o.data, [builder.mul(loop.index, _const(w))])
                    value = builder.load(builder.bitcast(src, vec.as_pointer()), align=4)
                    builder.store(value, builder.bitcast(dst, vec.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


# -- NumPy twins ------------------------------------------------------------------
# The definitions above on NumPy arrays: used when the kernels run as Python
# (NUMBA_DISABLE_JIT=1) and compared with the intrinsics by the tests.

def _fill_table_numpy(table, y, patterns):
    per = patterns.shape[0]
    padded = np.zeros(table.shape[0] * per, dtype=np.float32)
    padded[: min(y.shape[0], padded.shape[0])] = y[: padded.shape[0]]
    coefs = padded.reshape(-1, per)
    acc = coefs[:, :1] * patterns[0]
    for t in range(1, per):
        acc = acc + coefs[:, t: t + 1] * patterns[t]
    table[:] = acc


def _row_ranges_numpy(table, low, width):
    low[:] = table.min(axis=1)
    width[:] = table.max(axis=1).astype(np.float64) - low.astype(np.float64)


def _quantize_rows_numpy(table, low, inv, out):
    x = (table - low[:, None]) * np.float32(inv) + np.float32(0.5)
    out[:] = np.minimum(x.astype(np.int32), 255).astype(np.uint8)


def _level_errors_numpy(y, centroids, steps, levels, worst):
    products = (y[:, None] * centroids[None, :]).astype(np.float64)
    worst[:] = np.abs(products - steps[:, None] * levels[None, :]).max(axis=1)


def _expand_bytes_numpy(row, start, count, table, out):
    w = table.shape[1]
    out[: w * count] = table[row[start: start + count]].reshape(-1)


NUMPY_TWINS = {
    "expand_bytes": _expand_bytes_numpy,
    "fill_table": _fill_table_numpy,
    "row_ranges": _row_ranges_numpy,
    "quantize_rows": _quantize_rows_numpy,
    "level_errors": _level_errors_numpy,
}

if numba.config.DISABLE_JIT:
    globals().update(NUMPY_TWINS)
