"""Numba kernels: arrays and scalars in, arrays out; no Python objects."""

from __future__ import annotations

import types

from numba import njit


def renamed_copy(function, name: str, bindings: dict | None = None):
    """A copy of a plain function under another name, some global names rebound.

    Numba names cache entries after the Python function, so a function compiled
    twice (serial and parallel, or for two SIMD widths) needs a copy of its own
    per compilation; ``bindings`` maps global names the copy sees differently
    (e.g. a namespace of one variant's intrinsics) to their values.
    """
    source = getattr(function, "py_func", function)
    namespace = source.__globals__ if bindings is None else {**source.__globals__, **bindings}
    copy = types.FunctionType(source.__code__, namespace, name, source.__defaults__,
                              source.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = source.__doc__
    return copy


def serial_twin(kernel, name: str, **options):
    """The source of a ``parallel=True`` kernel compiled again without threads.

    Numba names cache entries after the Python function, so compiling the same
    function twice would make the two dispatchers share (and overwrite) one
    cache entry, and a parallel kernel could come back from the cache serial.
    The twin is a renamed copy of the function, with a cache entry of its own.

    Parameters
    ----------
    kernel : numba dispatcher (or plain function under ``NUMBA_DISABLE_JIT``)
    name : str
        Name of the twin (and of its cache entry).
    **options
        ``njit`` options (``fastmath``, ...); ``cache=True`` is implied.
    """
    return njit(cache=True, **options)(renamed_copy(kernel, name))
