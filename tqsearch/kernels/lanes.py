"""Whole-row operations on tiles of ``LANES`` float32 columns, emitted as LLVM vectors.

A tile is a C-contiguous float32 array of shape ``(rows, LANES)``: row ``j`` holds
coordinate ``j`` of ``LANES`` vectors (see :mod:`tqsearch.kernels.rotate`). The
functions here load and store whole rows as ``<LANES x float>`` values, which LLVM
lowers to one AVX register (two SSE registers, or half an AVX-512 one: on cores
that split 512-bit operations in two, eight lanes per row cost the same and keep
a tile of a few hundred rows within the L1 cache). Plain Numba loops over the
lanes do not get this code: LLVM unrolls them fully before its loop vectorizer
runs, and the unrolled body cannot be proven free of aliasing between the rows
it reads and writes. Every function has a NumPy twin used when Numba's JIT is
disabled.

Nothing is bounds-checked: callers allocate tiles of ``LANES`` columns and pass
row indices inside them.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["LANES", "butterfly2", "butterfly4", "move_row", "add_row", "matmul_rows", "load_tile",
           "store_block", "centre_rows", "scale_lanes", "grid_fit", "grid_cells"]

LANES = 8

_f32 = ir.FloatType()
_i64 = ir.IntType(64)
_row = ir.VectorType(_f32, LANES)


def _check_tile(ty, fname, name="tile"):
    if not (isinstance(ty, types.Array) and ty.dtype == types.float32 and ty.ndim == 2
            and ty.layout == "C"):
        raise TypingError(f"{fname}: {name} must be a C-contiguous 2-D float32 array, got {ty}")


def _row_pointer(builder, data, row):
    start = builder.mul(row, ir.Constant(_i64, LANES))
    return builder.bitcast(builder.gep(data, [start]), _row.as_pointer())


def _rows(builder, data, first, step, count):
    """Pointers to rows ``first + i * step``, ``i < count``."""
    return [_row_pointer(builder, data, builder.add(first, builder.mul(step, _const(i))))
            for i in range(count)]


def _const(value):
    return ir.Constant(_i64, value)


def _load(builder, ptr):
    return builder.load(ptr, align=4)


def _store(builder, value, ptr):
    builder.store(value, ptr, align=4)


def _vector_arg(ty, fname, name, dtype=types.float32, ndim=1):
    if not (isinstance(ty, types.Array) and ty.dtype == dtype and ty.ndim == ndim
            and ty.layout == "C"):
        raise TypingError(f"{fname}: {name} must be a C-contiguous {ndim}-D {dtype} array, "
                          f"got {ty}")


def _splat(builder, value):
    row = builder.insert_element(ir.Constant(_row, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(row, ir.Constant(_row, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _fabs(builder, value):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_row, [_row]),
                                        f"llvm.fabs.v{LANES}f32")
    return builder.call(fn, [value])


def _array(context, builder, ty, value):
    return context.make_array(ty)(context, builder, value)


@intrinsic
def butterfly2(typingctx, tile, j, h):
    """Rows ``(j, j + h) <- (a + b, a - b)``: one Walsh-Hadamard butterfly."""
    _check_tile(tile, "butterfly2")
    sig = types.void(tile, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pa, pb = _rows(builder, data, args[1], args[2], 2)
        a, b = _load(builder, pa), _load(builder, pb)
        _store(builder, builder.fadd(a, b), pa)
        _store(builder, builder.fsub(a, b), pb)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def butterfly4(typingctx, tile, j, h):
    """Two Walsh-Hadamard stages (strides ``h`` and ``2h``) on rows ``j + {0, h, 2h, 3h}``."""
    _check_tile(tile, "butterfly4")
    sig = types.void(tile, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        ptrs = _rows(builder, data, args[1], args[2], 4)
        a, b, c, e = (_load(builder, p) for p in ptrs)
        s0, d0 = builder.fadd(a, b), builder.fsub(a, b)
        s1, d1 = builder.fadd(c, e), builder.fsub(c, e)
        for value, ptr in zip((builder.fadd(s0, s1), builder.fadd(d0, d1),
                               builder.fsub(s0, s1), builder.fsub(d0, d1)), ptrs, strict=True):
            _store(builder, value, ptr)
        return context.get_dummy_value()

    return sig, codegen


def _make_row_update(accumulate):
    fname = "add_row" if accumulate else "move_row"

    def impl(typingctx, dst, j, src, k, factor):
        _check_tile(dst, fname, "dst")
        _check_tile(src, fname, "src")
        sig = types.void(dst, types.intp, src, types.intp, types.float32)

        def codegen(context, builder, signature, args):
            out = context.make_array(signature.args[0])(context, builder, args[0]).data
            inp = context.make_array(signature.args[2])(context, builder, args[2]).data
            target = _row_pointer(builder, out, args[1])
            value = builder.fmul(_load(builder, _row_pointer(builder, inp, args[3])),
                                 _splat(builder, args[4]))
            if accumulate:
                value = builder.fadd(_load(builder, target), value)
            _store(builder, value, target)
            return context.get_dummy_value()

        return sig, codegen

    impl.__name__ = fname
    impl.__doc__ = ("``dst[j, :] += src[k, :] * factor``." if accumulate else
                    "``dst[j, :] = src[k, :] * factor`` (``dst`` and ``src`` may be the "
                    "same tile).")
    return intrinsic(impl)


move_row = _make_row_update(False)
add_row = _make_row_update(True)


@intrinsic
def matmul_rows(typingctx, dst, matrix, src):
    """``dst[r, :] = sum_j matrix[r, j] * src[j, :]``: a d x d matrix times a tile.

    Four output rows are accumulated at once, so every source row loaded
    feeds four multiply-adds. ``dst`` and ``src`` must be different tiles.
    """
    _check_tile(dst, "matmul_rows", "dst")
    _check_tile(src, "matmul_rows", "src")
    _vector_arg(matrix, "matmul_rows", "matrix", ndim=2)
    sig = types.void(dst, matrix, src)

    def codegen(context, builder, signature, args):
        out, mat, inp = (_array(context, builder, ty, v)
                         for ty, v in zip(signature.args, args, strict=True))
        d = cgutils.unpack_tuple(builder, mat.shape, 2)[0]
        zero = ir.Constant(_row, [0.0] * LANES)

        def emit(first, count):
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(count)]
            with cgutils.for_range(builder, d) as loop:
                row = _load(builder, _row_pointer(builder, inp.data, loop.index))
                for i in range(count):
                    at = builder.add(builder.mul(builder.add(first, ir.Constant(_i64, i)), d),
                                     loop.index)
                    weight = _splat(builder, builder.load(builder.gep(mat.data, [at])))
                    builder.store(builder.fadd(builder.load(accs[i]),
                                               builder.fmul(weight, row)), accs[i])
            for i in range(count):
                _store(builder, builder.load(accs[i]), _row_pointer(
                    builder, out.data, builder.add(first, ir.Constant(_i64, i))))

        four = ir.Constant(_i64, 4)
        grouped = builder.sdiv(d, four)
        with cgutils.for_range(builder, grouped) as loop:
            emit(builder.mul(loop.index, four), 4)
        done = builder.mul(grouped, four)
        with cgutils.for_range(builder, builder.sub(d, done)) as loop:
            emit(builder.add(done, loop.index), 1)
        return context.get_dummy_value()

    return sig, codegen


def _transpose(builder, rows):
    """Transpose ``LANES`` vectors of ``LANES`` floats (LANES = 8) with three shuffle stages.

    Stage ``s`` pairs vectors ``2^s`` apart and interleaves blocks of ``2^s``
    elements, the classic unpack / shuffle / lane-permute sequence.
    """
    n = len(rows)
    width = 1
    while width < n:
        out = list(rows)
        for base in range(0, n, 2 * width):
            for i in range(base, base + width):
                a, b = rows[i], rows[i + width]
                lo, hi = [], []
                for block in range(0, n, 2 * width):
                    lo += list(range(block, block + width))
                    lo += list(range(n + block, n + block + width))
                    hi += list(range(block + width, block + 2 * width))
                    hi += list(range(n + block + width, n + block + 2 * width))
                mask = ir.VectorType(ir.IntType(32), n)
                out[i] = builder.shuffle_vector(a, b, ir.Constant(mask, lo))
                out[i + width] = builder.shuffle_vector(a, b, ir.Constant(mask, hi))
        rows = out
        width *= 2
    return rows


@intrinsic
def load_tile(typingctx, tile, x, first, pre):
    """``tile[j, l] = x[first + l, j] * pre[j]`` for the first ``8 * (d // 8)`` columns.

    Rows ``first .. first + LANES`` of ``x`` must exist; the last ``d % 8``
    columns are left to the caller. Blocks of 8 x 8 are loaded as vectors and
    transposed in registers.
    """
    _check_tile(tile, "load_tile")
    _vector_arg(x, "load_tile", "x", ndim=2)
    _vector_arg(pre, "load_tile", "pre")
    if LANES != 8:
        raise TypingError("load_tile transposes blocks of 8 x 8")
    sig = types.void(tile, x, types.intp, pre)

    def codegen(context, builder, signature, args):
        t = _array(context, builder, signature.args[0], args[0])
        xs = _array(context, builder, signature.args[1], args[1])
        pr = _array(context, builder, signature.args[3], args[3])
        d = cgutils.unpack_tuple(builder, xs.shape, 2)[1]
        chunk = _const(LANES)
        with cgutils.for_range(builder, builder.sdiv(d, chunk)) as loop:
            j0 = builder.mul(loop.index, chunk)
            rows = []
            for lane in range(LANES):
                at = builder.add(builder.mul(builder.add(args[2], _const(lane)), d), j0)
                rows.append(_load(builder, builder.bitcast(builder.gep(xs.data, [at]),
                                                           _row.as_pointer())))
            weights = _load(builder, builder.bitcast(builder.gep(pr.data, [j0]),
                                                     _row.as_pointer()))
            for c, column in enumerate(_transpose(builder, rows)):
                weight = builder.extract_element(weights, ir.Constant(ir.IntType(32), c))
                _store(builder, builder.fmul(column, _splat(builder, weight)),
                       _row_pointer(builder, t.data, builder.add(j0, _const(c))))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_block(typingctx, blocked, b, n0, n1, n2, n3):
    """Write block ``b`` of the fast-scan layout from four tiles of nibbles.

    ``n0 .. n3`` (float32 (M, LANES), values 0..15) hold the nibbles of the
    block's vectors ``8k .. 8k + 7`` for tile ``k``. Byte ``16 m + p`` of the
    block packs vectors ``r`` and ``r + 16`` with ``p = 2 (r % 8) + (r // 8) % 2``
    (see :mod:`tqsearch.kernels.fastscan`): tiles 0 and 2 fill the even bytes
    (low and high nibble), tiles 1 and 3 the odd ones.
    """
    for name, ty in (("n0", n0), ("n1", n1), ("n2", n2), ("n3", n3)):
        _check_tile(ty, "store_block", name)
    if not (isinstance(blocked, types.Array) and blocked.dtype == types.uint8
            and blocked.ndim == 2 and blocked.layout == "C"):
        raise TypingError(f"store_block: blocked must be a C-contiguous 2-D uint8 array, "
                          f"got {blocked}")
    if LANES != 8:
        raise TypingError("store_block interleaves two tiles of 8 lanes into 16 bytes")
    sig = types.void(blocked, types.intp, n0, n1, n2, n3)

    def codegen(context, builder, signature, args):
        out = _array(context, builder, signature.args[0], args[0])
        tiles = [_array(context, builder, signature.args[i], args[i]).data for i in range(2, 6)]
        width = cgutils.unpack_tuple(builder, out.shape, 2)[1]
        base = builder.gep(out.data, [builder.mul(args[1], width)])
        n_nibbles = builder.sdiv(width, _const(16))
        sixteen = _splat(builder, ir.Constant(_f32, 16.0))
        bytes8 = ir.VectorType(ir.IntType(8), LANES)
        interleave = ir.Constant(ir.VectorType(ir.IntType(32), 2 * LANES),
                                 [i // 2 + LANES * (i % 2) for i in range(2 * LANES)])
        with cgutils.for_range(builder, n_nibbles) as loop:
            r0, r1, r2, r3 = (_load(builder, _row_pointer(builder, t, loop.index)) for t in tiles)
            even = builder.fptoui(builder.fadd(r0, builder.fmul(r2, sixteen)), bytes8)
            odd = builder.fptoui(builder.fadd(r1, builder.fmul(r3, sixteen)), bytes8)
            merged = builder.shuffle_vector(even, odd, interleave)
            target = builder.gep(base, [builder.mul(loop.index, _const(16))])
            builder.store(merged, builder.bitcast(target, merged.type.as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def centre_rows(typingctx, tile, shift, sq):
    """``tile[j, :] -= shift[j]`` (when ``shift`` has a row per tile row), then ``sq[:] =``
    the squared norm of every lane (``sq``: float32 (LANES,))."""
    _check_tile(tile, "centre_rows")
    _vector_arg(shift, "centre_rows", "shift")
    _vector_arg(sq, "centre_rows", "sq")
    sig = types.void(tile, shift, sq)

    def codegen(context, builder, signature, args):
        t = _array(context, builder, signature.args[0], args[0])
        sh = _array(context, builder, signature.args[1], args[1])
        out = _array(context, builder, signature.args[2], args[2])
        rows = cgutils.unpack_tuple(builder, t.shape, 2)[0]
        n_shift = cgutils.unpack_tuple(builder, sh.shape, 1)[0]
        centre = builder.icmp_signed("==", n_shift, rows)
        acc = cgutils.alloca_once_value(builder, ir.Constant(_row, [0.0] * LANES))
        with cgutils.for_range(builder, rows) as loop:
            ptr = _row_pointer(builder, t.data, loop.index)
            value = _load(builder, ptr)
            with builder.if_then(centre):
                shifted = builder.fsub(value, _splat(builder, builder.load(
                    builder.gep(sh.data, [loop.index]))))
                _store(builder, shifted, ptr)
            value = _load(builder, ptr)
            builder.store(builder.fadd(builder.load(acc), builder.fmul(value, value)), acc)
        _store(builder, builder.load(acc), builder.bitcast(out.data, _row.as_pointer()))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def scale_lanes(typingctx, tile, factors):
    """``tile[j, :] *= factors`` for every row (``factors``: float32 (LANES,))."""
    _check_tile(tile, "scale_lanes")
    _vector_arg(factors, "scale_lanes", "factors")
    sig = types.void(tile, factors)

    def codegen(context, builder, signature, args):
        t = _array(context, builder, signature.args[0], args[0])
        f = _array(context, builder, signature.args[1], args[1])
        factor = _load(builder, builder.bitcast(f.data, _row.as_pointer()))
        rows = cgutils.unpack_tuple(builder, t.shape, 2)[0]
        with cgutils.for_range(builder, rows) as loop:
            ptr = _row_pointer(builder, t.data, loop.index)
            _store(builder, builder.fmul(_load(builder, ptr), factor), ptr)
        return context.get_dummy_value()

    return sig, codegen


# Rows whose cell searches are interleaved: each boundary is broadcast once for
# all of them, and their compare/select chains are independent.
_GROUP = 4

# Boundary counts (codebooks of 2, 3 and 4 bits) whose cell search is emitted
# straight-line, boundaries and centroids held in registers across the rows;
# other counts loop over the boundaries.
_UNROLLED_EDGES = (7, 3, 1)


def _edge_steps(builder, edges, mags, count):
    """Broadcast ``(edges[e], mags[e + 1])`` pairs for a boundary count known here."""
    return [(_splat(builder, builder.load(builder.gep(edges.data, [_const(e)]))),
             _splat(builder, builder.load(builder.gep(mags.data, [_const(e + 1)]))))
            for e in range(count)]


def _emit_grid_rows(builder, t, cells, first, count, factor, edges, mags, n_edges, steps,
                    acc_dot, acc_sq):
    """Cell search for tile rows ``first .. first + count`` (``count`` a Python int).

    Boundaries are increasing, so the last one passed names the cell: a select
    per boundary and row, no branches. ``steps`` holds the broadcast boundaries
    (from :func:`_edge_steps`), or is None to loop over ``n_edges`` of them.
    Accumulates ``|u| m`` and ``m^2`` into ``acc_dot`` / ``acc_sq``; with
    ``cells``, stores each row's signed level.
    """
    rows = [_load(builder, _row_pointer(builder, t.data, builder.add(first, _const(i))))
            for i in range(count)]
    mags_abs = [_fabs(builder, u) for u in rows]
    scaled = [builder.fmul(a, factor) for a in mags_abs]
    m0 = _splat(builder, builder.load(mags.data))
    zero = ir.Constant(_row, [0.0] * LANES)
    if steps is not None:
        ms = [m0] * count
        ks = [zero] * count
        for e, (edge, nxt) in enumerate(steps):
            level = ir.Constant(_row, [float(e + 1)] * LANES)
            for i in range(count):
                passed = builder.fcmp_ordered(">=", scaled[i], edge)
                ms[i] = builder.select(passed, nxt, ms[i])
                if cells:
                    ks[i] = builder.select(passed, level, ks[i])
    else:
        m_slots = [cgutils.alloca_once_value(builder, m0) for _ in range(count)]
        k_slots = [cgutils.alloca_once_value(builder, zero) for _ in range(count)]
        with cgutils.for_range(builder, n_edges) as loop:
            edge = _splat(builder, builder.load(builder.gep(edges.data, [loop.index])))
            nxt = _splat(builder, builder.load(
                builder.gep(mags.data, [builder.add(loop.index, _const(1))])))
            for i in range(count):
                passed = builder.fcmp_ordered(">=", scaled[i], edge)
                builder.store(builder.select(passed, nxt, builder.load(m_slots[i])), m_slots[i])
                if cells:
                    builder.store(builder.fadd(builder.load(k_slots[i]),
                                               builder.uitofp(passed, _row)), k_slots[i])
        ms = [builder.load(slot) for slot in m_slots]
        ks = [builder.load(slot) for slot in k_slots]
    for i in range(count):
        builder.store(builder.fadd(builder.load(acc_dot), builder.fmul(mags_abs[i], ms[i])),
                      acc_dot)
        builder.store(builder.fadd(builder.load(acc_sq), builder.fmul(ms[i], ms[i])), acc_sq)
    if cells:
        # signed level: half + k at or above zero, half - 1 - k below
        half = _splat(builder, builder.sitofp(cgutils.unpack_tuple(builder, mags.shape, 1)[0],
                                              _f32))
        below_base = builder.fsub(half, _splat(builder, ir.Constant(_f32, 1.0)))
        for i in range(count):
            level = builder.select(builder.fcmp_ordered(">=", rows[i], zero),
                                   builder.fadd(half, ks[i]), builder.fsub(below_base, ks[i]))
            _store(builder, level, _row_pointer(builder, cells.data,
                                                builder.add(first, _const(i))))


def _make_grid_intrinsic(write_cells):
    fname = "grid_cells" if write_cells else "grid_fit"

    def impl(typingctx, tile, scale, edges, mags, dot, sq, cells):
        _check_tile(tile, fname)
        _check_tile(cells, fname, "cells")
        for name, ty in (("scale", scale), ("edges", edges), ("mags", mags), ("dot", dot),
                         ("sq", sq)):
            _vector_arg(ty, fname, name)
        sig = types.void(tile, scale, edges, mags, dot, sq, cells)

        def codegen(context, builder, signature, args):
            t, sc, ed, mg, do, sq_, ce = (_array(context, builder, ty, v)
                                         for ty, v in zip(signature.args, args, strict=True))
            rows = cgutils.unpack_tuple(builder, t.shape, 2)[0]
            n_edges = cgutils.unpack_tuple(builder, ed.shape, 1)[0]
            factor = _load(builder, builder.bitcast(sc.data, _row.as_pointer()))
            zero = ir.Constant(_row, [0.0] * LANES)
            acc_dot = cgutils.alloca_once_value(builder, zero)
            acc_sq = cgutils.alloca_once_value(builder, zero)
            target = ce if write_cells else None
            group = _const(_GROUP)
            grouped = builder.sdiv(rows, group)
            done = builder.mul(grouped, group)

            def emit_rows(steps):
                with cgutils.for_range(builder, grouped) as loop:
                    _emit_grid_rows(builder, t, target, builder.mul(loop.index, group), _GROUP,
                                    factor, ed, mg, n_edges, steps, acc_dot, acc_sq)
                with cgutils.for_range(builder, builder.sub(rows, done)) as loop:
                    _emit_grid_rows(builder, t, target, builder.add(done, loop.index), 1,
                                    factor, ed, mg, n_edges, steps, acc_dot, acc_sq)

            def dispatch(counts):
                if not counts:
                    emit_rows(None)
                    return
                same = builder.icmp_signed("==", n_edges, _const(counts[0]))
                with builder.if_else(same) as (unrolled, otherwise):
                    with unrolled:
                        emit_rows(_edge_steps(builder, ed, mg, counts[0]))
                    with otherwise:
                        dispatch(counts[1:])

            dispatch(_UNROLLED_EDGES)
            _store(builder, builder.load(acc_dot), builder.bitcast(do.data, _row.as_pointer()))
            _store(builder, builder.load(acc_sq), builder.bitcast(sq_.data, _row.as_pointer()))
            return context.get_dummy_value()

        return sig, codegen

    impl.__name__ = fname
    impl.__doc__ = (
        "Per lane, ``dot = sum_j |t_j| m_j`` and ``sq = sum_j m_j^2``, ``m_j`` the centroid "
        "magnitude of ``scale * |t_j|``" + (
            "; ``cells[j, :]`` gets the level of ``t_j``'s cell (float32): ``half + k`` "
            "for ``t_j >= 0`` and ``half - 1 - k`` below, ``k`` the boundaries passed and "
            "``half = len(mags)``."
            if write_cells else " (``cells`` is not touched)."))
    return intrinsic(impl)


grid_fit = _make_grid_intrinsic(False)
grid_cells = _make_grid_intrinsic(True)


# -- NumPy twins ------------------------------------------------------------------
# The same operations on NumPy arrays: they stand in for the intrinsics when the
# kernels run as Python (NUMBA_DISABLE_JIT=1, where intrinsics cannot run) and
# are what the tests compare the intrinsics with.

def _butterfly2_numpy(tile, j, h):
    a, b = tile[j].copy(), tile[j + h].copy()
    tile[j], tile[j + h] = a + b, a - b


def _butterfly4_numpy(tile, j, h):
    a, b, c, e = (tile[j + i * h].copy() for i in range(4))
    s0, d0, s1, d1 = a + b, a - b, c + e, c - e
    tile[j], tile[j + h], tile[j + 2 * h], tile[j + 3 * h] = s0 + s1, d0 + d1, s0 - s1, d0 - d1


def _move_row_numpy(dst, j, src, k, factor):
    dst[j] = src[k] * np.float32(factor)


def _add_row_numpy(dst, j, src, k, factor):
    dst[j] += src[k] * np.float32(factor)


def _load_tile_numpy(tile, x, first, pre):
    cols = 8 * (x.shape[1] // 8)
    tile[:cols] = (x[first:first + LANES, :cols] * pre[:cols]).T


def _store_block_numpy(blocked, b, n0, n1, n2, n3):
    even = (n0 + 16 * n2).astype(np.uint8)
    odd = (n1 + 16 * n3).astype(np.uint8)
    blocked[b] = np.stack([even, odd], axis=-1).reshape(-1)


def _matmul_rows_numpy(dst, matrix, src):
    dst[:] = matrix @ src


def _centre_rows_numpy(tile, shift, sq):
    if shift.shape[0] == tile.shape[0]:
        tile -= shift[:, None]
    sq[:] = (tile * tile).sum(axis=0)


def _scale_lanes_numpy(tile, factors):
    tile *= factors


def _grid_numpy(tile, scale, edges, mags, dot, sq, cells, write_cells):
    a = np.abs(tile)
    k = (a[..., None] * scale[None, :, None] >= edges).sum(-1)
    m = mags[k]
    dot[:] = (a * m).sum(axis=0)
    sq[:] = (m * m).sum(axis=0)
    if write_cells:
        half = mags.shape[0]
        cells[:] = np.where(tile >= 0, half + k, half - 1 - k)


def _grid_fit_numpy(tile, scale, edges, mags, dot, sq, cells):
    _grid_numpy(tile, scale, edges, mags, dot, sq, cells, False)


def _grid_cells_numpy(tile, scale, edges, mags, dot, sq, cells):
    _grid_numpy(tile, scale, edges, mags, dot, sq, cells, True)


NUMPY_TWINS = {
    "butterfly2": _butterfly2_numpy,
    "butterfly4": _butterfly4_numpy,
    "move_row": _move_row_numpy,
    "add_row": _add_row_numpy,
    "matmul_rows": _matmul_rows_numpy,
    "load_tile": _load_tile_numpy,
    "store_block": _store_block_numpy,
    "centre_rows": _centre_rows_numpy,
    "scale_lanes": _scale_lanes_numpy,
    "grid_fit": _grid_fit_numpy,
    "grid_cells": _grid_cells_numpy,
}

if numba.config.DISABLE_JIT:
    globals().update(NUMPY_TWINS)
