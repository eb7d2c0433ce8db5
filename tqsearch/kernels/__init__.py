"""Numba kernels: arrays and scalars in, arrays out; no Python objects."""

from __future__ import annotations

import types

from numba import njit


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
    source = getattr(kernel, "py_func", kernel)
    twin = types.FunctionType(source.__code__, source.__globals__, name,
                              source.__defaults__, source.__closure__)
    twin.__qualname__ = name
    twin.__doc__ = source.__doc__
    return njit(cache=True, **options)(twin)
