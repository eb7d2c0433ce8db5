"""Training of the PCA codec: principal axes, bits per axis, nibble codebooks.

TurboQuant's random rotation gives every coordinate the same variance, so
equal bits per coordinate is the best it can do and correlations between
coordinates are left unused. Real embeddings and descriptors are far from
isotropic: a few directions carry most of the variance. The trained codec
(``estimator="pca"``) spends the same bits differently:

1. Rotate onto the principal axes of a sample of the (centred, normalised)
   vectors: coordinates are decorrelated and ordered by variance ``lam_i``.
2. Give each axis ``0 .. 4`` bits, greedily where a bit lowers the expected
   squared error most (``lam_i * D(b)``, ``D`` the Gaussian Lloyd-Max
   distortion; the classic reverse water-filling). Low-variance axes get no
   bits at all. Axes of equal bits are then mixed by a seeded random rotation
   among themselves (same allocation, equal variances).
3. Pack the axes into nibbles of exactly 4 bits (an axis of 4 bits alone, 3
   + 1, 2 + 2, 2 + 1 + 1, 1 + 1 + 1 + 1) and fit 16 centroids per nibble by
   k-means over its axes: a small vector quantizer per nibble.

A nibble is still one 16-entry table per query, so the codes are scanned by
the same fast-scan kernels as TurboQuant's, at the same bytes per vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.books import kmeans_books

__all__ = ["PcaCodebook", "allocate_bits", "pack_groups", "fit_pca_codebook", "training_rows"]

MAX_AXIS_BITS = 4
# Expected squared error of a unit-variance Gaussian under the b-bit Lloyd-Max
# quantizer, b = 0..4 (a model for the allocation only; the codebooks are fitted).
_GAUSS_MSE = np.array([1.0, 0.3634, 0.1175, 0.03454, 0.009497])
# Rows used for the principal axes; rows of those for the k-means (16 centroids
# need few points: recall@10 moved by less than its noise between 4,096 and
# 20,000 rows), and its Lloyd iterations.
TRAIN_ROWS = 20_000
KMEANS_ROWS = 4096
KMEANS_ITERATIONS = 16


@dataclass
class PcaCodebook:
    """What the trained codec needs beside the mean.

    Attributes
    ----------
    basis : float32 (d, d)
        Principal axes as rows (mixed among the axes of equal bits): ``z = basis @ u``.
    coords : int32 (M, G)
        Axes coded by nibble ``m`` (``-1`` pads).
    books : float32 (M, 16, G)
        Centroids of nibble ``m`` over its axes.
    """

    basis: np.ndarray
    coords: np.ndarray
    books: np.ndarray


def allocate_bits(variances: np.ndarray, total_bits: int) -> np.ndarray:
    """Bits per axis, 0 to 4, summing to ``total_bits``, that can fill whole nibbles.

    Parameters
    ----------
    variances : float (d,)
    total_bits : int
        A multiple of 4, at most ``4 * d``.

    Returns
    -------
    bits : int64 (d,)
    """
    lam = np.maximum(np.asarray(variances, dtype=np.float64), 0.0)
    d = lam.shape[0]
    bits = np.zeros(d, dtype=np.int64)
    for _ in range(total_bits):
        gain = lam * (_GAUSS_MSE[bits] - _GAUSS_MSE[np.minimum(bits + 1, MAX_AXIS_BITS)])
        gain[bits >= MAX_AXIS_BITS] = -1.0
        bits[int(np.argmax(gain))] += 1
    # Whole nibbles need a 1-bit axis beside every 3-bit one: trade the least
    # useful third bit for the most useful first bit until there are enough
    # (or, when every axis has bits, turn two 3-bit axes into a 4 and a 2).
    while np.count_nonzero(bits == 1) < np.count_nonzero(bits == 3):
        threes = np.flatnonzero(bits == 3)
        bits[threes[np.argmin(lam[threes])]] = 2
        zeros = np.flatnonzero(bits == 0)
        if zeros.size:
            bits[zeros[np.argmax(lam[zeros])]] = 1
        else:  # the counts of 1s and 3s have the same parity, so another 3 remains
            threes = np.flatnonzero(bits == 3)
            bits[threes[np.argmax(lam[threes])]] = 4
    return bits


def pack_groups(bits: np.ndarray) -> np.ndarray:
    """Axes per nibble: first-fit of the axes, most bits first, into nibbles of 4 bits.

    Parameters
    ----------
    bits : int (d,)
        From :func:`allocate_bits` (so every nibble is filled exactly).

    Returns
    -------
    coords : int32 (M, G)
        Axes of each nibble in decreasing order of bits, ``-1`` padded;
        ``G`` is the largest group.
    """
    groups, room = [], []
    for axis in np.argsort(-bits, kind="stable"):
        width = int(bits[axis])
        if width == 0:
            continue
        for g, free in enumerate(room):
            if free >= width:
                groups[g].append(int(axis))
                room[g] -= width
                break
        else:
            groups.append([int(axis)])
            room.append(4 - width)
    G = max((len(g) for g in groups), default=1)
    coords = np.full((len(groups), G), -1, dtype=np.int32)
    for m, group in enumerate(groups):
        coords[m, :len(group)] = group
    return coords


def training_rows(n: int, seed: int) -> np.ndarray:
    """Sorted rows of ``n`` the codec trains on: all, or ``TRAIN_ROWS`` drawn from ``seed``."""
    if n <= TRAIN_ROWS:
        return np.arange(n)
    rng = np.random.default_rng([seed, 0x524F5753])
    return np.sort(rng.choice(n, TRAIN_ROWS, replace=False))


def fit_pca_codebook(units: np.ndarray, bits: int, seed: int) -> PcaCodebook:
    """Principal axes, bit allocation and nibble codebooks of a training sample.

    Parameters
    ----------
    units : float32 (n, d)
        Training vectors as the codec sees them: centred and normalised (zero
        rows are allowed and ignored by nothing but the k-means weights).
    bits : int
        Average bits per coordinate, 1 to 4; ``ceil(d * bits / 4)`` nibbles.
    seed : int
        Seeds the choice of training rows and the k-means seeding.

    Returns
    -------
    PcaCodebook
    """
    n, d = units.shape
    rng = np.random.default_rng([seed, 0x504341])
    rows = training_rows(n, seed)
    sample = np.ascontiguousarray(units[rows], dtype=np.float64)
    second_moment = sample.T @ sample / max(len(rows), 1)
    variances, axes = np.linalg.eigh(second_moment)
    order = np.argsort(variances)[::-1]
    variances = np.maximum(variances[order], 0.0)
    basis = np.ascontiguousarray(axes[:, order].T, dtype=np.float32)
    nibbles = -(-d * bits // 4)
    alloc = allocate_bits(variances, 4 * nibbles)
    # Axes of equal bits are mixed by a random rotation among themselves: the
    # allocation and expected error are unchanged, but their variances become
    # equal, which narrows the widest query tables (a finer quantized table for
    # the scan's filter) and makes each coordinate's law closer to Gaussian.
    for width in range(1, MAX_AXIS_BITS + 1):
        axes = np.flatnonzero(alloc == width)
        if len(axes) > 1:
            q, r = np.linalg.qr(rng.standard_normal((len(axes), len(axes))))
            q *= np.sign(np.diag(r))
            basis[axes] = (q @ basis[axes].astype(np.float64)).astype(np.float32)
    coords = pack_groups(alloc)
    if coords.shape[0] != nibbles:  # allocate_bits guarantees whole nibbles
        raise AssertionError(f"packed {coords.shape[0]} nibbles, expected {nibbles}")
    projected = np.ascontiguousarray(sample.astype(np.float32) @ basis.T)
    books = np.zeros((nibbles, 16, coords.shape[1]), dtype=np.float32)
    draws = rng.random((nibbles, 16))
    subset = np.sort(rng.permutation(len(projected))[:KMEANS_ROWS])
    kmeans_books(np.ascontiguousarray(projected[subset]), coords, draws, KMEANS_ITERATIONS,
                 books)
    return PcaCodebook(basis, coords, books)
