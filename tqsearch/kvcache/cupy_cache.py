"""TurboQuant-coded KV cache on an NVIDIA GPU (CuPy RawKernels).

Importing this module needs CuPy; ``import tqsearch.kvcache`` does not (it
loads this module on first use of :class:`CupyKVCache`).

Memory layout per layer (``cap`` = reserved tokens, a multiple of 64)::

    key_codes    uint8   (batch, kv_heads, cap, head_dim * key_bits / 8)
    value_codes  uint8   (batch, kv_heads, cap, head_dim * value_bits / 8)
    key_scale    float32 (batch, kv_heads, cap)
    value_scale  float32 (batch, kv_heads, cap)
    lengths      int32   (batch,)   (a host copy is kept in ``self.lengths``)

The bytes are those of :class:`~tqsearch.kvcache.reference.NumpyKVCache`.
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np

from . import kernels as _k
from .plan import TILE, plan_splits
from .reference import CodedTokens, NumpyKVCache, _n_valid, check_kv, check_query

try:  # the GPU module is only imported once CuPy is known to be importable
    import cupy as cp
except ImportError as exc:  # pragma: no cover - exercised where CuPy is absent
    raise ImportError(
        'the GPU KV cache needs CuPy: pip install "tqsearch[gpu]" (or cupy-cuda12x)'
    ) from exc

__all__ = ["CupyKVCache"]

_CAP_ALIGN = 64          # capacity granularity (>= the largest token tile)
_TILE = TILE
_WARPS = 12              # warps per block in tq_attend
_STAGES = 2              # tiles in each warp's cp.async ring
_WIDE = True             # 256-byte lookup-table rows for 4/4 bits (one byte permute per lookup)
_SMEM_LIMIT = 227 * 1024
_PDL = True              # launch tq_attend as a programmatic dependent (compute capability >= 9)
_LOG2E = 1.4426950408889634

@functools.cache
def _device_probe(device_id: int) -> dict:
    """Run a trivial kernel to make sure the device really works; return its properties."""
    with cp.cuda.Device(device_id):
        x = cp.arange(4, dtype=cp.float32)
        if float((x * 2).sum()) != 12.0:
            raise RuntimeError(f"CUDA device {device_id} returned a wrong result")
        props = cp.cuda.runtime.getDeviceProperties(device_id)
    return {"sms": int(props["multiProcessorCount"]), "name": props["name"].decode(),
            "cc": (int(props["major"]), int(props["minor"]))}


class _LaunchAttr(ctypes.Structure):   # CUlaunchAttribute
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4),
                ("value", ctypes.c_int * 16)]   # CUlaunchAttributeValue (a 64-byte union)


class _LaunchConfig(ctypes.Structure):   # CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared_mem", ctypes.c_uint), ("stream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttr)), ("num_attrs", ctypes.c_uint)]


_ATTR_PROGRAMMATIC_STREAM_SERIALIZATION = 6


@functools.cache
def _launch_ex():
    """The driver's ``cuLaunchKernelEx`` (ctypes), or None where it cannot be found."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            fn = lib.cuLaunchKernelEx
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.POINTER(_LaunchConfig), ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
        return fn
    return None


def _launch_pdl(fn, grid: int, block: int, smem: int, args) -> None:
    """Launch ``fn`` on the current stream allowing programmatic stream serialization.

    The kernel may then start while the previous kernel of the stream ends; it
    must execute ``griddepcontrol.wait`` before touching what that kernel writes.
    """
    vals = []
    for a in args:
        if isinstance(a, cp.ndarray):
            vals.append(ctypes.c_void_p(a.data.ptr))
        elif isinstance(a, np.int32):
            vals.append(ctypes.c_int32(int(a)))
        elif isinstance(a, np.float32):
            vals.append(ctypes.c_float(float(a)))
        else:
            raise TypeError(f"unsupported kernel argument {type(a)}")
    params = (ctypes.c_void_p * len(vals))(*[ctypes.addressof(v) for v in vals])
    attr = _LaunchAttr()
    attr.id = _ATTR_PROGRAMMATIC_STREAM_SERIALIZATION
    attr.value[0] = 1
    cfg = _LaunchConfig()
    cfg.grid[:] = (grid, 1, 1)
    cfg.block[:] = (block, 1, 1)
    cfg.shared_mem = smem
    cfg.stream = cp.cuda.get_current_stream().ptr
    cfg.attrs = ctypes.pointer(attr)
    cfg.num_attrs = 1
    rc = _launch_ex()(ctypes.byref(cfg), fn.kernel.ptr, params, None)
    if rc != 0:
        raise RuntimeError(f"cuLaunchKernelEx failed (CUresult {rc})")


@functools.cache
def _module(kind: str, *key):
    if kind == "encode":
        src, name = _k.encode_source(*key), "tq_encode"
    else:
        src, name = _k.attend_source(*key), "tq_attend"
    mod = cp.RawModule(code=src, options=("--std=c++17",))
    return mod.get_function(name)


def _pair_table(centroids: np.ndarray, bits: int) -> np.ndarray:
    """uint32 (4**bits,): fp16 pair (c[e & mask] low, c[e >> bits] high) for field e."""
    c = np.asarray(centroids, dtype=np.float16).view(np.uint16).astype(np.uint32)
    e = np.arange(1 << (2 * bits))
    return (c[e & ((1 << bits) - 1)] | (c[e >> bits] << 16)).astype(np.uint32)


class CupyKVCache(CodedTokens):
    """KV cache of one attention layer, TurboQuant-coded, on the GPU.

    Same parameters, layout and math as
    :class:`~tqsearch.kvcache.reference.NumpyKVCache`; arrays are CuPy arrays
    on the current device.

    Parameters
    ----------
    batch, kv_heads, head_dim : int
    key_bits, value_bits : int
        2, 3 or 4 each.
    seed : int
    norm_correction : bool
    capacity : int
        Tokens to reserve per sequence (grows on demand, by copying).
    """

    xp = cp

    def __init__(
        self,
        batch: int,
        kv_heads: int,
        head_dim: int,
        key_bits: int = 4,
        value_bits: int = 4,
        *,
        seed: int = 0,
        norm_correction: bool = True,
        capacity: int = 0,
        center_keys: bool = True,
        center_min_tokens: int = 16,
    ):
        self.device = cp.cuda.Device()
        self._props = _device_probe(self.device.id)
        super().__init__(batch, kv_heads, head_dim, key_bits, value_bits, seed=seed,
                         norm_correction=norm_correction, capacity=capacity,
                         center_keys=center_keys, center_min_tokens=center_min_tokens)
        lay = self.layout
        self._lengths_d = cp.zeros(self.batch, dtype=cp.int32)
        f32 = np.float32
        self._ksigns = cp.asarray(lay.key_signs, dtype=f32)
        self._vsigns = cp.asarray(lay.value_signs, dtype=f32)
        self._kbnd = cp.asarray(lay.key_codebook.boundaries, dtype=f32)
        self._vbnd = cp.asarray(lay.value_codebook.boundaries, dtype=f32)
        self._kcent = cp.asarray(lay.key_codebook.centroids, dtype=f32)
        self._vcent = cp.asarray(lay.value_codebook.centroids, dtype=f32)
        self._klut = cp.asarray(_pair_table(lay.key_codebook.centroids, lay.key_bits))
        self._vlut = cp.asarray(_pair_table(lay.value_codebook.centroids, lay.value_bits))
        # per (batch, kv head): items finished in the running call (the merging block resets it)
        self._done = cp.zeros(self.batch * self.kv_heads, dtype=cp.int32)
        self._part = None
        self._occ = {}

    # storage -----------------------------------------------------------------
    def _capacity_for(self, tokens: int) -> int:
        # whole token tiles (_CAP_ALIGN is at least the largest tile a kernel reads)
        return max(_CAP_ALIGN, -(-int(tokens) // _CAP_ALIGN) * _CAP_ALIGN)

    def _set_lengths(self, lengths: np.ndarray):
        self.lengths = np.asarray(lengths, dtype=np.int64).copy()
        self._lengths_d = cp.asarray(self.lengths.astype(np.int32))

    # appending -----------------------------------------------------------------
    def append(self, keys, values, n_valid=None):
        """Code and append a block of tokens to every sequence, on the GPU.

        Parameters
        ----------
        keys, values : cupy.ndarray of float16, bfloat16 or float32,
                shape (batch, kv_heads, tokens, head_dim)
        n_valid : array of int, shape (batch,), optional
            Append only the first ``n_valid[b]`` tokens of sequence ``b``.
        """
        keys = cp.ascontiguousarray(keys)
        values = cp.ascontiguousarray(values)
        t = check_kv(keys, values, self.batch, self.kv_heads, self.head_dim)
        if keys.dtype != values.dtype:
            raise TypeError(f"keys ({keys.dtype}) and values ({values.dtype}) differ in dtype")
        xt = _k.dtype_code(keys.dtype)
        n = _n_valid(n_valid, self.batch, t)
        new_len = self.lengths + n
        self._grow(int(new_len.max()))
        if t == 0 or not n.any():
            return
        for b in NumpyKVCache._first_appends(self, n):
            self.key_offset[b] = keys[b, :, : n[b]].mean(axis=1, dtype=cp.float32)
        meta = cp.asarray(np.concatenate([self.lengths, n]).astype(np.int32))
        lay = self.layout
        fn = _module("encode", self.head_dim, lay.key_bits, lay.value_bits, xt)
        rows = self.batch * self.kv_heads * t
        fn(
            (-(-rows // 8), 2), (256,),
            (keys, values, meta[: self.batch], meta[self.batch:],
             np.int32(self.batch), np.int32(self.kv_heads), np.int32(t),
             np.int32(self.capacity),
             self.key_codes, self.key_scale, self.value_codes, self.value_scale,
             self._ksigns, self._vsigns, self._kbnd, self._vbnd, self._kcent, self._vcent,
             self.key_offset, np.int32(lay.norm_correction)),
        )
        self._set_lengths(new_len)

    # attention -------------------------------------------------------------
    def _attend_config(self, group: int) -> tuple[int, int, int, bool, int]:
        """(warps, tile, stages, wide tables, dynamic shared bytes) that fit the device."""
        lay = self.layout
        warps = _WARPS
        while True:
            smem = _k.attend_smem(self.head_dim, lay.key_bits, lay.value_bits, group, warps,
                                  _TILE, _STAGES, _WIDE)
            if smem <= _SMEM_LIMIT or warps == 1:
                return warps, _TILE, _STAGES, _WIDE, smem
            warps //= 2

    def _pdl(self) -> bool:
        """Whether tq_attend is launched as a programmatic dependent."""
        return bool(_PDL) and self._props["cc"] >= (9, 0) and _launch_ex() is not None

    def _attend_fn(self, group: int, qt: int):
        lay = self.layout
        warps, tile, stages, wide, smem = self._attend_config(group)
        fn = _module("attend", self.head_dim, lay.key_bits, lay.value_bits, group, qt,
                     warps, tile, stages, wide, self._pdl())
        if smem > 48 * 1024 and fn.max_dynamic_shared_size_bytes < smem:
            fn.max_dynamic_shared_size_bytes = smem
        return fn, smem, warps

    def _occupancy(self, group: int, qt: int) -> int:
        """Blocks of ``tq_attend`` resident on the whole device at once."""
        key = (group, qt)
        if key in self._occ:
            return self._occ[key]
        fn, smem, warps = self._attend_fn(group, qt)
        try:
            from cupy.cuda import driver

            per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(
                fn.kernel.ptr, warps * 32, smem
            )
        except Exception:  # noqa: BLE001 - fall back to a safe guess
            per_sm = 1
        self._occ[key] = max(1, int(per_sm)) * self._props["sms"]
        return self._occ[key]

    def attention(self, q, scale=None, *, splits=None):
        """Decode attention ``softmax(q K^T * scale) V`` computed from the codes.

        Parameters
        ----------
        q : cupy.ndarray of float16, bfloat16 or float32, shape (batch, q_heads, head_dim)
            ``q_heads`` a multiple of ``kv_heads`` (at most 16 query heads per
            KV head in one kernel; larger groups run in several passes).
        scale : float, optional
            Default ``1 / sqrt(head_dim)``.
        splits : int, optional
            Force the number of sequence splits (tuning); default from
            :func:`~tqsearch.kvcache.plan.plan_splits`.

        Returns
        -------
        cupy.ndarray, shape (batch, q_heads, head_dim), dtype of ``q``
        """
        q = cp.ascontiguousarray(q)
        group = check_query(q, self.batch, self.kv_heads, self.head_dim)
        if group > 16:
            parts = []
            qg = q.reshape(self.batch, self.kv_heads, group, self.head_dim)
            for j0 in range(0, group, 16):
                sub = qg[:, :, j0:j0 + 16].reshape(self.batch, -1, self.head_dim)
                parts.append(self.attention(sub, scale, splits=splits).reshape(
                    self.batch, self.kv_heads, -1, self.head_dim))
            return cp.concatenate(parts, axis=2).reshape(q.shape)
        qt = _k.dtype_code(q.dtype)
        d = self.head_dim
        scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
        qscale = np.float32(scale * _LOG2E / math.sqrt(d))
        max_len = int(self.lengths.max())
        blocks = self._occupancy(group, qt)
        fn, smem, warps = self._attend_fn(group, qt)
        s, c = plan_splits(self.batch, self.kv_heads, max_len, blocks, warps,
                           self.layout.bytes_per_token, group * d * 4, tile=_TILE)
        if splits is not None:
            tiles = max(1, -(-max_len // _TILE))
            c = -(-tiles // max(1, min(int(splits), tiles))) * _TILE
            s = max(1, -(-max_len // c))
        items = self.batch * self.kv_heads * s
        need = items * group * (d + 2)
        if self._part is None or self._part.size < need:
            self._part = cp.empty(need, dtype=cp.float32)
        part_acc = self._part[: items * group * d]
        part_ml = self._part[items * group * d: need]
        out = cp.empty(q.shape, dtype=q.dtype)
        args = (q, self.key_codes, self.key_scale, self.value_codes, self.value_scale,
                self._lengths_d, np.int32(self.batch), np.int32(self.kv_heads),
                np.int32(self.capacity), np.int32(s), np.int32(c), qscale,
                self._ksigns, self._vsigns, self._klut, self._vlut, part_acc, part_ml,
                self._done, out)
        grid = max(1, min(blocks, items))
        if self._pdl():
            _launch_pdl(fn, grid, warps * 32, smem, args)
        else:
            fn((grid,), (warps * 32,), args, shared_mem=smem)
        return out

    # transfer --------------------------------------------------------------
    @classmethod
    def from_numpy(cls, cache: NumpyKVCache) -> CupyKVCache:
        """Copy a NumPy cache's codes to the GPU (same layout, bytes unchanged)."""
        lay = cache.layout
        out = cls(cache.batch, cache.kv_heads, cache.head_dim, lay.key_bits, lay.value_bits,
                  seed=lay.seed, norm_correction=lay.norm_correction,
                  capacity=int(cache.lengths.max()), center_keys=cache.center_keys,
                  center_min_tokens=cache.center_min_tokens)
        out.key_offset[:] = cp.asarray(cache.key_offset)
        st = cache.state()
        t = st["key_codes"].shape[2]
        out.key_codes[:, :, :t] = cp.asarray(st["key_codes"])
        out.value_codes[:, :, :t] = cp.asarray(st["value_codes"])
        out.key_scale[:, :, :t] = cp.asarray(st["key_scale"])
        out.value_scale[:, :, :t] = cp.asarray(st["value_scale"])
        out._set_lengths(st["lengths"])
        return out

    def to_numpy(self) -> NumpyKVCache:
        """Copy the codes back into a :class:`NumpyKVCache`."""
        lay = self.layout
        t = int(self.lengths.max())
        out = NumpyKVCache(self.batch, self.kv_heads, self.head_dim, lay.key_bits,
                           lay.value_bits, seed=lay.seed, norm_correction=lay.norm_correction,
                           capacity=t, center_keys=self.center_keys,
                           center_min_tokens=self.center_min_tokens)
        out.key_offset[:] = cp.asnumpy(self.key_offset)
        out.key_codes[:] = cp.asnumpy(self.key_codes[:, :, :t])
        out.value_codes[:] = cp.asnumpy(self.value_codes[:, :, :t])
        out.key_scale[:] = cp.asnumpy(self.key_scale[:, :, :t])
        out.value_scale[:] = cp.asnumpy(self.value_scale[:, :, :t])
        out.lengths[:] = self.lengths
        return out
