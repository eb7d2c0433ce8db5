"""TurboQuant codec: vectors <-> packed codes plus per-vector factors.

Encoding a vector ``x`` (float32, dimension d):

1. ``n = ||x||`` and ``u = R x / n``: a unit vector whose coordinates follow
   the rotated-coordinate law (:mod:`tqsearch.codebook`).
2. Each coordinate of ``u`` is replaced by the index of its Lloyd-Max cell,
   ``b`` bits, packed (:mod:`tqsearch.kernels.encode`); ``c(u)`` is the vector
   of centroids.
3. Per-vector factors, by estimator:

   ``"mse"`` (TurboQuant_mse, the paper's): none beyond the norm;
   ``<q, x> ~ n <R q, c(u)>``.

   ``"corrected"`` (default): ``g = <u, c(u)>``, stored as ``1 / g`` in uint16
   fixed point (so scans multiply, never divide); ``<q, x> ~ n <R q, c(u)> / g``.
   Exact when ``q`` is parallel to ``x`` and most accurate for the near
   neighbours that decide a ranking (the per-vector correction of RaBitQ and
   EDEN, here on Lloyd-Max codes); costs 2 bytes.

   ``qjl=True`` (TurboQuant_prod): ``b - 1`` bits of indices, then one sign bit
   per coordinate of ``S r`` with ``r = u - c(u)`` and ``S`` a seeded Gaussian
   matrix, and ``gamma = ||r||``; ``<q, x> ~ n (<R q, c(u)> + gamma sqrt(pi/2)/d
   <S R q, sign(S r)>)``, unbiased.

   The norm ``n`` is stored as float32 for the "ip" and "l2" metrics; "cosine"
   normalises vectors, so it stores none.

4. Centering (``center=True``, "l2" and "cosine" only): a mean ``mu`` is
   subtracted first, ``x - mu`` is coded as above, and its norm stored. The
   index then ranks by the distance identity ``||q - x||^2 = ||q - mu||^2 +
   ||x - mu||^2 - 2 <q - mu, x - mu>`` with the query centred too: the
   estimate's error scales with the part of ``q - mu`` orthogonal to
   ``x - mu``, which is small for the near neighbours that decide a ranking
   (RaBitQ's centroid trick). For cosine the identity runs on normalised
   vectors.

Byte layout of one code (``sa_encode``): index bytes ``ceil(d * b' / 8)``
(``b' = b - qjl``), sign bytes ``ceil(d / 8)`` if qjl, then the norm (4 bytes,
little-endian float32) if stored, then the gain (2 bytes, little-endian uint16)
if the estimator has one.
"""

from __future__ import annotations

import numpy as np

from .codebook import lloyd_max
from .kernels.books import encode_books
from .kernels.encode import (
    column_sums,
    encode_rows,
    pack_signs,
    prepare_rows,
    row_norms,
    unpack_indices,
)
from .kernels.scan import GAIN_ONE, MODE_CORRECTED, MODE_MSE, MODE_QJL
from .pca import PcaCodebook, fit_pca_codebook, training_rows
from .rotation import DenseRotation, Rotation, make_rotation, multiply_rows

__all__ = ["TurboQuantCodec", "PcaCodec", "make_codec", "ESTIMATORS", "METRICS"]

METRICS = ("ip", "cosine", "l2")
ESTIMATORS = ("corrected", "mse", "pca")

# Candidate rescalings of the codebook per vector (corrected estimator). The
# best scale is rarely outside [0.8, 1.3] (it grows with the bit width: the
# MSE-optimal grid is wider than the direction-optimal one); a finer or wider
# grid moved recall@10 by less than its sampling noise on real embeddings.
SCALE_SEARCH = np.array([0.8, 0.9, 1.0, 1.15, 1.3], dtype=np.float32)


_NO_BLOCKS = np.empty((0, 0), dtype=np.uint8)
_NO_TABLES = (np.empty((0, 1), dtype=np.int32), np.empty((0, 1, 16), dtype=np.float32))
_NO_MEAN = np.empty(0, dtype=np.float32)


class EncodedBatch:
    """Codes of a batch of vectors, split into the arrays the index stores.

    Attributes
    ----------
    codes : uint8 (n, code_bytes)
    norms : float32 (n,) or (0,)
    gains : uint16 (n,) or (0,)
    """

    __slots__ = ("codes", "norms", "gains")

    def __init__(self, codes, norms, gains):
        self.codes = codes
        self.norms = norms
        self.gains = gains


class TurboQuantCodec:
    """Rotation + Lloyd-Max codebook (+ QJL projection) for one index.

    Parameters
    ----------
    d : int
    bits : int
        Total bits per coordinate (1 to 8), QJL bit included.
    metric : {"ip", "cosine", "l2"}
    qjl : bool
    rotation : Rotation
    estimator : {"corrected", "mse"}
        Ignored when ``qjl`` is set (QJL has its own unbiased estimator).
    qjl_matrix : float32 (d, d), optional
        The QJL projection ``S`` (drawn from ``seed`` when omitted).
    seed : int
    center : bool
        Code ``x - mean`` (see the module docstring); the mean is set by
        :meth:`fit_mean` before the first vectors are coded.
    """

    def __init__(self, d, bits, metric, qjl, rotation: Rotation, estimator="corrected",
                 qjl_matrix=None, seed=0, center=False):
        self.d = d
        self.bits = bits
        self.metric = metric
        self.qjl = qjl
        self.estimator = "qjl" if qjl else estimator
        self.rotation = rotation
        self.index_bits = bits - 1 if qjl else bits
        if self.index_bits > 0:
            cb = lloyd_max(d, self.index_bits)
            self.centroids = cb.centroids.astype(np.float32)
            self.boundaries = cb.boundaries.astype(np.float32)
        else:
            self.centroids = np.zeros(1, dtype=np.float32)
            self.boundaries = np.zeros(0, dtype=np.float32)
        if qjl and qjl_matrix is None:
            # offset the stream so S is independent of the rotation's draw
            rng = np.random.default_rng([seed, 0x514A4C])
            qjl_matrix = rng.standard_normal((d, d))
        self.qjl_matrix = (
            np.ascontiguousarray(qjl_matrix, dtype=np.float32) if qjl else None
        )
        self.index_bytes = (d * self.index_bits + 7) // 8
        self.sign_bytes = (d + 7) // 8 if qjl else 0
        self.code_bytes = self.index_bytes + self.sign_bytes
        self.center = bool(center)
        self.mean = np.zeros(d, dtype=np.float32) if self.center else None
        # "distance form": rank by 2 n s - n^2 (l2, and centred cosine)
        self.distance_form = metric == "l2" or self.center
        self.has_norms = metric != "cosine" or self.center
        self.has_gains = self.estimator != "mse"
        # The corrected estimator is invariant to the scale of c(u), so each
        # vector may pick the rescaled grid that best keeps its direction.
        self.scales = SCALE_SEARCH if self.estimator == "corrected" else np.ones(1, np.float32)

    @classmethod
    def create(cls, d, bits, metric, qjl, rotation, estimator, seed, center=False):
        return cls(d, bits, metric, qjl, make_rotation(rotation, d, seed), estimator, seed=seed,
                   center=center)

    @property
    def needs_training(self) -> bool:
        """Whether codes depend on a sample (:meth:`fit`): the centring mean."""
        return self.center

    def fit(self, x: np.ndarray) -> None:
        """Learn what the codes depend on from float32 (n, d) vectors: the centring mean."""
        if self.center:
            self.fit_mean(x)

    @property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Nibble codebooks for the scan kernels' tables: none (they come from
        ``centroids``), as empty stand-ins; see :attr:`PcaCodec.tables`."""
        return _NO_TABLES

    def fit_mean(self, x: np.ndarray) -> None:
        """Set the centering mean from float32 (n, d) vectors (normalised first for cosine)."""
        sums = np.empty(self.d, dtype=np.float64)
        column_sums(x, self.metric == "cosine", sums)
        self.mean = (sums / x.shape[0]).astype(np.float32)

    def _centred(self, x: np.ndarray) -> np.ndarray:
        """Vectors as the codes see them: normalised for cosine, minus the mean if centring."""
        if self.metric == "cosine":
            x, _ = self.normalize(x)
        if self.center:
            x = x - self.mean
        return np.ascontiguousarray(x, dtype=np.float32)

    # -- sizes ---------------------------------------------------------------
    @property
    def code_size(self) -> int:
        """Bytes stored per vector: codes, norm and gain."""
        return self.code_bytes + 4 * self.has_norms + 2 * self.has_gains

    @property
    def magnitudes(self) -> np.ndarray:
        """Positive centroids, float32 (2**(b'-1),): the codebook is symmetric."""
        return np.ascontiguousarray(self.centroids[len(self.centroids) // 2:])

    @property
    def edges(self) -> np.ndarray:
        """Positive decision boundaries, float32 (2**(b'-1) - 1,)."""
        return np.ascontiguousarray(self.boundaries[len(self.centroids) // 2:])

    @property
    def mode(self) -> int:
        return {"mse": MODE_MSE, "corrected": MODE_CORRECTED, "qjl": MODE_QJL}[self.estimator]

    # -- encoding ------------------------------------------------------------
    def normalize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split rows into norms and unit directions (zero rows stay zero)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        norms = np.empty(x.shape[0], dtype=np.float32)
        row_norms(x, norms)
        safe = np.where(norms > 0, norms, np.float32(1.0))
        return x / safe[:, None], norms

    def rotated_units(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the quantizer codes: ``u = R x' / ||x'||`` (float32 (n, d)) and ``||x'||`` (n,).

        ``x'`` is ``x`` normalised (cosine) and minus the mean (centring).
        """
        unit, norms = self.normalize(self._centred(x))
        return self.rotation.apply(unit), norms

    def encode(self, x: np.ndarray, blocked: np.ndarray | None = None,
               first_block: int = 0) -> EncodedBatch:
        """Code float32 (n, d) vectors (already validated).

        With ``blocked`` (the fast-scan layout of an index's store, 1, 2 or 4
        bits without QJL), the codes are written straight into its blocks
        ``first_block ..`` and the batch returned has no code bytes.
        """
        n = x.shape[0]
        # the mean is subtracted after the rotation, as R mean (the rotation is linear)
        shift = (self.rotation.apply(self.mean[None, :])[0] if self.center
                 else np.empty(0, dtype=np.float32))
        if blocked is None:
            codes = np.empty((n, self.code_bytes), dtype=np.uint8)
            blocked = _NO_BLOCKS
        else:
            codes = np.empty((n, 0), dtype=np.uint8)
        norms = np.empty(n, dtype=np.float32)
        dots = np.empty(n, dtype=np.float32)
        residual = np.empty((n, self.d) if self.qjl else (0, 0), dtype=np.float32)
        encode_rows(x, self.metric == "cosine", shift, *self.rotation.kernel_args(), self.edges,
                    self.magnitudes, self.index_bits, self.scales, codes, blocked, first_block,
                    norms, dots, residual)
        if self.qjl:
            projected = multiply_rows(residual, self.qjl_matrix)
            pack_signs(projected, codes, self.index_bytes)
            gains = _to_fixed(np.linalg.norm(residual, axis=1))
        elif self.has_gains:
            gains = _to_fixed(np.divide(1.0, dots, out=np.zeros_like(dots), where=dots > 0))
        else:
            gains = np.empty(0, dtype=np.uint16)
        if not self.has_norms:
            norms = np.empty(0, dtype=np.float32)
        return EncodedBatch(codes, norms, gains)

    def indices(self, codes: np.ndarray) -> np.ndarray:
        """Cell indices, uint8 (n, d), of packed codes."""
        out = np.empty((codes.shape[0], self.d), dtype=np.uint8)
        if self.index_bits > 0:
            unpack_indices(np.ascontiguousarray(codes), self.d, self.index_bits, out)
        else:
            out[:] = 0
        return out

    def decode(self, batch: EncodedBatch) -> np.ndarray:
        """Reconstructions ``x_hat`` (float32 (n, d)) whose inner products are the estimates.

        For every estimator ``<q, x_hat>`` (``<q - mu, x_hat - mu>`` when
        centring) equals the inner-product estimate the index ranks with, so
        reconstructions and search agree. For "mse" this is the paper's
        ``n R^T c(u)``.
        """
        c = self.centroids[self.indices(batch.codes)] if self.index_bits > 0 else None
        n = batch.codes.shape[0]
        if c is None:
            c = np.zeros((n, self.d), dtype=np.float32)
        if self.qjl:
            signs = _unpack_signs(batch.codes[:, self.index_bytes:], self.d)
            gamma = batch.gains.astype(np.float32) / np.float32(GAIN_ONE)
            scale = gamma * np.float32(np.sqrt(np.pi / 2) / self.d)
            c = c + (signs @ self.qjl_matrix) * scale[:, None]
        elif self.has_gains:
            c = c * (batch.gains.astype(np.float32) / np.float32(GAIN_ONE))[:, None]
        return self._unrotate(c, batch)

    def _unrotate(self, c: np.ndarray, batch: EncodedBatch) -> np.ndarray:
        """``x_hat`` from its rotated, gain-scaled direction ``c`` (float (n, d))."""
        x = self.rotation.inverse(np.ascontiguousarray(c, dtype=np.float32))
        if self.has_norms:
            x *= batch.norms[:, None]
        if self.center:
            x += self.mean
            if self.metric == "cosine":
                x[batch.norms < 0] = 0  # zero vectors (flagged by a negative norm)
        return x

    # -- queries -------------------------------------------------------------
    def prepare_queries(self, xq: np.ndarray):
        """Rotated queries (and QJL projections) for the scan kernels.

        Returns
        -------
        y : float32 (nq, d)
        y_sign : float32 (nq, d) or (nq, 0)
        sq_norms : float32 (nq,)
            ``||q - mu||^2`` (``mu = 0`` without centring); in the distance
            form, ``||q - x||^2 = sq_norms - similarity``.
        """
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        centred = np.empty_like(xq)
        sq_norms = np.empty(xq.shape[0], dtype=np.float32)
        prepare_rows(xq, self.metric == "cosine", self.mean if self.center else _NO_MEAN,
                     centred, sq_norms)
        y = self.rotation.apply_queries(centred)
        if self.qjl:
            y_sign = multiply_rows(y, self.qjl_matrix)
        else:
            y_sign = np.empty((y.shape[0], 0), dtype=np.float32)
        return y, y_sign, sq_norms

    # -- row-major byte view ---------------------------------------------------
    def to_bytes(self, batch: EncodedBatch) -> np.ndarray:
        """Concatenate codes and factors into uint8 (n, code_size) rows."""
        parts = [batch.codes]
        if self.has_norms:
            parts.append(batch.norms.astype("<f4").view(np.uint8).reshape(-1, 4))
        if self.has_gains:
            parts.append(batch.gains.astype("<u2").view(np.uint8).reshape(-1, 2))
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    def from_bytes(self, rows: np.ndarray) -> EncodedBatch:
        """Inverse of :meth:`to_bytes`."""
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        codes = np.ascontiguousarray(rows[:, : self.code_bytes])
        at = self.code_bytes
        norms = np.empty(0, dtype=np.float32)
        gains = np.empty(0, dtype=np.uint16)
        if self.has_norms:
            norms = np.ascontiguousarray(rows[:, at:at + 4]).view("<f4").ravel().astype(np.float32)
            at += 4
        if self.has_gains:
            gains = np.ascontiguousarray(rows[:, at:at + 2]).view("<u2").ravel().astype(np.uint16)
        return EncodedBatch(codes, norms, gains)


class PcaCodec(TurboQuantCodec):
    """Trained codec: principal axes and nibble codebooks (``estimator="pca"``).

    Vectors are normalised and centred as for TurboQuant; the unit vector
    ``u`` is projected on principal axes learnt from a sample (the codec's
    rotation is that basis, a :class:`DenseRotation`) and coded nibble by
    nibble with the codebooks of :mod:`tqsearch.pca`, each nibble the nearest
    of 16 centroids over a group of axes. Per vector it keeps the norm and the
    corrected estimator's gain ``1 / <u, u_hat>`` (with the per-vector scale
    search of the corrected estimator), so scores are ``n <R q, u_hat> / <u,
    u_hat>`` like TurboQuant's, at the same bytes per vector.

    ``bits`` is the average over coordinates (1 to 4); the codec must be
    trained (:meth:`fit`) before it codes anything.
    """

    def __init__(self, d, bits, metric, seed=0, center=False,
                 codebook: PcaCodebook | None = None):
        super().__init__(d, bits, metric, False, DenseRotation(d, matrix=np.eye(d)),
                         "corrected", seed=seed, center=center)
        self.estimator = "pca"
        self.seed = seed
        self.nibbles = -(-d * bits // 4)
        self.codebook = None
        if codebook is not None:
            self.set_codebook(codebook)

    @property
    def mode(self) -> int:
        return MODE_CORRECTED

    @property
    def trained(self) -> bool:
        return self.codebook is not None

    @property
    def needs_training(self) -> bool:
        return True

    def set_codebook(self, codebook: PcaCodebook) -> None:
        """Adopt trained axes and codebooks (checked against ``d`` and ``bits``)."""
        d, m = self.d, self.nibbles
        if (codebook.basis.shape != (d, d) or codebook.coords.ndim != 2
                or codebook.coords.shape[0] != m
                or codebook.books.shape != (m, 16, codebook.coords.shape[1])):
            raise ValueError(f"PCA codebook shapes {codebook.basis.shape}, "
                             f"{codebook.coords.shape}, {codebook.books.shape} do not fit "
                             f"d={d}, {m} nibbles")
        coords = np.ascontiguousarray(codebook.coords, dtype=np.int32)
        if coords.min() < -1 or coords.max() >= d:
            raise ValueError("PCA codebook refers to axes outside 0..d-1")
        self.codebook = PcaCodebook(np.ascontiguousarray(codebook.basis, dtype=np.float32),
                                    coords,
                                    np.ascontiguousarray(codebook.books, dtype=np.float32))
        # the scan's and the encoder's layout: an axis's 16 centroid values contiguous
        self._tables = np.ascontiguousarray(self.codebook.books.transpose(0, 2, 1))
        self.rotation = DenseRotation(d, matrix=self.codebook.basis)

    def fit(self, x: np.ndarray) -> None:
        """Learn the mean (when centring), axes and codebooks from float32 (n, d) vectors."""
        super().fit(x)
        units, _ = self.normalize(self._centred(x[training_rows(x.shape[0], self.seed)]))
        self.set_codebook(fit_pca_codebook(units, self.bits, self.seed))

    @property
    def books(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coords, books)``: axes per nibble, int32 (M, G), and centroids,
        float32 (M, 16, G)."""
        return self.codebook.coords, self.codebook.books

    @property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coords, books transposed)``, float32 (M, G, 16): what the kernels read
        (:func:`tqsearch.kernels.books.book_lut`); empty stand-ins before training."""
        if self.codebook is None:
            return _NO_TABLES
        return self.codebook.coords, self._tables

    def encode(self, x: np.ndarray, blocked: np.ndarray | None = None,
               first_block: int = 0) -> EncodedBatch:
        """Code float32 (n, d) vectors as packed nibble rows (``blocked`` is not used)."""
        units, norms = self.normalize(self._centred(x))
        if self.center and self.metric == "cosine":
            zero = ~x.any(axis=1)
            norms[zero] = -norms[zero]  # no direction: flagged as TurboQuant's codes are
        projected = self.rotation.apply(units)
        n = x.shape[0]
        codes = np.empty((n, self.code_bytes), dtype=np.uint8)
        dots = np.empty(n, dtype=np.float32)
        encode_books(projected, *self.tables, self.scales, codes, dots)
        gains = _to_fixed(np.divide(1.0, dots, out=np.zeros_like(dots), where=dots > 0))
        if not self.has_norms:
            norms = np.empty(0, dtype=np.float32)
        return EncodedBatch(codes, norms, gains)

    def indices(self, codes: np.ndarray) -> np.ndarray:
        """Centroid numbers, uint8 (n, M), of packed nibble rows."""
        codes = np.ascontiguousarray(codes)
        nib = np.empty((codes.shape[0], 2 * codes.shape[1]), dtype=np.uint8)
        nib[:, 0::2] = codes & 15
        nib[:, 1::2] = codes >> 4
        return nib[:, :self.nibbles]

    def decode(self, batch: EncodedBatch) -> np.ndarray:
        """Reconstructions float32 (n, d); ``<q, x_hat>`` is the estimate (see the parent)."""
        coords, books = self.books
        picks = self.indices(batch.codes)
        c = np.zeros((picks.shape[0], self.d), dtype=np.float32)
        for t in range(coords.shape[1]):
            live = coords[:, t] >= 0
            axes = coords[live, t]
            c[:, axes] += books[np.flatnonzero(live), picks[:, live], t]
        c *= (batch.gains.astype(np.float32) / np.float32(GAIN_ONE))[:, None]
        return self._unrotate(c, batch)


def make_codec(d, bits, metric, qjl, rotation, estimator, seed, center=False):
    """The codec of an index's parameters (``estimator="pca"`` ignores ``rotation``)."""
    if estimator == "pca":
        return PcaCodec(d, bits, metric, seed=seed, center=center)
    return TurboQuantCodec.create(d, bits, metric, qjl, rotation, estimator, seed, center)


def _to_fixed(values: np.ndarray) -> np.ndarray:
    """Non-negative factors in [0, 4) as uint16 in units of 2**-14 (larger ones saturate)."""
    scaled = np.rint(np.clip(values, 0.0, None) * GAIN_ONE)
    return np.minimum(scaled, 65535).astype(np.uint16)


def _unpack_signs(sign_codes: np.ndarray, d: int) -> np.ndarray:
    bits = np.unpackbits(sign_codes, axis=1, bitorder="little")[:, :d]
    return bits.astype(np.float32) * 2 - 1
