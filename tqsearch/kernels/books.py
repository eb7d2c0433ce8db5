"""Nibble codebooks: 16 centroids per nibble over a small group of coordinates.

The trained codec (:mod:`tqsearch.pca`) codes each nibble ``m`` of a vector
as the nearest of 16 centroids ``books[m, e]`` over the coordinates
``coords[m, :]`` of its principal-axis projection (``-1`` pads a group of
fewer than ``G`` coordinates). A query's table is then ``T[m, e] = sum_t
y[coords[m, t]] * books[m, e, t]`` (built from the codebooks transposed, (M,
G, 16)), the same (M, 16) table the fast scan of TurboQuant codes reads, so
both codecs share every scan kernel.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..config import FASTMATH

__all__ = ["book_lut", "encode_books", "kmeans_books"]


# on its own and without fast-math, as tqsearch.kernels.scan.build_field_lut
@njit(cache=True)
def book_lut(y, coords, tables, lut):
    """Fill ``lut`` (M, 16) with the inner products of ``y`` and every centroid.

    ``tables`` is the codebooks axis by axis, float32 (M, G, 16) (``books``
    transposed, so that an axis's 16 values are one contiguous row).
    """
    M, G, E = tables.shape
    for m in range(M):
        for e in range(E):
            lut[m, e] = np.float32(0.0)
        for t in range(G):
            j = coords[m, t]
            if j < 0:  # padding comes last
                break
            yj = y[j]
            for e in range(E):
                lut[m, e] += yj * tables[m, t, e]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def encode_books(z, coords, tables, scales, codes, dots):
    """Code unit vectors (in the principal basis) with the nibble codebooks.

    Each vector ``z`` is coded as the nearest centroids of ``t * z`` for the
    ``t`` of ``scales`` whose reconstruction keeps the direction of ``z`` best
    (the corrected estimator divides by ``<z, z_hat>``, so it is invariant to
    the scale of ``z_hat``). Nearest centroids come from ``<z, c>`` and
    ``||c||^2``, computed once per vector and nibble for every scale.

    Parameters
    ----------
    z : float32 (n, d)
        Unit vectors (or zero rows), projected on the principal axes.
    coords : int32 (M, G)
    tables : float32 (M, G, 16)
        The codebooks axis by axis (:func:`book_lut`).
    scales : float32 (S,)
    codes : uint8 (n, ceil(M / 2)), written
        Nibble ``m`` in the low (``m`` even) or high half of byte ``m // 2``.
    dots : float32 (n,), written
        ``<z, z_hat>`` of the chosen reconstruction.
    """
    n = z.shape[0]
    M, G, E = tables.shape
    S = scales.shape[0]
    sq = np.zeros((M, E), dtype=np.float32)
    for m in range(M):
        for t in range(G):
            for e in range(E):
                sq[m, e] += tables[m, t, e] * tables[m, t, e]
    for v in prange(n):
        proj = np.empty((M, E), dtype=np.float32)
        picks = np.empty((S, M), dtype=np.uint8)
        dot = np.zeros(S, dtype=np.float32)
        norm2 = np.zeros(S, dtype=np.float32)
        book_lut(z[v], coords, tables, proj)  # <z, c> of every centroid
        for m in range(M):
            for s in range(S):
                two_t = np.float32(2.0) * scales[s]
                best = 0
                best_cost = sq[m, 0] - two_t * proj[m, 0]
                for e in range(1, E):
                    cost = sq[m, e] - two_t * proj[m, e]
                    if cost < best_cost:
                        best_cost = cost
                        best = e
                picks[s, m] = best
                dot[s] += proj[m, best]
                norm2[s] += sq[m, best]
        chosen = 0
        best_cos = -np.inf
        for s in range(S):
            if norm2[s] > 0:
                cos = dot[s] / np.sqrt(norm2[s])
                if cos > best_cos:
                    best_cos = cos
                    chosen = s
        for i in range(codes.shape[1]):
            codes[v, i] = 0
        for m in range(M):
            codes[v, m >> 1] |= np.uint8(picks[chosen, m] << (4 * (m & 1)))
        dots[v] = dot[chosen]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def kmeans_books(samples, coords, draws, iterations, books):
    """Fit 16 centroids per nibble group by k-means (k-means++ seeding).

    Parameters
    ----------
    samples : float32 (S, d)
        Training vectors in the principal basis.
    coords : int32 (M, G)
    draws : float64 (M, 16)
        Uniform numbers in [0, 1) for the seeding, one per centroid, so that
        results depend on the seed only (not on the threads).
    iterations : int
        Lloyd iterations after seeding.
    books : float32 (M, 16, G), written
        Centroids; the entries of padding coordinates are 0.
    """
    S = samples.shape[0]
    M, E, G = books.shape
    for m in prange(M):
        g = 0
        while g < G and coords[m, g] >= 0:
            g += 1
        points = np.empty((S, g), dtype=np.float32)
        for i in range(S):
            for t in range(g):
                points[i, t] = samples[i, coords[m, t]]
        centres = np.zeros((E, g), dtype=np.float32)
        # k-means++: each next centre drawn with probability ~ squared distance
        nearest = np.full(S, np.inf, dtype=np.float64)
        pick = min(int(draws[m, 0] * S), S - 1)
        for e in range(E):
            if e > 0:
                total = 0.0
                for i in range(S):
                    total += nearest[i]
                target = draws[m, e] * total
                pick = S - 1
                running = 0.0
                for i in range(S):
                    running += nearest[i]
                    if running > target:
                        pick = i
                        break
                if total == 0.0:
                    pick = min(int(draws[m, e] * S), S - 1)
            for t in range(g):
                centres[e, t] = points[pick, t]
            for i in range(S):
                dist = 0.0
                for t in range(g):
                    diff = points[i, t] - centres[e, t]
                    dist += diff * diff
                nearest[i] = min(nearest[i], dist)
        # Lloyd iterations; distances to the 16 centres are one vector per point
        # (centres held transposed), and the loop ends once no point moves
        across = np.empty((g, E), dtype=np.float32)
        dist = np.empty(E, dtype=np.float32)
        label = np.full(S, -1, dtype=np.int64)
        sums = np.empty((E, g), dtype=np.float64)
        counts = np.empty(E, dtype=np.int64)
        for _ in range(iterations):
            for e in range(E):
                for t in range(g):
                    across[t, e] = centres[e, t]
            sums[:] = 0.0
            counts[:] = 0
            moved = 0
            for i in range(S):
                dist[:] = 0.0
                for t in range(g):
                    p = points[i, t]
                    for e in range(E):
                        diff = p - across[t, e]
                        dist[e] += diff * diff
                best = 0
                for e in range(1, E):
                    if dist[e] < dist[best]:
                        best = e
                if best != label[i]:
                    label[i] = best
                    moved += 1
                counts[best] += 1
                for t in range(g):
                    sums[best, t] += points[i, t]
            if moved == 0:
                break
            for e in range(E):
                if counts[e] > 0:  # an empty cell keeps its centre
                    for t in range(g):
                        centres[e, t] = sums[e, t] / counts[e]
        for e in range(E):
            for t in range(G):
                books[m, e, t] = centres[e, t] if t < g else 0.0
