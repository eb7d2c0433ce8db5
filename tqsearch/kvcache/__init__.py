"""TurboQuant-coded attention KV cache, with decode attention computed on the codes.

Keys and values are rotated with a seeded randomized Hadamard transform and
coded with the Lloyd-Max codebooks of :mod:`tqsearch.codebook` (per-token
norm, ``key_bits`` and ``value_bits`` chosen separately). Keys are first
centred by a per-sequence offset (the mean of the prefill's keys), which
cancels in the softmax. Decode attention rotates the query instead of
decoding keys and rotates the output back once.

* :class:`NumpyKVCache` -- CPU implementation and test reference (NumPy only).
* :class:`CupyKVCache` -- the same cache on an NVIDIA GPU with fused CuPy
  RawKernels; needs the optional extra ``pip install "tqsearch[gpu]"``.
  CuPy is imported only when this class is first used.

Example
-------
>>> import numpy as np
>>> from tqsearch.kvcache import NumpyKVCache
>>> cache = NumpyKVCache(batch=1, kv_heads=2, head_dim=64, key_bits=4, value_bits=4)
>>> k = np.random.default_rng(0).standard_normal((1, 2, 10, 64)).astype(np.float32)
>>> cache.append(k, k)
>>> cache.attention(np.ones((1, 4, 64), np.float32)).shape
(1, 4, 64)
"""

from __future__ import annotations

from .codec import BITS, HEAD_DIMS, KVLayout
from .reference import NumpyKVCache, float_attention

# CupyKVCache is resolved lazily (module __getattr__) and left out of __all__ so that
# ``from tqsearch.kvcache import *`` works without CuPy.
__all__ = [
    "KVLayout",
    "NumpyKVCache",
    "float_attention",
    "gpu_available",
    "HEAD_DIMS",
    "BITS",
]

_GPU_HINT = 'install the optional GPU extra: pip install "tqsearch[gpu]" (or cupy-cuda12x)'


def _import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"the GPU KV cache needs CuPy: {_GPU_HINT}") from exc
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and a CUDA device really runs a kernel."""
    try:
        cupy = _import_cupy()
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        x = cupy.arange(4, dtype=cupy.float32)
        return float((x * 2).sum()) == 12.0
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def __getattr__(name):
    if name == "CupyKVCache":
        _import_cupy()
        from .cupy_cache import CupyKVCache

        return CupyKVCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
