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

# Vectors per block; the kernels are written for exactly 32 (two nibbles per byte,
# 16 bytes per sub-code).
BLOCK = 32

# Steps (one step adds one byte per 16-bit lane) between flushes of the 16-bit lane
# accumulators into 32-bit sums: 256 * 255 = 65280 < 65536.
FLUSH_STEPS = 256

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


def _lane_sum(builder, vec32, lanes):
    """Sum of the ``lanes`` consecutive 8-element groups of an i32 vector -> <8 x i32>."""
    parts = [_shuffle(builder, vec32, vec32, list(range(8 * k, 8 * k + 8))) for k in range(lanes)]
    while len(parts) > 1:
        parts = [builder.add(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
    return parts[0]


def _bytes_to_vectors(builder, r, width):
    """Per-vector sums (<16 x i32>) of one lookup result of ``width`` bytes.

    Byte ``2 e + j`` of every lane belongs to vector ``e + 8 j``: gathering the even
    bytes then the odd bytes of each lane puts the 16 vectors in order.
    """
    lanes = width // 16
    order = list(range(0, 16, 2)) + list(range(1, 16, 2))
    acc = None
    for k in range(lanes):
        part = _shuffle(builder, r, r, [16 * k + i for i in order])
        part = builder.zext(part, _vec(_i32, 16))
        acc = part if acc is None else builder.add(acc, part)
    return acc


def _flush(builder, a, b, width):
    """32-bit per-vector sums (<16 x i32>) from the 16-bit accumulator pair of one half.

    ``a`` summed each lookup result viewed as 16-bit lanes (low byte + 256 * high byte,
    modulo 2**16) and ``b`` summed the high bytes, so ``a - (b << 8)`` is the exact sum of
    the low bytes while it stays below 2**16 (guaranteed by ``FLUSH_STEPS``).
    """
    n16 = width // 2
    even = builder.sub(a, builder.shl(b, _splat(_i16, n16, 8)))
    even = _lane_sum(builder, builder.zext(even, _vec(_i32, n16)), width // 16)
    odd = _lane_sum(builder, builder.zext(b, _vec(_i32, n16)), width // 16)
    return _shuffle(builder, even, odd, list(range(16)))


def _emit_step_into(builder, width, codes_base, lut_base, m, halves):
    """Look up ``width // 16`` sub-codes starting at ``m``; return (r_low, r_high) bytes."""
    off = builder.mul(m, ir.Constant(_i64, 16))
    c = _load_bytes(builder, codes_base, off, width)
    t = _load_bytes(builder, lut_base, off, width)
    lo = builder.and_(c, _splat(_i8, width, 0x0F))
    hi = builder.lshr(c, _splat(_i8, width, 4))
    return _pshufb(builder, width, t, lo), _pshufb(builder, width, t, hi)


def emit_block_scan(builder, width, codes_base, lut_bases, M, out_ptrs):
    """Emit the scan of one block of ``BLOCK`` vectors against one or more tables.

    Parameters
    ----------
    builder : llvmlite.ir.IRBuilder
    width : int
        16, 32 or 64: bytes per byte-shuffle (1, 2 or 4 sub-codes per step).
    codes_base : i8 pointer to the block's ``16 * M`` bytes.
    lut_bases : list of i8 pointers, one per table of ``16 * M`` bytes.
    M : i64 number of sub-codes.
    out_ptrs : list of i32 pointers (one per table), each to ``BLOCK`` sums, written.
    """
    nq = len(lut_bases)
    k = width // 16
    n16 = width // 2
    zero16 = ir.Constant(_vec(_i16, n16), None)
    zero32 = ir.Constant(_vec(_i32, BLOCK), None)
    acc32 = [cgutils.alloca_once_value(builder, zero32) for _ in range(nq)]
    accs = [[cgutils.alloca_once(builder, _vec(_i16, n16)) for _ in range(4)] for _ in range(nq)]

    nsteps = builder.udiv(M, ir.Constant(_i64, k))
    flush = ir.Constant(_i64, FLUSH_STEPS)
    nchunks = builder.udiv(builder.add(nsteps, ir.Constant(_i64, FLUSH_STEPS - 1)), flush)
    with cgutils.for_range(builder, nchunks, intp=_i64) as chunk:
        s0 = builder.mul(chunk.index, flush)
        s1 = builder.add(s0, flush)
        s1 = builder.select(builder.icmp_unsigned("<", s1, nsteps), s1, nsteps)
        for q in range(nq):
            for p in accs[q]:
                builder.store(zero16, p)
        with cgutils.for_range(builder, builder.sub(s1, s0), intp=_i64) as step:
            m = builder.mul(builder.add(s0, step.index), ir.Constant(_i64, k))
            off = builder.mul(m, ir.Constant(_i64, 16))
            c = _load_bytes(builder, codes_base, off, width)
            lo = builder.and_(c, _splat(_i8, width, 0x0F))
            hi = builder.lshr(c, _splat(_i8, width, 4))
            for q in range(nq):
                t = _load_bytes(builder, lut_bases[q], off, width)
                for half, idx in ((0, lo), (1, hi)):
                    r = builder.bitcast(_pshufb(builder, width, t, idx), _vec(_i16, n16))
                    pa, pb = accs[q][2 * half], accs[q][2 * half + 1]
                    builder.store(builder.add(builder.load(pa), r), pa)
                    r_hi = builder.lshr(r, _splat(_i16, n16, 8))
                    builder.store(builder.add(builder.load(pb), r_hi), pb)
        for q in range(nq):
            a0, b0, a1, b1 = (builder.load(p) for p in accs[q])
            low = _flush(builder, a0, b0, width)
            high = _flush(builder, a1, b1, width)
            both = _shuffle(builder, low, high, list(range(32)))
            builder.store(builder.add(builder.load(acc32[q]), both), acc32[q])

    # Remaining M % k sub-codes, one 16-byte step each.
    done = builder.mul(nsteps, ir.Constant(_i64, k))
    with cgutils.for_range(builder, builder.sub(M, done), intp=_i64) as rest:
        m = builder.add(done, rest.index)
        off = builder.mul(m, ir.Constant(_i64, 16))
        c = _load_bytes(builder, codes_base, off, 16)
        lo = builder.and_(c, _splat(_i8, 16, 0x0F))
        hi = builder.lshr(c, _splat(_i8, 16, 4))
        for q in range(nq):
            t = _load_bytes(builder, lut_bases[q], off, 16)
            low = _bytes_to_vectors(builder, _pshufb(builder, 16, t, lo), 16)
            high = _bytes_to_vectors(builder, _pshufb(builder, 16, t, hi), 16)
            both = _shuffle(builder, low, high, list(range(32)))
            builder.store(builder.add(builder.load(acc32[q]), both), acc32[q])

    for q in range(nq):
        ptr = builder.bitcast(out_ptrs[q], _vec(_i32, BLOCK).as_pointer())
        builder.store(builder.load(acc32[q]), ptr, align=4)


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
        raise TypingError(
            f"{fname}: out must be a C-contiguous int32 or uint32 array, got {ty}"
        )


def make_block_intrinsic(width, nq=1):
    """Build the ``@intrinsic`` scanning one block with ``width``-byte shuffles.

    The returned intrinsic has the Numba signature::

        f(blocked, block_index, M, luts, out, out_start) -> None

    with ``blocked`` C-contiguous uint8 (any ndim, block ``b`` at byte ``b * 16 * M``),
    ``luts`` C-contiguous uint8 holding ``nq`` tables of ``16 * M`` bytes one after the
    other (``(M, 16)`` when ``nq == 1``, ``(nq, M, 16)`` otherwise), and ``out``
    C-contiguous int32/uint32: table ``q``'s 32 sums go to flat elements
    ``out_start + q * BLOCK ...``. Nothing is bounds-checked: callers check.
    """
    fname = f"block_scan_w{width}_q{nq}"

    def impl(typingctx, blocked, block_index, M, luts, out, out_start):
        if not width_supported(width):
            raise TypingError(
                f"{fname}: the compile target lacks {', '.join(_REQUIRES[width])} "
                "(see tqsearch.kernels.fastscan.available_variants())"
            )
        _check_u8_c(blocked, "blocked", fname)
        _check_u8_c(luts, "lut", fname)
        _check_out(out, fname)
        for name, ty in (("block_index", block_index), ("M", M), ("out_start", out_start)):
            if not isinstance(ty, types.Integer):
                raise TypingError(f"{fname}: {name} must be an integer, got {ty}")
        sig = types.void(blocked, types.intp, types.intp, luts, out, types.intp)

        def codegen(context, builder, signature, args):
            a_blocked, a_b, a_m, a_lut, a_out, a_start = args
            codes = context.make_array(signature.args[0])(context, builder, a_blocked)
            lut = context.make_array(signature.args[3])(context, builder, a_lut)
            res = context.make_array(signature.args[4])(context, builder, a_out)
            stride = builder.mul(a_m, ir.Constant(_i64, 16))
            codes_base = builder.gep(
                builder.bitcast(codes.data, _i8.as_pointer()), [builder.mul(a_b, stride)]
            )
            lut_base = builder.bitcast(lut.data, _i8.as_pointer())
            lut_bases = [builder.gep(lut_base, [builder.mul(stride, ir.Constant(_i64, q))])
                         for q in range(nq)]
            out_base = builder.bitcast(res.data, _i32.as_pointer())
            out_ptrs = [
                builder.gep(out_base, [builder.add(a_start, ir.Constant(_i64, BLOCK * q))])
                for q in range(nq)
            ]
            emit_block_scan(builder, width, codes_base, lut_bases, a_m, out_ptrs)
            return context.get_dummy_value()

        return sig, codegen

    impl.__name__ = fname
    return intrinsic(impl)


block_scan_w16 = make_block_intrinsic(16)
block_scan_w32 = make_block_intrinsic(32)
block_scan_w64 = make_block_intrinsic(64)
block_scan_w32_q2 = make_block_intrinsic(32, nq=2)
block_scan_w64_q4 = make_block_intrinsic(64, nq=4)
