"""Slow, paper-faithful TurboQuant in float64 NumPy, to check the fast path against.

Everything here follows the paper (arXiv 2504.19874) literally, with no
packing, lookup tables, fixed point or fast-math:

* the rotation is an explicit d x d orthogonal matrix ``R`` (taken from an
  index by rotating the identity, so both sides use the same draw);
* every rotated coordinate is quantized to its nearest centroid,
  ``argmin_c |u_j - c|``;
* QJL stores ``sign(S r)`` of the residual ``r = u - c(u)`` and ``gamma = ||r||``;
* the inner-product estimators are

  - ``"mse"``:       ``n <R q, c>``
  - ``"corrected"``: ``n <R q, c> / <u, c>``
  - ``"qjl"``:       ``n (<R q, c> + gamma sqrt(pi/2) / d <S R q, sign(S r)>)``

  and L2 distances are ``||q||^2 + n^2 - 2 est``;
* "cosine" normalises vectors and queries first; with centring (a mean ``mu``
  subtracted from vectors and queries before coding, after normalising for
  cosine) the estimate is of ``<q - mu, x - mu>`` and scores come from the
  distance identity ``||q - x||^2 = ||q - mu||^2 + ||x - mu||^2 - 2 est``
  (for cosine: ``1 - ||q - x||^2 / 2`` on unit vectors);
* top-k is an exhaustive ``np.argsort``.

Codes are plain dicts of arrays (``indices`` int64 (n, d), ``norms`` float64
(n,), ``gains`` float64 (n,), ``signs`` float64 (n, d) of +-1), so codes taken
from an index (:func:`codes_of_index`) can be scored by the reference.
"""

from __future__ import annotations

import numpy as np

from tqsearch.codebook import lloyd_max

# Per-vector factors read back from an index (see codes_of_index) are exact to
# this absolute error: fixed point storage plus float32 decoding.
FACTOR_ATOL = 3e-4


def rotation_matrix(rotation) -> np.ndarray:
    """The explicit matrix ``R`` (float64 (d, d)) of a tqsearch rotation: ``apply(x) = x @ R.T``."""
    eye = np.eye(rotation.d, dtype=np.float32)
    # row i of apply(I) is R e_i, i.e. column i of R
    return np.asarray(rotation.apply(eye), dtype=np.float64).T.copy()


def nearest_centroid(u: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid of every entry of ``u`` (ties: the lower index)."""
    u = np.asarray(u, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    return np.abs(u[..., None] - c).argmin(axis=-1)


class ReferenceTurboQuant:
    """TurboQuant_mse / corrected / prod, as written in the paper.

    Parameters
    ----------
    rotation : float64 (d, d)
        Orthogonal matrix ``R``.
    centroids : float64 (2**b,)
        Lloyd-Max centroids for unit vectors (``b`` codebook bits, may be
        empty for pure QJL: then ``c(u) = 0``).
    estimator : {"mse", "corrected", "qjl"}
    qjl_matrix : float64 (d, d), optional
        The Gaussian projection ``S`` (needed for "qjl").
    metric : {"ip", "cosine", "l2"}
    mean : float (d,), optional
        Centring mean ``mu`` (None: no centring).
    """

    def __init__(self, rotation, centroids, *, estimator="mse", qjl_matrix=None, metric="ip",
                 mean=None):
        self.R = np.asarray(rotation, dtype=np.float64)
        self.d = self.R.shape[0]
        self.centroids = np.asarray(centroids, dtype=np.float64)
        self.estimator = estimator
        self.S = None if qjl_matrix is None else np.asarray(qjl_matrix, dtype=np.float64)
        if estimator == "qjl" and self.S is None:
            raise ValueError("the qjl estimator needs the projection S")
        self.metric = metric
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)

    @classmethod
    def from_index(cls, index) -> ReferenceTurboQuant:
        """Reference sharing the index's rotation, codebook, QJL matrix and centring mean."""
        codec = index.codec
        bits = codec.index_bits
        centroids = lloyd_max(index.d, bits).centroids if bits > 0 else np.zeros(0)
        mean = codec.mean if getattr(codec, "center", False) else None
        return cls(rotation_matrix(codec.rotation), centroids, estimator=codec.estimator,
                   qjl_matrix=codec.qjl_matrix, metric=codec.metric, mean=mean)

    # -- encoding ------------------------------------------------------------
    def prepare(self, x):
        """Vectors as they are coded: normalised for cosine, minus the mean when centring."""
        x = np.asarray(x, dtype=np.float64)
        if self.metric == "cosine":
            norms = np.linalg.norm(x, axis=1)
            x = x / np.where(norms > 0, norms, 1.0)[:, None]
        if self.mean is not None:
            x = x - self.mean
        return x

    def rotate(self, x):
        """Rotated unit directions ``u = R x / ||x||`` (float64 (n, d)) and norms (n,).

        ``x`` is taken as given (see :meth:`prepare`).
        """
        x = np.asarray(x, dtype=np.float64)
        norms = np.linalg.norm(x, axis=1)
        safe = np.where(norms > 0, norms, 1.0)
        return (x / safe[:, None]) @ self.R.T, norms

    def centroid_vectors(self, indices):
        if self.centroids.size == 0:
            return np.zeros(np.shape(indices), dtype=np.float64)
        return self.centroids[indices]

    def encode_units(self, u, norms=None, scale=1.0):
        """Codes of rotated unit vectors ``u`` (float (n, d)).

        ``scale`` (scalar or (n,)) rescales ``u`` before the nearest-centroid
        step; only the "corrected" estimator is invariant to it.
        """
        u = np.asarray(u, dtype=np.float64)
        n = u.shape[0]
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
        if self.centroids.size:
            indices = nearest_centroid(u * scale[:, None], self.centroids)
        else:
            indices = np.zeros(u.shape, dtype=np.int64)
        c = self.centroid_vectors(indices)
        codes = {"indices": indices,
                 "norms": np.ones(n) if norms is None else np.asarray(norms, np.float64)}
        if self.estimator == "corrected":
            codes["gains"] = np.einsum("ij,ij->i", u, c)
        elif self.estimator == "qjl":
            r = u - c
            codes["gains"] = np.linalg.norm(r, axis=1)
            codes["signs"] = np.where(r @ self.S.T > 0, 1.0, -1.0)
        return codes

    def encode(self, x):
        u, norms = self.rotate(self.prepare(x))
        return self.encode_units(u, norms)

    def decode(self, codes):
        """``x_hat`` (float64 (n, d)) with ``<q, x_hat>`` = the estimate for every ``q``
        (``<q - mu, x_hat - mu>`` when centring)."""
        c = self.centroid_vectors(codes["indices"])
        if self.estimator == "corrected":
            g = codes["gains"]
            c = c / np.where(g > 0, g, np.inf)[:, None]
        elif self.estimator == "qjl":
            c = c + (codes["gains"] * np.sqrt(np.pi / 2) / self.d)[:, None] * (
                codes["signs"] @ self.S)
        x_hat = codes["norms"][:, None] * (c @ self.R)
        return x_hat if self.mean is None else x_hat + self.mean

    # -- scoring -------------------------------------------------------------
    def inner_products(self, q, codes):
        """Estimates of ``<q_i, x_j>``, float64 (nq, n), computed as in the paper.

        ``q`` and the coded vectors are taken as given (see :meth:`prepare`).
        """
        q = np.asarray(q, dtype=np.float64)
        y = q @ self.R.T
        c = self.centroid_vectors(codes["indices"])
        est = y @ c.T
        if self.estimator == "corrected":
            g = codes["gains"]
            est = np.where(g > 0, est / np.where(g > 0, g, 1.0), 0.0)
        elif self.estimator == "qjl":
            est = est + (codes["gains"] * np.sqrt(np.pi / 2) / self.d) * (
                (y @ self.S.T) @ codes["signs"].T)
        return est * codes["norms"]

    def scores(self, q, codes):
        """Scores as the index reports them: similarities ("ip", "cosine") or
        squared distances ("l2"), float64 (nq, n); distances are not clamped at 0."""
        q = self.prepare(q)
        est = self.inner_products(q, codes)
        if self.metric == "l2" or self.mean is not None:
            dist = (q * q).sum(1)[:, None] + codes["norms"] ** 2 - 2 * est
            return dist if self.metric == "l2" else 1.0 - dist / 2
        return est

    def search(self, q, codes, k):
        """Exhaustive top-k: D (nq, k) best first, I (nq, k) int64, -1 padded."""
        s = self.scores(q, codes)
        return topk(s, k, smaller_is_better=self.metric == "l2")


def topk(scores, k, *, smaller_is_better=False):
    """Exhaustive top-k of a score matrix with ``np.argsort`` (stable: ties -> lower id)."""
    scores = np.asarray(scores, dtype=np.float64)
    nq, n = scores.shape
    key = scores if smaller_is_better else -scores
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    D = np.take_along_axis(scores, order, axis=1)
    I = order.astype(np.int64)
    if n < k:
        pad = k - n
        fill = np.inf if smaller_is_better else -np.inf
        D = np.concatenate([D, np.full((nq, pad), fill)], axis=1)
        I = np.concatenate([I, np.full((nq, pad), -1, np.int64)], axis=1)
    return D, I


def codes_of_index(index, rows=None) -> dict:
    """The index's stored codes (or ``index.sa_encode`` rows) unpacked for the reference.

    Cell indices, QJL signs and norms are read from the documented byte
    layout. The per-vector factor (``g = <u, c>`` for "corrected", ``gamma``
    for QJL) is read back through the index's own decoder rather than from
    its fixed-point bytes, so that the check does not depend on how the
    factor is stored: ``sa_decode`` returns ``mu + n R^T (c / g)`` or
    ``mu + n R^T (c + gamma sqrt(pi/2)/d S^T s)``, which the reference
    rotation inverts.

    Parameters
    ----------
    index : tqsearch.TurboQuantIndex
    rows : uint8 (n, code_size), optional
        Code rows; default: every stored vector (``index.codes()``).
    """
    codec = index.codec
    rows = index.codes() if rows is None else rows
    batch = codec.from_bytes(rows)
    n = rows.shape[0]
    d = index.d
    indices = codec.indices(batch.codes).astype(np.int64)
    codes = {"indices": indices}
    codes["norms"] = (batch.norms.astype(np.float64) if codec.has_norms else np.ones(n))
    if codec.qjl:
        bits = np.unpackbits(batch.codes[:, codec.index_bytes:], axis=1, bitorder="little")
        codes["signs"] = bits[:, :d].astype(np.float64) * 2 - 1
    if not codec.has_gains:
        return codes
    ref = ReferenceTurboQuant.from_index(index)
    x_hat = index.sa_decode(rows).astype(np.float64)
    if ref.mean is not None:
        x_hat -= ref.mean
    norms = codes["norms"]
    live = norms > 0
    y = (x_hat @ ref.R.T) / np.where(live, norms, 1.0)[:, None]  # c / g, or c + QJL term
    c = ref.centroid_vectors(indices)
    if codec.qjl:
        w = codes["signs"] @ ref.S
        gamma = np.einsum("ij,ij->i", y - c, w) / (
            np.sqrt(np.pi / 2) / d * np.einsum("ij,ij->i", w, w))
        codes["gains"] = np.where(live, gamma, 0.0)
    else:
        inv_g = np.einsum("ij,ij->i", y, c) / np.einsum("ij,ij->i", c, c)
        g = np.divide(1.0, inv_g, out=np.zeros(n), where=inv_g > 0)
        codes["gains"] = np.where(live, g, 1.0)
    return codes


def recall_at(I, gt, k):
    """Mean of ``|I[:, :k] ∩ gt[:, :k]| / k`` over queries."""
    hits = sum(len(np.intersect1d(a[:k], b[:k])) for a, b in zip(I, gt, strict=True))
    return hits / (k * len(I))


def assert_same_results(a, b):
    """Two ``(D, I)`` search results are identical."""
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def decoded_scores(index, xq) -> np.ndarray:
    """What the index should report for every stored vector, from its reconstructions.

    float64 (nq, ntotal): ``<q, x_hat>`` ("ip", "cosine" uncentred), or with the
    distance identity ``||q' - mu||^2 + n^2 - 2 <q' - mu, x_hat - mu>`` on the
    stored norm ``n`` (squared distances for "l2", ``1 - dist / 2`` for centred
    cosine); ``q'`` is the normalised query for cosine.
    """
    x_hat = index.reconstruct_n().astype(np.float64)
    q = np.asarray(xq, dtype=np.float64)
    if index.metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if index.metric == "l2" or index.center:
        mu = index.codec.mean.astype(np.float64) if index.center else np.zeros(index.d)
        n = index.codec.from_bytes(index.codes()).norms.astype(np.float64)
        qc, xc = q - mu, x_hat - mu
        dist = (qc**2).sum(1)[:, None] + n**2 - 2 * qc @ xc.T
        return np.maximum(dist, 0) if index.metric == "l2" else 1 - dist / 2
    return q @ x_hat.T
