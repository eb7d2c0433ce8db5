"""Batches of 4-bit codes scored as int8 dot products, eight queries per pass.

At 4 bits every coordinate of every vector is coded with the same 16-level
codebook, so a query's score of a vector is ``sum_j y_j c[code_j]``: a dot
product. Quantizing the rotated query to int8 weights (one scale per query) and
the codebook to int8 levels (one scale per index), a block of 32 vectors is
scored with byte shuffles shared by all queries and one ``vpdpbusd`` per query
per 4 coordinates of 16 vectors (:func:`tqsearch.kernels.simd.make_dot_filter_intrinsic`),
against per-coordinate tables and two shuffles per query in the table scan.

The integer score is turned into a rigorous upper bound of the float table sum
(``offset`` carries the largest possible quantization error over the codebook),
tested against each query's top-k threshold in registers, and the rows that pass
are re-scored exactly from the float table, as in
:mod:`tqsearch.kernels.blocked_scan`: results equal a float scan's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..config import FASTMATH
from .fastscan import DOT_AVAILABLE
from .scan import build_field_lut
from .tables16 import level_errors

__all__ = ["DOT_AVAILABLE", "QUERIES_PER_PASS", "dot_levels", "prepare_dot"]

#: Queries scored together per pass over a block.
QUERIES_PER_PASS = 8


@njit(inline="always", fastmath=FASTMATH)
def dot_levels(centroids):
    """The codebook as int8 levels plus 128 (uint8 (16,)) and their scale."""
    top = 0.0
    for c in centroids:
        top = max(top, abs(np.float64(c)))
    scale = top / 127.0 if top > 0 else 1.0
    levels = np.empty(16, dtype=np.uint8)
    for e in range(16):
        levels[e] = np.uint8(np.int64(np.round(np.float64(centroids[e]) / scale)) + 128)
    return levels, scale


@njit(inline="always", fastmath=FASTMATH)
def prepare_dot(y, centroids, levels, level_scale, luts, weights, biases, q, params, bounds):
    """Float table, int8 weights and filter parameters of one query.

    Writes ``luts[q]`` (the exact float table, for re-scoring 3-bit codes; where
    ``luts`` has no rows, as for 4-bit codes, none is built), ``weights[q]``
    (int8, the first ``M`` of its row; the rest stay zero), ``biases[q] = 128 *
    sum(weights[q])`` and ``params[3 q : 3 q + 2] = (offset, scale)`` such that
    ``offset + scale * S`` bounds the float table sum from above for the integer
    score ``S``; ``bounds[q] = (-err, err, scale)`` in float64: the sum lies in
    ``scale * S + [-err, err]``.
    """
    M = y.shape[0]  # coordinates: one sub-code each
    if luts.shape[0] > 0:
        build_field_lut(y, centroids, 4, luts[q])
    top = 0.0
    for m in range(M):
        top = max(top, abs(np.float64(y[m])))
    w_scale = top / 127.0 if top > 0 else 1.0
    scale = w_scale * level_scale
    total = 0
    steps = np.empty(M, dtype=np.float64)  # scale * weight: a level's step
    for m in range(M):
        w = np.int64(np.round(np.float64(y[m]) / w_scale))
        weights[q, m] = np.int8(w)
        total += w
        steps[m] = scale * np.float64(w)
    # the largest error of each coordinate over the codebook (lut[m, e] == y[m] * centroids[e])
    level_values = np.empty(16, dtype=np.float64)
    for e in range(16):
        level_values[e] = np.float64(np.int64(levels[e]) - 128)
    worst = np.empty(M, dtype=np.float64)
    level_errors(y[:M], centroids, steps, level_values, worst)
    err = 0.0
    for m in range(M):
        err += worst[m]
    biases[q] = np.int32(128 * total)
    # float32 rounding of the exact sums and of the filter's own arithmetic, with margin
    err = err * 1.0001 + 1e-6 * scale * 127.0 * 127.0 * M
    params[3 * q] = np.float32(err)
    params[3 * q + 1] = np.float32(scale)
    bounds[q, 0] = -err
    bounds[q, 1] = err
    bounds[q, 2] = scale
