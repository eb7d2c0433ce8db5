"""Array views without reference counting, for the scan's innermost loops.

Numba counts references to every array it passes to a helper: an inlined
helper called once per (block, query) or per row pays an atomic increment and
decrement of each array argument's counter, some 20 cycles apiece. In a scan
that re-scores many rows (large ``k``) those pairs took an eighth of the time.
A *borrowed* view is the same array with no owner attached: Numba's reference
counting skips it. The owner must outlive every use of the view; kernels take
views of their arguments (kept alive by the caller) and of arrays they
allocate, which they keep alive to the end with :func:`keep_alive`.
"""

from __future__ import annotations

import numba
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["borrowed", "keep_alive"]


@intrinsic
def borrowed(typingctx, arr):
    """``arr`` as a view Numba does not count references to (see the module docstring)."""
    if not isinstance(arr, types.Array):
        raise TypingError(f"borrowed: expected an array, got {arr}")

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        view = context.make_array(signature.return_type)(context, builder)
        for name in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(view, name, getattr(src, name))
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()

    return arr(arr), codegen


@intrinsic
def keep_alive(typingctx, owners):
    """Nothing; holds ``owners`` (an array or a tuple of arrays: the owners of
    borrowed views) alive until here."""
    members = owners.types if isinstance(owners, types.BaseTuple) else (owners,)
    if not all(isinstance(t, types.Array) for t in members):
        raise TypingError(f"keep_alive: expected arrays, got {owners}")

    def codegen(context, builder, signature, args):
        return context.get_dummy_value()

    return types.none(owners), codegen


if numba.config.DISABLE_JIT:  # plain Python: arrays are objects, nothing to skip

    def borrowed(arr):  # noqa: F811
        return arr

    def keep_alive(owners):  # noqa: F811
        return None
