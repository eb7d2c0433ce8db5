"""Input coercion and checks shared by the public entry points.

Everything the kernels receive passes through here once: converted to
C-contiguous float32 (other float dtypes and layouts are accepted), checked
for shape and finiteness, with errors that say how to fix the call.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["as_matrix", "check_finite", "check_k", "check_positive_int"]


def as_matrix(x, d: int | None = None, *, name: str = "x", check_finite: bool = True) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 matrix of shape (n, d).

    Parameters
    ----------
    x : array_like, shape (n, d)
        Real-valued vectors, one per row.
    d : int, optional
        Expected number of columns.
    name : str
        Argument name used in error messages.
    check_finite : bool
        Reject NaN and infinities (callers that check later pass False and call
        :func:`check_finite` themselves).

    Raises
    ------
    TypeError
        If ``x`` is not numeric.
    ValueError
        If ``x`` is not 2-D, has the wrong number of columns, or holds NaN/inf.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":  # float, signed or unsigned integer
        raise TypeError(
            f"{name} must hold real numbers, got dtype {arr.dtype}; "
            f"convert it with np.asarray({name}, dtype=np.float32)"
        )
    if arr.ndim != 2:
        hint = f"; for a single vector use {name}.reshape(1, -1)" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got shape {arr.shape}{hint}")
    if d is not None and arr.shape[1] != d:
        raise ValueError(
            f"{name} has dimension {arr.shape[1]} but the index has dimension d={d}; "
            f"pass vectors of shape (n, {d})"
        )
    if arr.dtype == np.float32:
        out = np.ascontiguousarray(arr)
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
            out = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite:
        _check_finite(out, name)
    return out


def _check_finite(out: np.ndarray, name: str) -> None:
    if out.size and not _all_finite(out):
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values (first bad row: {int(bad[0])}); "
            "clean or drop those rows first"
        )


def check_finite(x: np.ndarray, name: str = "x") -> None:
    """Raise the ValueError of :func:`as_matrix` if float32 ``x`` holds NaN or inf."""
    _check_finite(x, name)


def _all_finite(x: np.ndarray) -> bool:
    if x.size <= _SMALL:
        return bool(np.isfinite(x).all())
    # min/max propagate NaN and show infinities without a boolean temporary
    return bool(np.isfinite(x.min()) and np.isfinite(x.max()))


# Up to this many elements a boolean temporary is cheaper than two reductions.
_SMALL = 1 << 16


def check_positive_int(value, name: str) -> int:
    """``value`` as an int >= 1, or a ValueError/TypeError naming ``name``."""
    if type(value) is int and value > 0:  # the common case, without the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value}")
    return int(value)


def check_k(k) -> int:
    """Validate the number of neighbours asked for."""
    return check_positive_int(k, "k")
