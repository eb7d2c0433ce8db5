"""NumPy KV cache on TurboQuant codes, and plain float attention.

:class:`NumpyKVCache` holds exactly the bytes the GPU cache holds (see
:mod:`tqsearch.kvcache.codec` for the layout) and computes decode attention
with the same math as the GPU kernels: the query is rotated with the keys'
rotation, scores are ``scale * key_scale * (R q) . c[key codes]``, the softmax
weights multiply ``value_scale * c[value codes]`` in the value rotation's
domain, and the sum is rotated back once. It serves machines without a GPU
and is the reference the GPU kernels are tested against.
"""

from __future__ import annotations

import numpy as np

from .codec import KVLayout, rotate, unrotate

__all__ = ["NumpyKVCache", "float_attention", "check_query", "check_kv"]


class CodedTokens:
    """What every KV cache holds: its geometry, the sequences' lengths and key
    offsets, and the coded tokens (codes and norms of keys and values) in arrays
    of one array module (``xp``: NumPy here, CuPy on the GPU).

    Parameters are those of :class:`NumpyKVCache`; ``capacity`` goes through
    :meth:`_capacity_for`.
    """

    xp = np

    def __init__(self, batch, kv_heads, head_dim, key_bits, value_bits, *, seed,
                 norm_correction, capacity, center_keys, center_min_tokens):
        if batch < 1 or kv_heads < 1:
            raise ValueError(f"batch={batch} and kv_heads={kv_heads} must be positive")
        self.layout = KVLayout(
            head_dim, key_bits, value_bits, seed=seed, norm_correction=norm_correction
        )
        self.batch = int(batch)
        self.kv_heads = int(kv_heads)
        self.head_dim = self.layout.head_dim
        self.center_keys = bool(center_keys)
        self.center_min_tokens = int(center_min_tokens)
        self.lengths = np.zeros(self.batch, dtype=np.int64)
        self.key_offset = self.xp.zeros((self.batch, self.kv_heads, self.head_dim),
                                        dtype=np.float32)
        self._alloc(self._capacity_for(max(int(capacity), 0)))

    def _capacity_for(self, tokens: int) -> int:
        """Tokens per sequence to allocate for at least ``tokens``."""
        return tokens

    def _alloc(self, capacity: int):
        xp, lay, b, h = self.xp, self.layout, self.batch, self.kv_heads
        self.key_codes = xp.zeros((b, h, capacity, lay.key_row_bytes), dtype=np.uint8)
        self.value_codes = xp.zeros((b, h, capacity, lay.value_row_bytes), dtype=np.uint8)
        self.key_scale = xp.zeros((b, h, capacity), dtype=np.float32)
        self.value_scale = xp.zeros((b, h, capacity), dtype=np.float32)

    @property
    def capacity(self) -> int:
        return int(self.key_codes.shape[2])

    def _grow(self, needed: int):
        """Room for ``needed`` tokens per sequence (at least doubling), by copying."""
        if needed <= self.capacity:
            return
        old = (self.key_codes, self.value_codes, self.key_scale, self.value_scale)
        n = self.capacity
        self._alloc(self._capacity_for(max(needed, 2 * n)))
        self.key_codes[:, :, :n] = old[0]
        self.value_codes[:, :, :n] = old[1]
        self.key_scale[:, :, :n] = old[2]
        self.value_scale[:, :, :n] = old[3]

    @property
    def nbytes(self) -> int:
        """Bytes of the coded tokens held (codes and norms of keys and values)."""
        return int(self.lengths.sum()) * self.kv_heads * self.layout.bytes_per_token


def check_kv(keys, values, batch: int, kv_heads: int, head_dim: int):
    """Validate ``(batch, kv_heads, tokens, head_dim)`` key and value blocks; return tokens."""
    if keys.shape != values.shape:
        raise ValueError(f"keys {keys.shape} and values {values.shape} must have the same shape")
    if keys.ndim != 4 or keys.shape[0] != batch or keys.shape[1] != kv_heads \
            or keys.shape[3] != head_dim:
        raise ValueError(
            f"keys/values have shape {tuple(keys.shape)}, expected "
            f"(batch={batch}, kv_heads={kv_heads}, tokens, head_dim={head_dim})"
        )
    return int(keys.shape[2])


def check_query(q, batch: int, kv_heads: int, head_dim: int) -> int:
    """Validate a ``(batch, q_heads, head_dim)`` query; return query heads per KV head."""
    if q.ndim != 3 or q.shape[0] != batch or q.shape[2] != head_dim:
        raise ValueError(
            f"query has shape {tuple(q.shape)}, expected (batch={batch}, q_heads, "
            f"head_dim={head_dim})"
        )
    if q.shape[1] % kv_heads:
        raise ValueError(
            f"q_heads={q.shape[1]} is not a multiple of kv_heads={kv_heads} "
            "(grouped-query attention maps query head j to KV head j // group)"
        )
    return q.shape[1] // kv_heads


def _n_valid(n_valid, batch: int, tokens: int) -> np.ndarray:
    if n_valid is None:
        return np.full(batch, tokens, dtype=np.int64)
    n = np.asarray(n_valid, dtype=np.int64).reshape(-1)
    if n.shape[0] != batch or np.any(n < 0) or np.any(n > tokens):
        raise ValueError(f"n_valid must hold {batch} counts in [0, {tokens}], got {n_valid!r}")
    return n


def float_attention(q, keys, values, lengths=None, scale=None) -> np.ndarray:
    """Exact decode attention ``softmax(q K^T * scale) V`` with grouped-query heads.

    Parameters
    ----------
    q : ndarray of float, shape (batch, q_heads, head_dim)
    keys, values : ndarray of float, shape (batch, kv_heads, tokens, head_dim)
    lengths : ndarray of int, shape (batch,), optional
        Valid tokens of each sequence (default: all).
    scale : float, optional
        Default ``1 / sqrt(head_dim)``.

    Returns
    -------
    ndarray of float64, shape (batch, q_heads, head_dim)
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(keys, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    b, hkv, t, d = k.shape
    g = check_query(q, b, hkv, d)
    scale = 1.0 / np.sqrt(d) if scale is None else float(scale)
    lengths = np.full(b, t) if lengths is None else np.asarray(lengths)
    qg = q.reshape(b, hkv, g, d)
    logits = np.einsum("bhgd,bhtd->bhgt", qg, k) * scale
    mask = np.arange(t)[None, :] >= lengths[:, None]  # (b, t)
    logits[mask[:, None, None, :].repeat(hkv, 1).repeat(g, 2)] = -np.inf
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.einsum("bhgt,bhtd->bhgd", p, v)
    return out.reshape(b, hkv * g, d)


class NumpyKVCache(CodedTokens):
    """KV cache of one attention layer, TurboQuant-coded, on the CPU.

    Parameters
    ----------
    batch, kv_heads, head_dim : int
        Cache geometry; ``head_dim`` is 64, 128 or 256.
    key_bits, value_bits : int
        2, 3 or 4 bits per coordinate for keys and for values.
    seed : int
        Seed of the rotations.
    norm_correction : bool
        See :class:`~tqsearch.kvcache.codec.KVLayout`.
    capacity : int
        Tokens to reserve per sequence (grows on demand).
    center_keys : bool
        Subtract a per-sequence, per-head key offset before coding: the mean
        of the keys of the sequence's first append, when that append holds at
        least ``center_min_tokens`` tokens (a prefill); otherwise zero. Real
        keys share a large common component (40-75 % of their energy in
        SmolLM2), which would otherwise take most of the code's precision.
        Attention needs no correction: ``q . offset`` is the same for every
        token of a sequence and cancels in the softmax.
    center_min_tokens : int

    Attributes
    ----------
    key_codes, value_codes : ndarray of uint8, shape (batch, kv_heads, capacity, row_bytes)
    key_scale, value_scale : ndarray of float32, shape (batch, kv_heads, capacity)
    key_offset : ndarray of float32, shape (batch, kv_heads, head_dim)
    lengths : ndarray of int64, shape (batch,)
    """

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
        super().__init__(batch, kv_heads, head_dim, key_bits, value_bits, seed=seed,
                         norm_correction=norm_correction, capacity=capacity,
                         center_keys=center_keys, center_min_tokens=center_min_tokens)

    def append(self, keys, values, n_valid=None):
        """Code and append a block of tokens to every sequence.

        Parameters
        ----------
        keys, values : ndarray of float, shape (batch, kv_heads, tokens, head_dim)
        n_valid : array of int, shape (batch,), optional
            Append only the first ``n_valid[b]`` tokens of sequence ``b``
            (sequences of different lengths); default all.
        """
        keys = np.asarray(keys)
        values = np.asarray(values)
        t = check_kv(keys, values, self.batch, self.kv_heads, self.head_dim)
        n = _n_valid(n_valid, self.batch, t)
        self._grow(int((self.lengths + n).max()))
        for b in self._first_appends(n):
            self.key_offset[b] = keys[b, :, : n[b]].astype(np.float32).mean(axis=1)
        kc, ks = self.layout.encode_keys(keys.astype(np.float32) - self.key_offset[:, :, None])
        vc, vs = self.layout.encode_values(values)
        for b in range(self.batch):
            lo, m = int(self.lengths[b]), int(n[b])
            self.key_codes[b, :, lo:lo + m] = kc[b, :, :m]
            self.value_codes[b, :, lo:lo + m] = vc[b, :, :m]
            self.key_scale[b, :, lo:lo + m] = ks[b, :, :m]
            self.value_scale[b, :, lo:lo + m] = vs[b, :, :m]
        self.lengths += n

    def _first_appends(self, n) -> list[int]:
        """Sequences whose key offset this append sets (see ``center_keys``)."""
        if not self.center_keys:
            return []
        return [b for b in range(self.batch)
                if self.lengths[b] == 0 and n[b] >= max(1, self.center_min_tokens)]

    def logits(self, q, scale=None) -> np.ndarray:
        """Attention logits from the codes, ``-inf`` past each sequence's end.

        With ``center_keys`` they omit the constant ``scale * q . key_offset``
        of each query head and sequence (softmax and rankings are unchanged).

        Parameters
        ----------
        q : ndarray of float, shape (batch, q_heads, head_dim)
        scale : float, optional
            Default ``1 / sqrt(head_dim)``.

        Returns
        -------
        ndarray of float32, shape (batch, q_heads, max_length)
        """
        q = np.asarray(q, dtype=np.float32)
        g = check_query(q, self.batch, self.kv_heads, self.head_dim)
        scale = 1.0 / np.sqrt(self.head_dim) if scale is None else float(scale)
        t = int(self.lengths.max()) if self.batch else 0
        qr = rotate(q, self.layout.key_signs).reshape(self.batch, self.kv_heads, g, -1)
        kc = self.layout.key_centroids(self.key_codes[:, :, :t])  # (b, h, t, d)
        s = np.einsum("bhgd,bhtd->bhgt", qr, kc) * self.key_scale[:, :, None, :t]
        s *= np.float32(scale)
        mask = np.arange(t)[None, :] >= self.lengths[:, None]
        s = np.where(mask[:, None, None, :], -np.inf, s).astype(np.float32)
        return s.reshape(self.batch, self.kv_heads * g, t)

    def attention(self, q, scale=None) -> np.ndarray:
        """Decode attention ``softmax(q K^T * scale) V`` computed from the codes.

        Parameters
        ----------
        q : ndarray of float, shape (batch, q_heads, head_dim)
            ``q_heads`` a multiple of ``kv_heads``; query head ``j`` reads KV
            head ``j // (q_heads // kv_heads)``.
        scale : float, optional
            Default ``1 / sqrt(head_dim)``.

        Returns
        -------
        ndarray of float32, shape (batch, q_heads, head_dim)
            Zero for an empty sequence.
        """
        s = self.logits(q, scale).astype(np.float64)
        b, hq, t = s.shape
        g = hq // self.kv_heads
        m = s.max(axis=-1, keepdims=True) if t else np.zeros((b, hq, 1))
        m = np.where(np.isfinite(m), m, 0.0)
        p = np.exp(s - m)
        den = p.sum(axis=-1, keepdims=True)
        p = p.reshape(b, self.kv_heads, g, t) * self.value_scale[:, :, None, :t]
        vc = self.layout.value_centroids(self.value_codes[:, :, :t])
        acc = np.einsum("bhgt,bhtd->bhgd", p, vc).reshape(b, hq, -1)
        acc = acc / np.where(den > 0, den, 1.0)
        return unrotate(acc.astype(np.float32), self.layout.value_signs)

    def decoded(self) -> tuple[np.ndarray, np.ndarray]:
        """Reconstructed keys and values, float32 (batch, kv_heads, max_length, head_dim)."""
        t = int(self.lengths.max())
        k = self.layout.decode_keys(self.key_codes[:, :, :t], self.key_scale[:, :, :t])
        k += self.key_offset[:, :, None]
        v = self.layout.decode_values(self.value_codes[:, :, :t], self.value_scale[:, :, :t])
        return k, v

    def state(self) -> dict:
        """Codes, scales and lengths (views), e.g. to load into a GPU cache."""
        t = int(self.lengths.max())
        return {
            "key_codes": self.key_codes[:, :, :t],
            "value_codes": self.value_codes[:, :, :t],
            "key_scale": self.key_scale[:, :, :t],
            "value_scale": self.value_scale[:, :, :t],
            "key_offset": self.key_offset.copy(),
            "lengths": self.lengths.copy(),
        }
