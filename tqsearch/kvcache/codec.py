"""TurboQuant coding of attention keys and values (NumPy reference).

Every cached token row ``x`` (one key or one value of one KV head, ``head_dim``
coordinates) is stored as

* its norm ``n = ||x||`` (float32; with ``norm_correction`` the stored scale is
  ``n / ||c||`` so that the decoded row has exactly the input's norm), and
* ``bits`` per coordinate: the Lloyd-Max code of each coordinate of the
  rotated unit vector ``y = R x / n``, where ``R`` is a seeded randomized
  Hadamard rotation ``R x = H (s * x) / sqrt(d)`` (``s`` random signs, ``H``
  the Sylvester-ordered Walsh-Hadamard matrix, ``d`` a power of two).

Decoding gives ``x_hat = scale * R^T c[codes]``. Attention never decodes keys:
``q . x_hat = scale * (R q) . c[codes]``, so the query is rotated once; values
are summed in the rotated domain and the sum is rotated back once.

Packed layout
-------------
The codes of one row are bit-packed little-endian (code ``i`` of the stream
occupies bits ``[i*bits, (i+1)*bits)``), so a row takes exactly
``head_dim * bits / 8`` bytes (3-bit codes really take 3/8 byte). The stream
order of the coordinates is a fixed permutation chosen so that each GPU lane
reads its tensor-core operand fragment as one contiguous chunk:

* keys: ``head_dim / 4``-code chunks, chunk ``c`` (0..3) holding, for each
  16-coordinate tile ``k``, coordinates ``16k + 2c, 16k + 2c + 1, 16k + 2c + 8,
  16k + 2c + 9``;
* values: ``head_dim / 8``-code chunks, chunk ``g`` (0..7) holding, for each
  tile ``k``, coordinates ``16k + g, 16k + g + 8``.

Consecutive pairs of codes form one ``2 * bits``-bit field that a lookup
table turns into two half-precision centroids. The layout is the canonical
format: the GPU kernels write and read exactly these bytes.
"""

from __future__ import annotations

import functools

import numpy as np

from ..codebook import lloyd_max

__all__ = [
    "KVLayout",
    "hadamard_signs",
    "rotate",
    "unrotate",
    "fwht",
    "key_stream_order",
    "value_stream_order",
    "pack_codes",
    "unpack_codes",
    "HEAD_DIMS",
    "BITS",
]

HEAD_DIMS = (64, 128, 256)
BITS = (2, 3, 4)


def _check_head_dim(head_dim: int) -> int:
    head_dim = int(head_dim)
    if head_dim not in HEAD_DIMS:
        raise ValueError(
            f"head_dim={head_dim} is not supported: use one of {HEAD_DIMS} "
            "(a power of two, so the Hadamard rotation needs no padding)"
        )
    return head_dim


def _check_bits(bits: int, what: str) -> int:
    bits = int(bits)
    if bits not in BITS:
        raise ValueError(f"{what}={bits} is not supported: use one of {BITS}")
    return bits


def hadamard_signs(head_dim: int, seed: int) -> np.ndarray:
    """Random +-1 signs of the randomized Hadamard rotation.

    Returns
    -------
    ndarray of float32, shape (head_dim,)
    """
    rng = np.random.default_rng(seed)
    return np.where(rng.random(head_dim) < 0.5, -1.0, 1.0).astype(np.float32)


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard transform along the last axis (Sylvester order).

    Butterflies run with strides 1, 2, 4, ... exactly as in the GPU kernels, so
    float32 inputs give bit-identical float32 outputs.

    Parameters
    ----------
    x : ndarray of float, shape (..., d), d a power of two

    Returns
    -------
    ndarray, same shape and dtype
    """
    y = np.array(x, copy=True)
    d = y.shape[-1]
    lead = y.shape[:-1]
    h = 1
    while h < d:
        v = y.reshape(*lead, d // (2 * h), 2, h)
        a = v[..., 0, :].copy()
        b = v[..., 1, :]
        v[..., 0, :] = a + b
        v[..., 1, :] = a - b
        h *= 2
    return y


def rotate(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``R x = H (s * x) / sqrt(d)`` along the last axis (float32)."""
    d = x.shape[-1]
    y = fwht(np.asarray(x, dtype=np.float32) * signs)
    return y * np.float32(1.0 / np.sqrt(d))


def unrotate(y: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``R^T y = s * H y / sqrt(d)`` along the last axis (float32)."""
    d = y.shape[-1]
    return fwht(np.asarray(y, dtype=np.float32)) * np.float32(1.0 / np.sqrt(d)) * signs


@functools.cache
def key_stream_order(head_dim: int) -> np.ndarray:
    """Coordinate stored at each position of a key row's code stream.

    Returns
    -------
    ndarray of int64, shape (head_dim,), a permutation of ``range(head_dim)``
    """
    order = [
        16 * k + 2 * c + (r & 1) + 8 * (r >> 1)
        for c in range(4)
        for k in range(head_dim // 16)
        for r in range(4)
    ]
    out = np.array(order, dtype=np.int64)
    out.setflags(write=False)
    return out


@functools.cache
def value_stream_order(head_dim: int) -> np.ndarray:
    """Coordinate stored at each position of a value row's code stream.

    Returns
    -------
    ndarray of int64, shape (head_dim,), a permutation of ``range(head_dim)``
    """
    order = [16 * k + g + 8 * r for g in range(8) for k in range(head_dim // 16) for r in range(2)]
    out = np.array(order, dtype=np.int64)
    out.setflags(write=False)
    return out


def pack_codes(codes: np.ndarray, bits: int, order: np.ndarray) -> np.ndarray:
    """Bit-pack codes in stream order.

    Parameters
    ----------
    codes : ndarray of uint8, shape (..., d), values < 2**bits, coordinate order
    bits : int
    order : ndarray of int64, shape (d,), coordinate of each stream position

    Returns
    -------
    ndarray of uint8, shape (..., d * bits // 8)
    """
    codes = np.asarray(codes, dtype=np.uint8)
    d = codes.shape[-1]
    stream = codes[..., order]
    shifts = np.arange(bits, dtype=np.uint8)
    bitplanes = (stream[..., None] >> shifts) & 1  # (..., d, bits), little-endian
    flat = bitplanes.reshape(*codes.shape[:-1], d * bits)
    return np.packbits(flat, axis=-1, bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, order: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_codes`.

    Parameters
    ----------
    packed : ndarray of uint8, shape (..., d * bits // 8)
    bits : int
    order : ndarray of int64, shape (d,)

    Returns
    -------
    ndarray of uint8, shape (..., d), coordinate order
    """
    packed = np.asarray(packed, dtype=np.uint8)
    d = order.shape[0]
    flat = np.unpackbits(packed, axis=-1, bitorder="little")
    bitplanes = flat.reshape(*packed.shape[:-1], d, bits)
    weights = (1 << np.arange(bits)).astype(np.uint8)
    stream = (bitplanes * weights).sum(axis=-1).astype(np.uint8)
    codes = np.empty_like(stream)
    codes[..., order] = stream
    return codes


class KVLayout:
    """Rotation, codebooks and byte layout shared by the NumPy and GPU caches.

    Parameters
    ----------
    head_dim : int
        64, 128 or 256.
    key_bits, value_bits : int
        Bits per coordinate of keys and of values (2, 3 or 4 each).
    seed : int
        Seed of the random signs. Keys use ``seed``, values ``seed + 1``.
    norm_correction : bool
        Store ``||x|| / ||c||`` instead of ``||x||`` so decoded rows keep the
        input's norm exactly (the codebook alone shrinks them by ``~sqrt(1 -
        d * mse)``).
    """

    def __init__(
        self,
        head_dim: int,
        key_bits: int = 4,
        value_bits: int = 4,
        *,
        seed: int = 0,
        norm_correction: bool = True,
    ):
        self.head_dim = _check_head_dim(head_dim)
        self.key_bits = _check_bits(key_bits, "key_bits")
        self.value_bits = _check_bits(value_bits, "value_bits")
        self.seed = int(seed)
        self.norm_correction = bool(norm_correction)
        self.key_signs = hadamard_signs(self.head_dim, self.seed)
        self.value_signs = hadamard_signs(self.head_dim, self.seed + 1)
        self.key_codebook = lloyd_max(self.head_dim, self.key_bits)
        self.value_codebook = lloyd_max(self.head_dim, self.value_bits)
        self.key_order = key_stream_order(self.head_dim)
        self.value_order = value_stream_order(self.head_dim)

    # sizes -----------------------------------------------------------------
    @property
    def key_row_bytes(self) -> int:
        """Packed bytes of one key row (norm excluded)."""
        return self.head_dim * self.key_bits // 8

    @property
    def value_row_bytes(self) -> int:
        """Packed bytes of one value row (norm excluded)."""
        return self.head_dim * self.value_bits // 8

    @property
    def bytes_per_token(self) -> int:
        """Bytes of one token of one KV head: key and value codes plus two float32 norms."""
        return self.key_row_bytes + self.value_row_bytes + 8

    def __repr__(self) -> str:
        return (
            f"KVLayout(head_dim={self.head_dim}, key_bits={self.key_bits}, "
            f"value_bits={self.value_bits}, seed={self.seed}, "
            f"norm_correction={self.norm_correction})"
        )

    # coding ----------------------------------------------------------------
    def _encode(self, x, signs, codebook, order, bits):
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"last axis has {x.shape[-1]} coordinates, expected {self.head_dim}")
        norm = np.sqrt(np.sum(x * x, axis=-1, dtype=np.float32))
        y = rotate(x, signs)
        safe = np.where(norm > 0, norm, np.float32(1.0))
        u = y / safe[..., None]
        bnd = codebook.boundaries.astype(np.float32)
        codes = np.searchsorted(bnd, u, side="right").astype(np.uint8)
        if self.norm_correction:
            cent = codebook.centroids.astype(np.float32)
            cnorm = np.sqrt(np.sum(cent[codes] ** 2, axis=-1, dtype=np.float32))
            scale = np.where(cnorm > 0, norm / np.where(cnorm > 0, cnorm, 1), 0)
        else:
            scale = norm
        return pack_codes(codes, bits, order), scale.astype(np.float32)

    def encode_keys(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Code key rows.

        Parameters
        ----------
        x : ndarray of float, shape (..., head_dim)

        Returns
        -------
        packed : ndarray of uint8, shape (..., key_row_bytes)
        scale : ndarray of float32, shape (...)
        """
        return self._encode(x, self.key_signs, self.key_codebook, self.key_order, self.key_bits)

    def encode_values(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Code value rows; same shapes as :meth:`encode_keys` with ``value_row_bytes``."""
        return self._encode(
            x, self.value_signs, self.value_codebook, self.value_order, self.value_bits
        )

    def key_centroids(self, packed: np.ndarray) -> np.ndarray:
        """Rotated-domain unit-scale key rows ``c[codes]``, float32 (..., head_dim)."""
        codes = unpack_codes(packed, self.key_bits, self.key_order)
        return self.key_codebook.centroids.astype(np.float32)[codes]

    def value_centroids(self, packed: np.ndarray) -> np.ndarray:
        """Rotated-domain unit-scale value rows ``c[codes]``, float32 (..., head_dim)."""
        codes = unpack_codes(packed, self.value_bits, self.value_order)
        return self.value_codebook.centroids.astype(np.float32)[codes]

    def decode_keys(self, packed: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Reconstructed key rows, float32 (..., head_dim)."""
        return unrotate(self.key_centroids(packed) * scale[..., None], self.key_signs)

    def decode_values(self, packed: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Reconstructed value rows, float32 (..., head_dim)."""
        return unrotate(self.value_centroids(packed) * scale[..., None], self.value_signs)
