"""Lloyd-Max codebooks for one coordinate of a randomly rotated unit vector.

After a uniformly random rotation, each coordinate ``t`` of a unit vector in
dimension ``d`` follows the density

    p(t) = (1 - t^2)^((d - 3) / 2) / B(1/2, (d - 1) / 2),   t in [-1, 1],

which tends to N(0, 1/d) as ``d`` grows. TurboQuant codes every coordinate
with the Lloyd-Max (MSE-optimal scalar) quantizer of that law, so one
codebook per ``(d, bits)`` serves every vector and no training is needed.

The quantizer is computed numerically: the density is tabulated on a fine
grid in the angle ``phi = arcsin(t)`` (smooth even for small ``d``, where the
density has singular or heavy ends), cumulative mass and first moment are
integrated once, and Lloyd's alternation of midpoints and conditional means
runs on those tables until it no longer moves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["Codebook", "lloyd_max", "MAX_BITS"]

MAX_BITS = 8

# Grid resolution of the tabulated law; 2**17 points keep the centroids of the
# 8-bit codebook accurate to ~1e-6 of the coordinate's standard deviation.
_GRID_POINTS = 1 << 17
# The law is negligible beyond this many standard deviations (density e^-162).
_TAIL_SIGMAS = 18.0
_MAX_ITER = 20_000
_TOL = 1e-12


@dataclass(frozen=True)
class Codebook:
    """A scalar quantizer for one rotated coordinate.

    Attributes
    ----------
    d : int
        Dimension of the vectors whose coordinates are coded.
    bits : int
        Bits per coordinate; the codebook has ``2**bits`` levels.
    centroids : ndarray of float64, shape (2**bits,)
        Reconstruction levels in increasing order, for unit vectors.
    boundaries : ndarray of float64, shape (2**bits - 1,)
        Decision thresholds (midpoints of neighbouring centroids); level ``i``
        codes ``boundaries[i-1] <= t < boundaries[i]``.
    mse : float
        Expected squared error of one coordinate; ``d * mse`` is the expected
        squared error of a whole unit vector.
    """

    d: int
    bits: int
    centroids: np.ndarray
    boundaries: np.ndarray
    mse: float

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def encode(self, t: np.ndarray) -> np.ndarray:
        """Index of the cell holding each value (reference, NumPy).

        Parameters
        ----------
        t : ndarray of float
            Rotated coordinates of unit vectors, any shape.

        Returns
        -------
        ndarray of uint8 (uint16 above 8 bits), same shape as ``t``
        """
        return np.searchsorted(self.boundaries, t, side="right").astype(np.uint8)


def _tabulate(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid ``t``, cumulative mass, cumulative first moment, cumulative ``p^(1/3)``."""
    half_width = min(np.pi / 2, float(np.arcsin(min(1.0, _TAIL_SIGMAS / np.sqrt(d)))))
    phi = np.linspace(-half_width, half_width, _GRID_POINTS)
    t = np.sin(phi)
    # density in phi: p(t) dt/dphi = cos(phi)^(d-3) * cos(phi) = cos(phi)^(d-2)
    with np.errstate(divide="ignore"):
        log_w = (d - 2) * np.log(np.cos(phi))
    if d == 2:
        log_w = np.zeros_like(phi)
    w = np.exp(log_w - log_w.max())
    dphi = phi[1] - phi[0]
    mass = np.concatenate([[0.0], np.cumsum((w[1:] + w[:-1]) * 0.5 * dphi)])
    tw = t * w
    moment = np.concatenate([[0.0], np.cumsum((tw[1:] + tw[:-1]) * 0.5 * dphi)])
    total = mass[-1]
    # p(t)^(1/3) dt = (w / cos)^(1/3) cos dphi: the high-resolution optimal point density
    cube = np.cbrt(w / np.maximum(np.cos(phi), 1e-300)) * np.cos(phi)
    density = np.concatenate([[0.0], np.cumsum((cube[1:] + cube[:-1]) * 0.5 * dphi)])
    return t, mass / total, moment / total, density / density[-1]


def _second_moment(d: int) -> float:
    # E[t^2] = 1/d exactly for a coordinate of a uniform unit vector.
    return 1.0 / d


@functools.lru_cache(maxsize=64)
def lloyd_max(d: int, bits: int) -> Codebook:
    """Lloyd-Max codebook of the rotated-coordinate law, computed once per ``(d, bits)``.

    Parameters
    ----------
    d : int
        Vector dimension, ``d >= 2``.
    bits : int
        Bits per coordinate, 1 to 8.

    Returns
    -------
    Codebook
        Centroids and boundaries for unit vectors (values of order ``1/sqrt(d)``).

    Examples
    --------
    >>> cb = lloyd_max(4096, 1)
    >>> round(float(cb.centroids[1] * 64), 3)   # sqrt(2/pi) in the Gaussian limit
    0.798
    """
    d = int(d)
    bits = int(bits)
    if d < 2:
        raise ValueError(f"dimension must be at least 2, got d={d}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be between 1 and {MAX_BITS}, got bits={bits}")
    t, mass, moment, density = _tabulate(d)
    levels = 1 << bits
    # Start from the high-resolution optimum (cells of equal p^(1/3) mass): close
    # to the fixed point at every bit width, so Lloyd's slow convergence at 6-8
    # bits (hundreds of levels) is not an issue.
    edges = np.interp(np.linspace(0.0, 1.0, levels + 1)[1:-1], density, t)
    centroids = np.empty(levels)
    for _ in range(_MAX_ITER):
        cuts = np.concatenate([[t[0]], edges, [t[-1]]])
        m = np.interp(cuts, t, mass)
        mu = np.interp(cuts, t, moment)
        cell_mass = np.diff(m)
        cell_moment = np.diff(mu)
        new_centroids = cell_moment / np.maximum(cell_mass, 1e-300)
        new_edges = 0.5 * (new_centroids[1:] + new_centroids[:-1])
        shift = np.max(np.abs(new_edges - edges)) if levels > 2 else 0.0
        centroids, edges = new_centroids, new_edges
        if shift < _TOL / np.sqrt(d):
            break
    # Symmetrise: the law is even, so the quantizer is too (removes grid noise).
    centroids = 0.5 * (centroids - centroids[::-1])
    edges = 0.5 * (edges - edges[::-1])
    # Expected error: E[t^2] - sum_i mass_i * centroid_i^2 (centroid condition).
    cuts = np.concatenate([[t[0]], edges, [t[-1]]])
    cell_mass = np.diff(np.interp(cuts, t, mass))
    mse = _second_moment(d) - float(np.sum(cell_mass * centroids**2))
    centroids.setflags(write=False)
    edges.setflags(write=False)
    return Codebook(d=d, bits=bits, centroids=centroids, boundaries=edges, mse=mse)
