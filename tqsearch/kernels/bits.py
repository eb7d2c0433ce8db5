"""The lowest set bit of a row mask, for loops over the rows a filter passes.

A scan's filter hands back a bit mask of the rows of a block that pass. Testing
every bit (``for r in range(32): if (mask >> r) & 1``) costs a branch per row,
mispredicted whenever a row passes: with many rows passing (large ``k``, short
scans) that was the larger part of handling them. Visiting only the set bits,
``r = lowest_bit(mask); mask &= mask - 1``, costs one ``tzcnt`` per row that
passes and one well-predicted branch per block.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["lowest_bit"]

_i1 = ir.IntType(1)
_i64 = ir.IntType(64)


@intrinsic
def lowest_bit(typingctx, mask):
    """Index of the lowest set bit of ``mask`` (int64); 64 when ``mask`` is 0."""
    if not isinstance(mask, types.Integer):
        raise TypingError(f"lowest_bit: mask must be an integer, got {mask}")
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i64, [_i64, _i1]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [value, ir.Constant(_i1, 0)])

    return sig, codegen


def _lowest_bit_python(mask):
    mask = int(mask) & 0xFFFFFFFFFFFFFFFF
    return (mask & -mask).bit_length() - 1 if mask else 64


if numba.config.DISABLE_JIT:
    lowest_bit = _lowest_bit_python  # noqa: F811
