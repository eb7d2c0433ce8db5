"""Typing-time argument checks shared by the LLVM-IR intrinsics.

An intrinsic reads its arrays' memory directly, so a wrong dtype, rank or
layout would read garbage; these checks refuse such a call when Numba types
it, with a message that names the argument and what it must be.
"""

from __future__ import annotations

from numba import types
from numba.core.errors import TypingError

__all__ = ["check_c_array"]


def check_c_array(fname, name, ty, dtype, ndim):
    """Raise ``TypingError`` unless ``ty`` is a C-contiguous ``ndim``-D array of ``dtype``."""
    if not (isinstance(ty, types.Array) and ty.dtype == dtype and ty.ndim == ndim
            and ty.layout == "C"):
        raise TypingError(f"{fname}: {name} must be a C-contiguous {ndim}-D {dtype} array, "
                          f"got {ty}")
