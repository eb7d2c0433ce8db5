"""In-register 4-bit table lookups for x86 (``pshufb``), emitted as LLVM IR from Numba.

This module holds the instruction-set plumbing behind :mod:`tqsearch.kernels.fastscan`:
CPU feature detection and Numba ``@intrinsic`` functions whose code generators write
LLVM vector IR (``<64 x i8>`` loads with ``align 1``, ``and``/``lshr``/``zext``/``add``
on vectors) around calls to the byte-shuffle intrinsics

=========  =================================  =====================
width      LLVM intrinsic                     instruction
=========  =================================  =====================
16 bytes   ``llvm.x86.ssse3.pshuf.b.128``     ``pshufb xmm``
32 bytes   ``llvm.x86.avx2.pshuf.b``          ``vpshufb ymm``
64 bytes   ``llvm.x86.avx512.pshuf.b.512``    ``vpshufb zmm``
=========  =================================  =====================

A byte shuffle looks up 16-entry byte tables, one per 128-bit lane, indexed by the low
4 bits of each byte: exactly one sub-code's lookup table per lane. The blocked layout
(see :mod:`tqsearch.kernels.fastscan`) stores one sub-code per 16 bytes, so one load
of 16, 32 or 64 bytes of codes lines up with 1, 2 or 4 consecutive rows of a
C-contiguous ``(M, 16)`` table, and the table needs no rearranging.

Numba compiles for the host CPU (``numba.config.CPU_NAME`` / ``CPU_FEATURES``), so an
intrinsic whose instruction set the compile target lacks is refused at typing time
with a ``TypingError`` instead of failing inside LLVM.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .scan import ZERO_VECTOR_SCORE

# Vectors per block; the kernels are written for exactly 32 (two nibbles per byte,
# 16 bytes per sub-code).
BLOCK = 32

_PSHUFB = {
    16: "llvm.x86.ssse3.pshuf.b.128",
    32: "llvm.x86.avx2.pshuf.b",
    64: "llvm.x86.avx512.pshuf.b.512",
}
# Compile-target features each byte-shuffle width needs.
_REQUIRES = {16: ("ssse3",), 32: ("avx2",), 64: ("avx512f", "avx512bw")}

_i8 = ir.IntType(8)
_i16 = ir.IntType(16)
_i32 = ir.IntType(32)
_i64 = ir.IntType(64)


def target_features():
    """Instruction-set features Numba compiles for, as a set of names.

    Mirrors Numba's own choice: ``NUMBA_CPU_FEATURES`` when set, otherwise the host
    CPU's features as reported by LLVM (with ``NUMBA_ENABLE_AVX=0`` honoured).

    Returns
    -------
    set of str
        e.g. ``{"sse4.2", "avx2", "avx512bw", ...}``.
    """
    if numba.config.CPU_FEATURES is not None:
        flat = numba.config.CPU_FEATURES
    else:
        try:
            from numba.core.codegen import get_host_cpu_features

            flat = get_host_cpu_features()
        except Exception:  # pragma: no cover - exotic llvmlite builds
            flat = ""
    return {tok[1:] for tok in flat.split(",") if tok.startswith("+")}


def _is_x86():
    import llvmlite.binding as llvm

    return llvm.get_process_triple().split("-")[0] in ("x86_64", "i386", "i686", "amd64")


def width_supported(width, features=None):
    """Whether the byte shuffle of ``width`` bytes (16, 32 or 64) can be compiled here."""
    if width not in _REQUIRES or not _is_x86():
        return False
    feats = target_features() if features is None else features
    return all(f in feats for f in _REQUIRES[width])


# ---------------------------------------------------------------------------------
# IR helpers
# ---------------------------------------------------------------------------------


def _vec(ty, n):
    return ir.VectorType(ty, n)


def _splat(ty, n, value):
    return ir.Constant(_vec(ty, n), [ir.Constant(ty, value)] * n)


def _shuffle(builder, a, b, idx):
    mask = ir.Constant(_vec(_i32, len(idx)), [ir.Constant(_i32, i) for i in idx])
    return builder.shuffle_vector(a, b, mask)


def _pshufb(builder, width, table, index):
    fnty = ir.FunctionType(_vec(_i8, width), [_vec(_i8, width), _vec(_i8, width)])
    fn = cgutils.get_or_insert_function(builder.module, fnty, _PSHUFB[width])
    return builder.call(fn, [table, index])


def _load_bytes(builder, base, offset, width):
    """Unaligned load of ``width`` bytes at ``base + offset`` (``base`` an i8 pointer)."""
    ptr = builder.gep(base, [offset])
    ptr = builder.bitcast(ptr, _vec(_i8, width).as_pointer())
    return builder.load(ptr, align=1)


def _load_bytes_masked(builder, base, offset, width, valid):
    """Load of the first ``valid`` of ``width`` bytes at ``base + offset``; the rest read
    as zero and are never touched (``valid`` an i64 value, a multiple of 16)."""
    vty = _vec(_i8, width)
    ptr = builder.bitcast(builder.gep(base, [offset]), vty.as_pointer())
    fn = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vty, [vty.as_pointer(), _i32, _vec(ir.IntType(1), width), vty]),
        f"llvm.masked.load.v{width}i8.p0v{width}i8")
    lanes = ir.Constant(_vec(_i64, width), list(range(width)))
    bound = _splat_value(builder, valid, width)
    mask = builder.icmp_unsigned("<", lanes, bound)
    return builder.call(fn, [ptr, ir.Constant(_i32, 1), mask, ir.Constant(vty, None)])


def _load_bytes_prefix(builder, base, offset, width, valid):
    """Load of the first ``valid`` of ``width`` bytes at ``base + offset`` (``valid`` a
    Python int, a multiple of 16); the rest read as zero and are never touched.

    64-byte vectors take a masked load under a constant mask (one instruction with
    AVX-512BW); narrower ones a plain load of the valid bytes widened with zeros, as
    AVX2 has no byte-masked load (LLVM would split it into one load per byte).
    """
    if width == 64:
        return _load_bytes_masked(builder, base, offset, width, ir.Constant(_i64, valid))
    part = _load_bytes(builder, base, offset, valid)
    zeros = ir.Constant(_vec(_i8, valid), None)
    return _shuffle(builder, part, zeros, list(range(valid)) + [valid] * (width - valid))


def _reduce_lanes(builder, vecs, lanes):
    """Sum each vector's 128-bit lanes (8 x i16 each), all vectors in one tree.

    Every level shuffles two vectors into their even lanes and their odd lanes (one
    two-source 128-bit-lane shuffle each) and adds them, so vectors share shuffles.
    Returns the concatenation, in order, of each input vector's 8 lane sums.
    """
    per = lanes  # lanes each input vector still occupies
    while per > 1:
        nxt = []
        for a, b in zip(vecs[0::2], vecs[1::2], strict=True):
            even = [8 * k + e for k in range(0, lanes, 2) for e in range(8)]
            odd = [8 * k + e for k in range(1, lanes, 2) for e in range(8)]
            lo = _shuffle(builder, a, b, even + [8 * lanes + i for i in even])
            hi = _shuffle(builder, a, b, odd + [8 * lanes + i for i in odd])
            nxt.append(builder.add(lo, hi))
        vecs = nxt
        per //= 2
    while len(vecs) > 1:
        n = vecs[0].type.count
        vecs = [
            _shuffle(builder, a, b, list(range(2 * n)))
            for a, b in zip(vecs[0::2], vecs[1::2], strict=True)
        ]
    return vecs[0]


def _flush(builder, acc, width):
    """Per-vector 32-bit sums (<32 x i32>) of the four 16-bit accumulators of one table.

    ``acc = (a_low, b_low, a_high, b_high)``: ``a`` summed each lookup result viewed
    as 16-bit lanes (low byte + 256 * high byte, modulo 2**16) and ``b`` summed the
    high bytes, so ``a - (b << 8)`` holds the low bytes' sums modulo 2**16. Summing the
    lanes is linear modulo 2**16 too, and exact because every total is below 2**16
    (the caller bounds the adds between flushes).
    """
    n16 = width // 2
    vecs = []
    for a, b in (acc[0:2], acc[2:4]):
        vecs.append(builder.sub(a, builder.shl(b, _splat(_i16, n16, 8))))  # positions 0..7
        vecs.append(b)  # positions 8..15
    return builder.zext(_reduce_lanes(builder, vecs, width // 16), _vec(_i32, BLOCK))


def max_adds_between_flushes(width):
    """Widened adds a 16-bit lane may take before a flush: lanes * adds * 255 < 2**16."""
    return 65535 // (255 * (width // 16))


def emit_block_scan(builder, width, codes_base, lut_bases, M, out_ptrs, group=1):
    """Emit the scan of one block of ``BLOCK`` vectors against one or more tables.

    Stores each table's sums to its pointer of ``out_ptrs`` and returns each table's
    largest sum (list of i32 values); see :func:`emit_block_sums` for the arguments.
    """
    maxima = []
    fnty = ir.FunctionType(_i32, [_vec(_i32, BLOCK)])
    smax = cgutils.get_or_insert_function(builder.module, fnty, "llvm.vector.reduce.smax.v32i32")
    for q, sums in enumerate(emit_block_sums(builder, width, codes_base, lut_bases, M, group)):
        ptr = builder.bitcast(out_ptrs[q], _vec(_i32, BLOCK).as_pointer())
        builder.store(sums, ptr, align=4)
        maxima.append(builder.call(smax, [sums]))
    return maxima


def emit_block_sums(builder, width, codes_base, lut_bases, M, group=1):
    """Emit the scan of one block of ``BLOCK`` vectors against one or more tables.

    Parameters
    ----------
    builder : llvmlite.ir.IRBuilder
    width : int
        16, 32 or 64: bytes per byte-shuffle (1, 2 or 4 sub-codes per step).
    codes_base : i8 pointer to the block's ``16 * M`` bytes.
    lut_bases : list of i8 pointers, one per table of ``16 * M`` bytes.
    M : i64 number of sub-codes.
    group : int
        1, 2 or 4: lookup results of ``group`` consecutive steps are added as bytes
        before widening; exact only when ``group * max(table) <= 255``.

    Returns
    -------
    list of ``<32 x i32>`` values: each table's sums, position ``r`` for vector ``r``.
    """
    nq = len(lut_bases)
    k = width // 16
    n16 = width // 2
    c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
    zero16 = ir.Constant(_vec(_i16, n16), None)
    acc32 = [
        cgutils.alloca_once_value(builder, ir.Constant(_vec(_i32, BLOCK), None)) for _ in range(nq)
    ]
    accs = [[cgutils.alloca_once_value(builder, zero16) for _ in range(4)] for _ in range(nq)]

    def add_steps(m, g, valid=None):
        """Look up ``g`` steps from sub-code ``m`` on, add them as bytes, widen once.

        With ``valid`` (one step, a Python int) only its first ``valid`` bytes
        are read: the sub-codes past ``M``, whose zero table entries add nothing."""
        sums = [[None, None] for _ in range(nq)]
        for i in range(g):
            off = builder.mul(builder.add(m, c64(i * k)), c64(16))
            if valid is None:
                c = _load_bytes(builder, codes_base, off, width)
            else:
                c = _load_bytes_prefix(builder, codes_base, off, width, valid)
            idx = (
                builder.and_(c, _splat(_i8, width, 0x0F)),
                builder.lshr(c, _splat(_i8, width, 4)),
            )
            for q in range(nq):
                if valid is None:
                    t = _load_bytes(builder, lut_bases[q], off, width)
                else:
                    t = _load_bytes_prefix(builder, lut_bases[q], off, width, valid)
                for h in range(2):
                    r = _pshufb(builder, width, t, idx[h])
                    sums[q][h] = r if sums[q][h] is None else builder.add(sums[q][h], r)
        for q in range(nq):
            for h in range(2):
                r = builder.bitcast(sums[q][h], _vec(_i16, n16))
                pa, pb = accs[q][2 * h], accs[q][2 * h + 1]
                builder.store(builder.add(builder.load(pa), r), pa)
                r_hi = builder.lshr(r, _splat(_i16, n16, 8))
                builder.store(builder.add(builder.load(pb), r_hi), pb)

    def flush():
        for q in range(nq):
            acc = [builder.load(p) for p in accs[q]]
            builder.store(
                builder.add(builder.load(acc32[q]), _flush(builder, acc, width)), acc32[q]
            )
            for p in accs[q]:
                builder.store(zero16, p)

    nsteps = builder.udiv(M, c64(k))
    niters = builder.udiv(nsteps, c64(group))
    # Steps left over by the grouping (< group) go first, each widened alone.
    with cgutils.for_range(
        builder, builder.sub(nsteps, builder.mul(niters, c64(group))), intp=_i64
    ) as left:
        add_steps(builder.mul(builder.add(builder.mul(niters, c64(group)), left.index), c64(k)), 1)
    # The last M % k sub-codes (if any): one step of partial loads, also before
    # the chunks (room for it and the left-over steps is kept in the first chunk);
    # one branch per length, so that each load has a constant size.
    done = builder.mul(nsteps, c64(k))
    rest = builder.sub(M, done)
    for r in range(1, k):
        with builder.if_then(builder.icmp_unsigned("==", rest, c64(r))):
            add_steps(done, 1, 16 * r)
    chunk = max_adds_between_flushes(width) - group
    nchunks = builder.udiv(builder.add(niters, c64(chunk - 1)), c64(chunk))
    one = c64(1)
    nchunks = builder.select(builder.icmp_unsigned("<", nchunks, one), one, nchunks)
    with cgutils.for_range(builder, nchunks, intp=_i64) as ch:
        s0 = builder.mul(ch.index, c64(chunk))
        s1 = builder.add(s0, c64(chunk))
        s1 = builder.select(builder.icmp_unsigned("<", s1, niters), s1, niters)
        with cgutils.for_range(builder, builder.sub(s1, s0), intp=_i64) as it:
            add_steps(builder.mul(builder.add(s0, it.index), c64(group * k)), group)
        flush()

    return [builder.load(acc32[q]) for q in range(nq)]


def emit_row_factors(builder, norms_ptr, gains_ptr, form, similarity=False):
    """The filter's per-vector factors ``(fa, fc)`` of 32 rows, as ``<32 x float>`` values.

    ``norms_ptr`` / ``gains_ptr`` point to the rows' 32 float32 norms and 32
    uint16 gains; ``form`` holds float scalars ``(pre, dist)``::

        fa = pre * norm * gain,   fc = dist * norm * norm

    and rows with a negative norm (zero vectors of a centred cosine index) get
    ``fa = 0, fc = -ZERO_VECTOR_SCORE``: the constant score they are ranked by.
    With ``similarity`` the caller knows that ``dist`` is 0, as it is
    everywhere but in the distance form, the only one with zero vectors
    flagged: then ``fc`` is None (0 for every row) and only ``fa`` is formed.
    """
    f32 = ir.FloatType()
    vf = _vec(f32, BLOCK)
    pre, dist = form
    n = builder.load(builder.bitcast(norms_ptr, vf.as_pointer()), align=4)
    g = builder.load(builder.bitcast(gains_ptr, _vec(_i16, BLOCK).as_pointer()), align=2)
    g = builder.uitofp(g, vf)
    fa = builder.fmul(builder.fmul(_splat_value(builder, pre, BLOCK), n), g)
    if similarity:
        return fa, None
    fc = builder.fmul(builder.fmul(_splat_value(builder, dist, BLOCK), n), n)
    zero = ir.Constant(vf, [0.0] * BLOCK)
    flagged = builder.fcmp_ordered("<", n, zero)
    fa = builder.select(flagged, zero, fa)
    fc = builder.select(flagged, ir.Constant(vf, [-ZERO_VECTOR_SCORE] * BLOCK), fc)
    return fa, fc


def _splat_value(builder, x, n):
    vec = _vec(x.type, n)
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(_i32, 0))
    return _shuffle(builder, one, ir.Constant(vec, ir.Undefined), [0] * n)


def emit_row_filter(builder, sums, offset, scale, fa, fc, threshold):
    """Bit mask (i32) of the rows whose bound ``fa * (offset + scale * sum) - fc`` is
    above ``threshold``.

    ``sums`` is a ``<32 x i32>`` value, ``offset``, ``scale`` and ``threshold`` float
    scalars, ``fa`` / ``fc`` the block's ``<32 x float>`` factors
    (:func:`emit_row_factors`; ``fc`` None stands for zeros). Bit ``r`` of the
    result is row ``r``. All in registers, float32 arithmetic in the order
    written (no fast-math flags).
    """
    vf = _vec(ir.FloatType(), BLOCK)
    x = builder.fadd(_splat_value(builder, offset, BLOCK),
                     builder.fmul(_splat_value(builder, scale, BLOCK), builder.sitofp(sums, vf)))
    s = builder.fmul(fa, x)
    if fc is not None:
        s = builder.fsub(s, fc)
    mask = builder.fcmp_ordered(">", s, _splat_value(builder, threshold, BLOCK))
    return builder.bitcast(mask, _i32)


# ---------------------------------------------------------------------------------
# Numba intrinsics
# ---------------------------------------------------------------------------------


def _check_u8_c(ty, name, fname):
    if not (isinstance(ty, types.Array) and ty.dtype == types.uint8 and ty.layout == "C"):
        raise TypingError(
            f"{fname}: {name} must be a C-contiguous uint8 array, got {ty}; "
            "pass np.ascontiguousarray(x, dtype=np.uint8)"
        )


def _check_out(ty, fname):
    if not (
        isinstance(ty, types.Array)
        and ty.dtype in (types.int32, types.uint32)
        and ty.layout == "C"
        and ty.ndim >= 1
    ):
        raise TypingError(f"{fname}: out must be a C-contiguous int32 or uint32 array, got {ty}")


def make_block_intrinsic(width, nq=1, group=1):
    """Build the ``@intrinsic`` scanning one block against ``nq`` tables.

    The returned intrinsic has the Numba signature::

        f(blocked, block_index, M, luts, lut_index, out, out_start, out_stride) -> intp

    ``blocked`` is C-contiguous uint8 (block ``b`` at byte ``b * 16 * M``); ``luts`` is
    C-contiguous uint8 holding tables of ``16 * M`` bytes one after the other (``(M, 16)``
    or ``(nq_total, M, 16)``), of which tables ``lut_index .. lut_index + nq - 1`` are
    used; ``out`` is C-contiguous int32/uint32 and table ``lut_index + i`` writes its 32
    sums to flat elements ``out_start + i * out_stride + (0 .. 31)``. Returns the largest
    of the ``32 * nq`` sums written (computed in registers, so a top-k caller can reject
    the block without reading them back). Nothing is bounds-checked: callers check.
    """
    fname = f"block_scan_w{width}_q{nq}_g{group}"

    def impl(typingctx, blocked, block_index, M, luts, lut_index, out, out_start, out_stride):
        if not width_supported(width):
            raise TypingError(
                f"{fname}: the compile target lacks {', '.join(_REQUIRES[width])} "
                "(see tqsearch.kernels.fastscan.available_variants())"
            )
        _check_u8_c(blocked, "blocked", fname)
        _check_u8_c(luts, "lut", fname)
        _check_out(out, fname)
        ints = (
            ("block_index", block_index),
            ("M", M),
            ("lut_index", lut_index),
            ("out_start", out_start),
            ("out_stride", out_stride),
        )
        for name, ty in ints:
            if not isinstance(ty, types.Integer):
                raise TypingError(f"{fname}: {name} must be an integer, got {ty}")
        sig = types.intp(
            blocked, types.intp, types.intp, luts, types.intp, out, types.intp, types.intp
        )

        def codegen(context, builder, signature, args):
            a_blocked, a_b, a_m, a_lut, a_q0, a_out, a_start, a_ostride = args
            codes = context.make_array(signature.args[0])(context, builder, a_blocked)
            lut = context.make_array(signature.args[3])(context, builder, a_lut)
            res = context.make_array(signature.args[5])(context, builder, a_out)
            stride = builder.mul(a_m, ir.Constant(_i64, 16))
            codes_base = builder.gep(
                builder.bitcast(codes.data, _i8.as_pointer()), [builder.mul(a_b, stride)]
            )
            lut_base = builder.bitcast(lut.data, _i8.as_pointer())
            lut_bases = [
                builder.gep(
                    lut_base, [builder.mul(stride, builder.add(a_q0, ir.Constant(_i64, q)))]
                )
                for q in range(nq)
            ]
            out_base = builder.bitcast(res.data, _i32.as_pointer())
            out_ptrs = [
                builder.gep(
                    out_base, [builder.add(a_start, builder.mul(a_ostride, ir.Constant(_i64, q)))]
                )
                for q in range(nq)
            ]
            maxima = emit_block_scan(builder, width, codes_base, lut_bases, a_m, out_ptrs, group)
            top = maxima[0]
            for other in maxima[1:]:
                top = builder.select(builder.icmp_signed(">", other, top), other, top)
            return builder.sext(top, _i64)

        return sig, codegen

    impl.__name__ = fname
    return intrinsic(impl)


def _check_f32_c(ty, name, fname):
    if not (isinstance(ty, types.Array) and ty.dtype == types.float32 and ty.layout == "C"):
        raise TypingError(f"{fname}: {name} must be a C-contiguous float32 array, got {ty}")


def make_filter_intrinsic(width, nq=1, group=1):
    """Build the ``@intrinsic`` scanning blocks until one has a row that passes a bound.

    The returned intrinsic has the Numba signature::

        f(blocked, block_start, block_stop, M, luts, lut_index, norms, gains, form,
          params, hit) -> int64

    ``blocked`` and ``luts`` as in :func:`make_block_intrinsic`; ``norms`` (float32)
    and ``gains`` (uint16) are C-contiguous per-vector fields of which 32 elements
    are read from ``32 * block_index * step`` on; ``form`` is a tuple of float32
    ``(pre, dist, norm_step, gain_step)`` (scalars, kept in registers), the steps
    1.0 for fields padded to whole blocks or 0.0 for a 32-element stand-in
    shared by every block (see
    :func:`emit_row_factors` for how the factors ``fa``, ``fc`` follow). ``params``
    is C-contiguous float32 holding ``(offset, scale, threshold)`` of table ``t``
    at flat elements ``3 * t .. 3 * t + 2``. Blocks ``block_start ..
    block_stop - 1`` are scanned in order; for table ``t = lut_index + i`` bit
    ``32 * i + r`` of a block's mask is set iff ``fa * (offset + scale * sum_r) - fc >
    threshold``, computed in float32 in that order. The first block whose mask
    is not empty stops the scan: its mask goes to ``hit[0]`` (int64, C-contiguous)
    and its index is returned; ``block_stop`` is returned when none passes. The
    sums never leave the registers, and the loop over blocks stays in this one
    function, its pointers and constants in registers, until a row passes (a
    few blocks a query, once its heap holds good scores). Where ``dist`` is 0
    the loop is a second copy that forms ``fa`` only (``emit_row_factors``
    with ``similarity``). Nothing is bounds-checked: callers check.
    """
    if nq not in (1, 2):
        raise ValueError("nq must be 1 or 2 (the result packs 32 bits per table)")
    fname = f"block_filter_w{width}_q{nq}_g{group}"

    def impl(typingctx, blocked, block_start, block_stop, M, luts, lut_index, norms, gains,
             form, params, hit):
        if not width_supported(width):
            raise TypingError(
                f"{fname}: the compile target lacks {', '.join(_REQUIRES[width])} "
                "(see tqsearch.kernels.fastscan.available_variants())"
            )
        _check_u8_c(blocked, "blocked", fname)
        _check_u8_c(luts, "lut", fname)
        for name, ty in (("norms", norms), ("params", params)):
            _check_f32_c(ty, name, fname)
        if not (isinstance(form, types.UniTuple) and form.count == 4
                and form.dtype == types.float32):
            raise TypingError(f"{fname}: form must be a tuple of 4 float32, got {form}")
        for name, ty, dtype in (("gains", gains, types.uint16), ("hit", hit, types.int64)):
            if not (isinstance(ty, types.Array) and ty.dtype == dtype and ty.layout == "C"):
                raise TypingError(f"{fname}: {name} must be a C-contiguous {dtype} array, "
                                  f"got {ty}")
        for name, ty in (("block_start", block_start), ("block_stop", block_stop), ("M", M),
                         ("lut_index", lut_index)):
            if not isinstance(ty, types.Integer):
                raise TypingError(f"{fname}: {name} must be an integer, got {ty}")
        sig = types.int64(blocked, types.intp, types.intp, types.intp, luts, types.intp, norms,
                          gains, form, params, hit)

        def codegen(context, builder, signature, args):
            a_b0, a_b1, a_m, a_q0 = args[1], args[2], args[3], args[5]
            codes, lut, nrm, gns, par, out = (
                context.make_array(signature.args[i])(context, builder, args[i])
                for i in (0, 4, 6, 7, 9, 10))
            c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
            stride = builder.mul(a_m, c64(16))
            codes_data = builder.bitcast(codes.data, _i8.as_pointer())
            lut_base = builder.bitcast(lut.data, _i8.as_pointer())
            lut_bases = [builder.gep(lut_base, [builder.mul(stride, builder.add(a_q0, c64(q)))])
                         for q in range(nq)]
            form_values = [builder.extract_value(args[8], i) for i in range(4)]
            steps = [builder.mul(c64(BLOCK), builder.fptosi(v, _i64)) for v in form_values[2:]]
            # the thresholds cannot change during the call: nothing is pushed here
            params = []
            for q in range(nq):
                at = builder.mul(builder.add(a_q0, c64(q)), c64(3))
                params.append([builder.load(builder.gep(par.data, [builder.add(at, c64(i))]))
                               for i in range(3)])
            block = cgutils.alloca_once_value(builder, a_b0)

            def scan(similarity):
                """The loop over blocks, with the row factors of ``emit_row_factors``."""
                head = builder.append_basic_block("blocks.head")
                body = builder.append_basic_block("blocks.body")
                found = builder.append_basic_block("blocks.found")
                done = builder.append_basic_block("blocks.done")
                builder.branch(head)
                builder.position_at_end(head)
                b = builder.load(block)
                builder.cbranch(builder.icmp_signed("<", b, a_b1), body, done)
                builder.position_at_end(body)
                codes_base = builder.gep(codes_data, [builder.mul(b, stride)])
                norms_ptr = builder.gep(nrm.data, [builder.mul(b, steps[0])])
                gains_ptr = builder.gep(gns.data, [builder.mul(b, steps[1])])
                sums = emit_block_sums(builder, width, codes_base, lut_bases, a_m, group)
                fa, fc = emit_row_factors(builder, norms_ptr, gains_ptr, form_values[:2],
                                          similarity)
                mask = c64(0)
                for q in range(nq):
                    offset, scale, threshold = params[q]
                    rows = builder.zext(emit_row_filter(builder, sums[q], offset, scale, fa, fc,
                                                        threshold), _i64)
                    mask = builder.or_(mask, builder.shl(rows, c64(32 * q)) if q else rows)
                builder.store(builder.add(b, c64(1)), block)
                builder.cbranch(builder.icmp_unsigned("!=", mask, c64(0)), found, head)
                builder.position_at_end(found)
                builder.store(mask, out.data)
                builder.store(b, block)
                builder.branch(done)
                builder.position_at_end(done)

            # outside the distance form (dist == 0) the factors are fewer: a loop of its own
            dist_zero = builder.fcmp_ordered("==", form_values[1], ir.Constant(ir.FloatType(), 0))
            with builder.if_else(dist_zero) as (similarity, distance):
                with similarity:
                    scan(True)
                with distance:
                    scan(False)
            return builder.select(builder.icmp_signed("<", builder.load(block), a_b1),
                                  builder.load(block), a_b1)

        return sig, codegen

    impl.__name__ = fname
    return intrinsic(impl)


# ---------------------------------------------------------------------------------
# Blocks scored with byte dot products (AVX-512 VNNI + VBMI)
# ---------------------------------------------------------------------------------

#: Compile-target features of :func:`make_dot_filter_intrinsic` and
#: :func:`make_perm_filter_intrinsic`.
DOT_REQUIRES = ("avx512f", "avx512bw", "avx512vbmi", "avx512vnni")


def dot_supported(features=None):
    """Whether the byte dot-product kernels can be compiled here."""
    if not _is_x86():
        return False
    feats = target_features() if features is None else features
    return all(f in feats for f in DOT_REQUIRES)


# A 64-byte load of the blocked layout holds sub-codes m .. m + 3 (16 bytes each,
# byte p of each for vectors r(p) and r(p) + 16). Lane L of a dot product wants
# the 4 sub-codes of one vector together: byte 4 L + t <- byte 16 t + L.
_TO_VECTOR_MAJOR = [16 * (i % 4) + i // 4 for i in range(64)]
# After that regrouping byte i holds sub-code i % 4 of its step, whose 16-entry
# table sits at bytes 16 (i % 4) .. of the step's 64 table bytes.
_TABLE_OF_BYTE = [16 * (i % 4) for i in range(64)]
# Lane L of a 16-lane accumulator is vector r(L) = L // 2 + 8 (L % 2) (+ 16 for the
# high nibbles); position r of the 32 sums in vector order takes this lane.
_LANE_OF_ROW = [2 * (r % 8) + (r % 16) // 8 + 16 * (r // 16) for r in range(BLOCK)]


def _check_vnni_args(fname, blocked, M, q0, norms, gains, form, params, masks, sums):
    if not dot_supported():
        raise TypingError(f"{fname}: the compile target lacks {', '.join(DOT_REQUIRES)}")
    _check_u8_c(blocked, "blocked", fname)
    if not (isinstance(sums, types.Array) and sums.dtype == types.int32 and sums.ndim == 2
            and sums.layout == "C"):
        raise TypingError(f"{fname}: sums must be a C-contiguous int32 (n, 32) array, got {sums}")
    for name, ty, dtype in (("gains", gains, types.uint16), ("masks", masks, types.int64)):
        if not (isinstance(ty, types.Array) and ty.dtype == dtype and ty.layout == "C"):
            raise TypingError(f"{fname}: {name} must be a C-contiguous {dtype} array, got {ty}")
    for name, ty in (("norms", norms), ("params", params)):
        _check_f32_c(ty, name, fname)
    if not (isinstance(form, types.UniTuple) and form.count == 4
            and form.dtype == types.float32):
        raise TypingError(f"{fname}: form must be a tuple of 4 float32, got {form}")
    for name, ty in (("M", M), ("q0", q0)):
        if not isinstance(ty, types.Integer):
            raise TypingError(f"{fname}: {name} must be an integer, got {ty}")


def _vnni_ops(builder):
    """``vpermb`` (data, index) and ``vpdpbusd`` (acc, u8, s8) as callables."""
    v64i8, v16i32 = _vec(_i8, 64), _vec(_i32, 16)
    permb = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v64i8, [v64i8, v64i8]), "llvm.x86.avx512.permvar.qi.512")
    dpbusd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v16i32, [v16i32, v16i32, v16i32]),
        "llvm.x86.avx512.vpdpbusd.512")
    return (lambda data, index: builder.call(permb, [data, index]),
            lambda acc, u8, s8: builder.call(dpbusd, [acc, builder.bitcast(u8, v16i32),
                                                      builder.bitcast(s8, v16i32)]))


def _emit_vnni_steps(builder, codes_base, M, add_step, add_one=None, paired=False):
    """Call ``add_step(step, codes, valid)`` for each 64-byte step of a block.

    Full steps first, then the last ``M % 4`` sub-codes as one step whose load
    is masked to its ``valid = 16 * (M % 4)`` bytes (the rest read as zero, and
    nothing past the block is touched); ``valid`` is None for full steps. With
    ``add_one``, a last step of a single sub-code goes to ``add_one(step, codes)``
    instead, ``codes`` its 16 bytes. With ``paired``, full steps go two an
    iteration and the second of each pair is called with ``chain=1`` (the
    others with ``chain=0``), so that it can add into accumulators of its own.
    """
    c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
    full = builder.udiv(M, c64(4))

    def full_step(step, **chain):
        add_step(step, _load_bytes(builder, codes_base, builder.mul(step, c64(64)), 64), None,
                 **chain)

    if paired:
        with cgutils.for_range(builder, builder.udiv(full, c64(2)), intp=_i64) as pair:
            for k in (0, 1):
                full_step(builder.add(builder.mul(pair.index, c64(2)), c64(k)), chain=k)
        with builder.if_then(builder.trunc(full, ir.IntType(1))):
            full_step(builder.sub(full, c64(1)), chain=0)
    else:
        with cgutils.for_range(builder, full, intp=_i64) as step:
            full_step(step.index)
    rest = builder.urem(M, c64(4))
    at = builder.mul(full, c64(64))
    # one branch per length of the last step: its mask is a constant (a mask
    # computed at run time makes LLVM split the load)
    for r in (1, 2, 3):
        with builder.if_then(builder.icmp_unsigned("==", rest, c64(r))):
            if r == 1 and add_one is not None:
                add_one(full, _load_bytes(builder, codes_base, at, 16))
            else:
                add_step(full, _load_bytes_masked(builder, codes_base, at, 64, c64(16 * r)),
                         c64(16 * r))


def _emit_vnni_filter(builder, accs, q0, block_index, form, norms, gains, params, masks, sums_out):
    """Row masks of one block from per-query accumulator pairs (see the intrinsics).

    ``accs[i]`` holds query ``q0 + i``'s two ``<16 x i32>`` allocas (low and high
    nibbles); each query's mask goes to ``masks[q0 + i]`` and, when it is not
    empty, its 32 integer sums in row order to ``sums_out[q0 + i]``; returns
    the OR of the masks (i64).
    """
    c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
    row0 = builder.mul(block_index, c64(BLOCK))
    form_values = [builder.extract_value(form, i) for i in range(4)]
    steps = [builder.fptosi(v, _i64) for v in form_values[2:]]
    norms_ptr = builder.gep(norms.data, [builder.mul(row0, steps[0])])
    gains_ptr = builder.gep(gains.data, [builder.mul(row0, steps[1])])
    fa, fc = emit_row_factors(builder, norms_ptr, gains_ptr, form_values[:2])
    result = c64(0)
    for i, (lo, hi) in enumerate(accs):
        q = builder.add(q0, c64(i))
        sums = _shuffle(builder, builder.load(lo), builder.load(hi), _LANE_OF_ROW)
        at = builder.mul(q, c64(3))
        p = [builder.load(builder.gep(params.data, [builder.add(at, c64(k))])) for k in range(3)]
        mask = builder.zext(emit_row_filter(builder, sums, p[0], p[1], fa, fc, p[2]), _i64)
        builder.store(mask, builder.gep(masks.data, [q]))
        with builder.if_then(builder.icmp_unsigned("!=", mask, c64(0)), likely=False):
            row = builder.gep(sums_out.data, [builder.mul(q, c64(BLOCK))])
            builder.store(sums, builder.bitcast(row, _vec(_i32, BLOCK).as_pointer()), align=4)
        result = builder.or_(result, mask)
    return result


def _dot_filter_signature(fname, blocked, M, weights, q0, levels, biases, norms, gains, form,
                          params, masks, sums):
    """Type checks and signature shared by the int8 dot-product filters."""
    _check_vnni_args(fname, blocked, M, q0, norms, gains, form, params, masks, sums)
    _check_u8_c(levels, "levels", fname)
    for name, ty, dtype in (("weights", weights, types.int8), ("biases", biases, types.int32)):
        if not (isinstance(ty, types.Array) and ty.dtype == dtype and ty.layout == "C"):
            raise TypingError(f"{fname}: {name} must be a C-contiguous {dtype} array, got {ty}")
    return types.int64(blocked, types.intp, types.intp, weights, types.intp, levels, biases,
                       norms, gains, form, params, masks, sums)


def _emit_dot_queries(builder, weights, levels, biases, q0, nq, dpbusd, chains=1):
    """What the int8 dot-product filters share: the codebook levels as a 64-byte
    table (repeating every 16 bytes), two accumulators per query and chain, and
    ``multiply(step, operands, chain=0)``, which adds each query's four weights
    of ``step`` times the two halves' level bytes ``operands`` into the
    accumulators of ``chain``. Returns ``(table, accs, multiply)``; ``accs()``
    adds the chains up and gives each query's two accumulators, which start
    at ``-biases[q]``."""
    c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
    table16 = builder.load(builder.bitcast(levels.data, _vec(_i8, 16).as_pointer()), align=1)
    table = _shuffle(builder, table16, table16, [i % 16 for i in range(64)])
    weights_base = builder.bitcast(weights.data, _i32.as_pointer())
    words_per_query = builder.udiv(cgutils.unpack_tuple(builder, weights.shape, 2)[1], c64(4))
    zero = ir.Constant(_vec(_i32, 16), None)
    slots = []  # slots[i][chain][h]
    for i in range(nq):
        bias = builder.load(builder.gep(biases.data, [builder.add(q0, c64(i))]))
        starts = [_splat_value(builder, builder.neg(bias), 16)] + [zero] * (chains - 1)
        slots.append([[cgutils.alloca_once_value(builder, v) for _ in range(2)] for v in starts])

    def multiply(step, operands, chain=0):
        for i in range(nq):
            at = builder.add(builder.mul(builder.add(q0, c64(i)), words_per_query), step)
            w = _splat_value(builder, builder.load(builder.gep(weights_base, [at]), align=1), 16)
            for h in range(2):
                slot = slots[i][chain][h]
                builder.store(dpbusd(builder.load(slot), operands[h], w), slot)

    return table, lambda: _sum_chains(builder, slots), multiply


def _sum_chains(builder, slots):
    """Add each query's accumulator chains into its first: ``slots[i][chain][h]``
    allocas; returns ``[slots[i][0]]``, the pairs the row filter reads."""
    for per_query in slots:
        for other in per_query[1:]:
            for h in range(2):
                total = builder.add(builder.load(per_query[0][h]), builder.load(other[h]))
                builder.store(total, per_query[0][h])
    return [per_query[0] for per_query in slots]


def make_dot_filter_intrinsic(nq):
    """Build the ``@intrinsic`` testing one block of 4-bit codes for ``nq`` queries by int8
    dot products.

    The returned intrinsic has the Numba signature::

        f(blocked, block_index, M, weights, q0, levels, biases, norms, gains, form,
          params, masks, sums) -> int64

    ``blocked`` holds 4-bit codes in the fast-scan layout (one coordinate per
    nibble), its full steps regrouped per vector (:func:`.fastscan.to_vector_steps`:
    a 32-bit lane holds four coordinates of one vector; a last partial step is
    regrouped here by a ``vpermb``); ``weights`` is C-contiguous int8 (nq_total,
    4 * ceil(M / 4)), the queries quantized per coordinate, zero beyond ``M``;
    ``levels`` is C-contiguous uint8 (16,), the codebook quantized to int8 plus
    128; ``biases`` is int32 (nq_total,), ``128 * sum(weights[q])``. Each nibble
    half goes through ``levels`` (``vpermb``), shared by all queries; per query
    the levels are multiplied with the weights (``vpdpbusd``), giving the integer sum
    ``S = sum_j (levels[code_j] - 128) * weights[q, j]``. The row
    test is then :func:`emit_row_filter` with ``params[3 q : 3 q + 3]`` and the
    factors of :func:`emit_row_factors` (``norms``, ``gains``, ``form`` as in
    :func:`make_filter_intrinsic`). Query ``q0 + i``'s 32-bit row mask goes to
    ``masks[q0 + i]`` (int64 C-contiguous) and, when some row passes, its 32
    integer sums ``S`` in row order to ``sums[q0 + i]`` (int32 C-contiguous
    (nq_total, 32)); the OR of all masks is returned.
    Nothing is bounds-checked: callers check.
    """
    fname = f"block_dot_filter_q{nq}"

    def impl(typingctx, blocked, block_index, M, weights, q0, levels, biases, norms, gains,
             form, params, masks, sums):
        sig = _dot_filter_signature(fname, blocked, M, weights, q0, levels, biases, norms,
                                    gains, form, params, masks, sums)

        def codegen(context, builder, signature, args):
            a_b, a_m, a_q0 = args[1], args[2], args[4]
            arr = {i: context.make_array(signature.args[i])(context, builder, args[i])
                   for i in (0, 3, 5, 6, 7, 8, 10, 11, 12)}
            c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
            permb, dpbusd = _vnni_ops(builder)
            codes_base = builder.gep(builder.bitcast(arr[0].data, _i8.as_pointer()),
                                     [builder.mul(a_b, builder.mul(a_m, c64(16)))])
            # one query's loop is short enough for vpdpbusd's latency to bound it:
            # its steps alternate between two accumulator chains
            chains = 2 if nq == 1 else 1
            table, accs, multiply = _emit_dot_queries(builder, arr[3], arr[5], arr[6], a_q0, nq,
                                                      dpbusd, chains)
            to_vector_major = ir.Constant(_vec(_i8, 64), _TO_VECTOR_MAJOR)
            v64i8, v32i16 = _vec(_i8, 64), _vec(_i16, 32)
            shift4 = _splat(_i16, 32, 4)

            def add_step(step, c, valid, chain=0):
                """Dot products of the 64 code bytes ``c`` (sub-codes 4 step ..); absent
                sub-codes read as code 0, whose weights are zero. Full steps are stored
                regrouped per vector; a last partial one is regrouped here."""
                if valid is not None:
                    c = permb(c, to_vector_major)  # one regrouping serves both nibbles
                # vpermb reads six index bits and the table repeats every 16 bytes,
                # so neither half needs its other bits cleared
                high = builder.bitcast(builder.lshr(builder.bitcast(c, v32i16), shift4), v64i8)
                multiply(step, [permb(table, c), permb(table, high)], chain)

            _emit_vnni_steps(builder, codes_base, a_m, add_step, paired=chains == 2)
            return _emit_vnni_filter(builder, accs(), a_q0, a_b, args[9], arr[7], arr[8],
                                     arr[10], arr[11], arr[12])

        return sig, codegen

    impl.__name__ = fname
    return intrinsic(impl)


# 3-bit codes (:mod:`tqsearch.kernels.triplets`): byte 8 p + k of half h's permute takes
# byte 24 h + 3 p + min(k, 2) of the step, so that 64-bit lane p starts with triplet p;
# the multishift then takes field f of that lane (bits 3 f ..) into its byte f.
_TRIPLET_BYTES = [[24 * h + 3 * (i // 8) + min(i % 8, 2) for i in range(64)] for h in (0, 1)]
_TRIPLET_SHIFTS = [3 * (i % 8) for i in range(64)]


def make_triplet_dot_filter_intrinsic(nq):
    """Build the ``@intrinsic`` testing one block of 3-bit codes for ``nq`` queries by
    int8 dot products.

    The returned intrinsic has the Numba signature::

        f(blocked, block_index, D4, weights, q0, levels, biases, norms, gains, form,
          params, masks, sums) -> int64

    ``blocked`` holds 3-bit codes in the layout of :mod:`tqsearch.kernels.triplets`
    (``D4`` coordinates per vector, a multiple of 4: 48 bytes a step of four);
    ``weights``, ``levels`` (the codebook's int8 levels plus 128, 16 entries of
    which codes use 8), ``biases`` and everything else are as in
    :func:`make_dot_filter_intrinsic`. Per step, each half is unpacked once for
    all queries (``vpermb``, ``vpmultishiftqb`` and the level lookup, ``vpermb``
    on a table repeating every 8 bytes) and multiplied with each query's four
    weights (``vpdpbusd``).
    Nothing is bounds-checked: callers check.
    """
    fname = f"block_triplet_dot_filter_q{nq}"

    def impl(typingctx, blocked, block_index, D4, weights, q0, levels, biases, norms, gains,
             form, params, masks, sums):
        sig = _dot_filter_signature(fname, blocked, D4, weights, q0, levels, biases, norms,
                                    gains, form, params, masks, sums)

        def codegen(context, builder, signature, args):
            a_b, a_d4, a_q0 = args[1], args[2], args[4]
            arr = {i: context.make_array(signature.args[i])(context, builder, args[i])
                   for i in (0, 3, 5, 6, 7, 8, 10, 11, 12)}
            c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
            permb, dpbusd = _vnni_ops(builder)
            v64i8 = _vec(_i8, 64)
            multishift = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v64i8, [v64i8, v64i8]),
                "llvm.x86.avx512.pmultishift.qb.512")
            steps = builder.udiv(a_d4, c64(4))
            codes_base = builder.gep(builder.bitcast(arr[0].data, _i8.as_pointer()),
                                     [builder.mul(a_b, builder.mul(steps, c64(48)))])
            table, accs, multiply = _emit_dot_queries(builder, arr[3], arr[5], arr[6], a_q0, nq,
                                                      dpbusd)
            spread = [ir.Constant(v64i8, idx) for idx in _TRIPLET_BYTES]
            shifts = ir.Constant(v64i8, _TRIPLET_SHIFTS)
            # vpermb reads six index bits: a table repeating every 8 bytes ignores the
            # next fields' bits above each 3-bit field
            table8 = _shuffle(builder, table, table, [i % 8 for i in range(64)])

            with cgutils.for_range(builder, steps, intp=_i64) as loop:
                step = loop.index
                # 48 bytes: the masked load reads nothing past the block
                data = _load_bytes_masked(builder, codes_base, builder.mul(step, c64(48)), 64,
                                          c64(48))
                operands = []
                for h in range(2):
                    fields = builder.call(multishift, [shifts, permb(data, spread[h])])
                    operands.append(permb(table8, fields))
                multiply(step, operands)

            return _emit_vnni_filter(builder, accs(), a_q0, a_b, args[9], arr[7], arr[8],
                                     arr[10], arr[11], arr[12])

        return sig, codegen

    impl.__name__ = fname
    return intrinsic(impl)


def make_perm_filter_intrinsic(nq):
    """Build the ``@intrinsic`` testing one block for ``nq`` queries with 64-byte
    table lookups (``vpermb``) summed by byte dot products (``vpdpbusd``).

    The returned intrinsic has the Numba signature::

        f(blocked, block_index, M, luts, q0, norms, gains, form, params, masks,
          sums) -> int64

    ``blocked`` as in :func:`make_dot_filter_intrinsic` (full steps regrouped per
    vector) and ``luts`` as in :func:`make_block_intrinsic` (any nibble tables:
    1-, 2- or 4-bit fields, nibble codebooks). Each 64-byte step of codes (four
    sub-codes) has each 32-bit lane holding the four sub-codes of one vector (as
    stored; a last partial step is regrouped here by a ``vpermb``); per query, one
    ``vpermb`` per nibble half looks every byte up in the step's 64 table bytes
    (index ``16 t + nibble`` for sub-code ``t``), and ``vpdpbusd`` against ones
    adds the four results into the lane's 32-bit sum. Tables may use all of
    ``0 .. 255`` (no grouping constraint) and sums never overflow, so no
    widening or flushing is needed. The row test, ``params``, ``masks``,
    ``sums`` and the result are as in :func:`make_dot_filter_intrinsic`. Nothing is
    bounds-checked: callers check.
    """
    fname = f"block_perm_filter_q{nq}"

    def impl(typingctx, blocked, block_index, M, luts, q0, norms, gains, form, params, masks,
             sums):
        _check_vnni_args(fname, blocked, M, q0, norms, gains, form, params, masks, sums)
        _check_u8_c(luts, "luts", fname)
        sig = types.int64(blocked, types.intp, types.intp, luts, types.intp, norms, gains,
                          form, params, masks, sums)

        def codegen(context, builder, signature, args):
            a_b, a_m, a_q0 = args[1], args[2], args[4]
            arr = {i: context.make_array(signature.args[i])(context, builder, args[i])
                   for i in (0, 3, 5, 6, 8, 9, 10)}
            c64 = lambda v: ir.Constant(_i64, v)  # noqa: E731
            permb, dpbusd = _vnni_ops(builder)
            stride = builder.mul(a_m, c64(16))
            codes_base = builder.gep(builder.bitcast(arr[0].data, _i8.as_pointer()),
                                     [builder.mul(a_b, stride)])
            lut_base = builder.bitcast(arr[3].data, _i8.as_pointer())
            lut_bases = [builder.gep(lut_base, [builder.mul(stride, builder.add(a_q0, c64(i)))])
                         for i in range(nq)]
            to_vector_major = ir.Constant(_vec(_i8, 64), _TO_VECTOR_MAJOR)
            table_of_byte = ir.Constant(_vec(_i8, 64), _TABLE_OF_BYTE)
            ones = _splat(_i8, 64, 1)
            zero = ir.Constant(_vec(_i32, 16), None)
            # as in the dot-product filter: a query alone alternates its steps
            # between two accumulator chains, or vpdpbusd's latency bounds the loop
            chains = 2 if nq == 1 else 1
            accs = [[[cgutils.alloca_once_value(builder, zero) for _ in range(2)]
                     for _ in range(chains)] for _ in range(nq)]

            def add_step(step, c, valid, chain=0):
                """Table sums of the 64 code bytes ``c`` (sub-codes 4 step ..); absent
                sub-codes read table bytes loaded as zero. Full steps are stored
                regrouped per vector; a last partial one is regrouped here."""
                if valid is not None:
                    c = permb(c, to_vector_major)
                index = (builder.or_(builder.and_(c, _splat(_i8, 64, 0x0F)), table_of_byte),
                         builder.or_(builder.lshr(c, _splat(_i8, 64, 4)), table_of_byte))
                off = builder.mul(step, c64(64))
                for i in range(nq):
                    if valid is None:
                        t = _load_bytes(builder, lut_bases[i], off, 64)
                    else:
                        t = _load_bytes_masked(builder, lut_bases[i], off, 64, valid)
                    for h in range(2):
                        slot = accs[i][chain][h]
                        builder.store(dpbusd(builder.load(slot), permb(t, index[h]), ones), slot)

            def add_one(step, c):
                """Table sums of a last step of one sub-code (16 bytes ``c``): byte
                shuffles of its one table, widened into the sums' lanes, which hold
                the vectors of byte ``p`` of a sub-code in lane ``p``."""
                halves = (builder.and_(c, _splat(_i8, 16, 0x0F)),
                          builder.lshr(c, _splat(_i8, 16, 4)))
                off = builder.mul(step, c64(64))
                for i in range(nq):
                    t = _load_bytes(builder, lut_bases[i], off, 16)
                    for h in range(2):
                        wide = builder.zext(_pshufb(builder, 16, t, halves[h]), _vec(_i32, 16))
                        slot = accs[i][0][h]
                        builder.store(builder.add(builder.load(slot), wide), slot)

            _emit_vnni_steps(builder, codes_base, a_m, add_step, add_one, paired=chains == 2)
            return _emit_vnni_filter(builder, _sum_chains(builder, accs), a_q0, a_b, args[7],
                                     arr[5], arr[6], arr[8], arr[9], arr[10])

        return sig, codegen

    impl.__name__ = fname
    return intrinsic(impl)


#: Eight queries per pass over a block (batches), and one (single queries, leftovers).
block_dot_filter_q8 = make_dot_filter_intrinsic(8)
block_dot_filter_q1 = make_dot_filter_intrinsic(1)
block_perm_filter_q8 = make_perm_filter_intrinsic(8)
block_perm_filter_q1 = make_perm_filter_intrinsic(1)
block_triplet_dot_filter_q8 = make_triplet_dot_filter_intrinsic(8)
block_triplet_dot_filter_q1 = make_triplet_dot_filter_intrinsic(1)


# One intrinsic per (width, group); ``group`` steps are added as bytes before widening.
block_scan_avx2_g1 = make_block_intrinsic(32, group=1)
block_scan_avx2_g2 = make_block_intrinsic(32, group=2)
block_scan_avx2_g4 = make_block_intrinsic(32, group=4)
block_scan_avx512_g1 = make_block_intrinsic(64, group=1)
block_scan_avx512_g2 = make_block_intrinsic(64, group=2)
block_scan_avx512_g4 = make_block_intrinsic(64, group=4)
# Two tables per pass over a block: the code loads and nibble splits are shared.
block_scan_avx2_q2_g1 = make_block_intrinsic(32, nq=2, group=1)
block_scan_avx2_q2_g2 = make_block_intrinsic(32, nq=2, group=2)
block_scan_avx2_q2_g4 = make_block_intrinsic(32, nq=2, group=4)
block_scan_avx512_q2_g1 = make_block_intrinsic(64, nq=2, group=1)
block_scan_avx512_q2_g2 = make_block_intrinsic(64, nq=2, group=2)
block_scan_avx512_q2_g4 = make_block_intrinsic(64, nq=2, group=4)
# Scan and row test in one: the sums stay in registers, a bit mask comes back.
block_filter_avx2_g1 = make_filter_intrinsic(32, group=1)
block_filter_avx2_g2 = make_filter_intrinsic(32, group=2)
block_filter_avx2_g4 = make_filter_intrinsic(32, group=4)
block_filter_avx512_g1 = make_filter_intrinsic(64, group=1)
block_filter_avx512_g2 = make_filter_intrinsic(64, group=2)
block_filter_avx512_g4 = make_filter_intrinsic(64, group=4)
block_filter_avx2_q2_g1 = make_filter_intrinsic(32, nq=2, group=1)
block_filter_avx2_q2_g2 = make_filter_intrinsic(32, nq=2, group=2)
block_filter_avx2_q2_g4 = make_filter_intrinsic(32, nq=2, group=4)
block_filter_avx512_q2_g1 = make_filter_intrinsic(64, nq=2, group=1)
block_filter_avx512_q2_g2 = make_filter_intrinsic(64, nq=2, group=2)
block_filter_avx512_q2_g4 = make_filter_intrinsic(64, nq=2, group=4)
