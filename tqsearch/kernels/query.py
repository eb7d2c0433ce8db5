"""A few queries in one compiled call: prepare, rotate, scan, sort.

Run as separate calls, the search of a single query spends ~20 us in Python
between its kernels (allocations, argument tuples, five dispatches, the thread
pool's set-up), about a sixth of a scan of 100,000 codes. :func:`search_few`
runs the same kernels, in the same order on the same arguments, inside one
call, so its results are those of the separate calls exactly; a query's codes
split into ranges scanned on several threads (``n_chunks > 1``) go through the
threaded scan from inside the call.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..results import _finalize
from .blocked_scan import scan_blocked_topk, scan_blocked_topk_serial
from .encode import prepare_rows
from .rotate import project_rows_serial, rotate_rows_serial

__all__ = ["search_few"]


@njit(cache=True)
def search_few(x, unit, mean, pre, matrix, signs, factors, perms, offsets, block, columns,
               blocked, start, stop, n_chunks, filter_norms, filter_gains, form, fc_max, norms,
               gains, centroids, bits, coords, books, mode, distance_form, tile_blocks, engine,
               result_form, zero_scores_zero, out_s, out_i):
    """Best ``k`` stored vectors of each row of ``x`` in the blocked layout, sorted.

    Returns False, without scanning, when a query's squared norm is not finite
    (NaN or infinite coordinates), True otherwise.

    Parameters
    ----------
    x : float32 (nq, d)
        Validated queries.
    unit : bool
        Normalise them first (cosine).
    mean : float32 (d,) or (0,)
        Centring mean.
    pre, matrix, signs, factors, perms, offsets, block
        The forward rotation (:meth:`tqsearch.rotation.Rotation.kernel_args`).
    columns : float32 (d, d) or (0, 0)
        A dense rotation's matrix transposed: queries are then rotated one
        matrix-vector product each (:func:`.rotate.project_rows`).
    blocked, start, stop, n_chunks, filter_norms, filter_gains, form, fc_max, norms,
    gains, centroids, bits, coords, books, mode, distance_form, tile_blocks, engine
        As for :func:`.blocked_scan.scan_blocked_topk`; with ``n_chunks`` 1 the
        scan runs on this thread (queries in groups), otherwise each query's
        ranges are scanned on the thread pool as it is set.
    result_form : int
        How similarities become scores (``tqsearch.results.FORM_*``).
    zero_scores_zero : bool
        A query of zeros scores 0 with every vector found (cosine in a centred
        index: it has no direction).
    out_s : float32 (nq, k), written
    out_i : int64 (nq, k), written
        Sorted results, padded with label -1.
    """
    nq, d = x.shape
    k = out_s.shape[1]
    centred = np.empty((nq, d), dtype=np.float32)
    sq_norms = np.empty(nq, dtype=np.float32)
    prepare_rows(x, unit, mean, centred, sq_norms)
    for q in range(nq):
        if not np.isfinite(sq_norms[q]):
            return False
    y = np.empty((nq, d), dtype=np.float32)
    if columns.shape[0] > 0:
        project_rows_serial(centred, columns, y)
    else:
        rotate_rows_serial(centred, pre, matrix, signs, factors, perms, offsets, block, False, y)
    heap_s = np.empty((nq, n_chunks, k), dtype=np.float32)
    heap_i = np.empty((nq, n_chunks, k), dtype=np.int64)
    if n_chunks == 1:
        scan_blocked_topk_serial(blocked, start, stop, filter_norms, filter_gains, form,
                                 fc_max, norms, gains, y, centroids, bits, coords, books, mode,
                                 distance_form, 1, nq >= 2, tile_blocks, engine, heap_s, heap_i)
    else:
        scan_blocked_topk(blocked, start, stop, filter_norms, filter_gains, form, fc_max, norms,
                          gains, y, centroids, bits, coords, books, mode, distance_form,
                          n_chunks, False, tile_blocks, engine, heap_s, heap_i)
    _finalize(heap_s.reshape(nq, n_chunks * k), heap_i.reshape(nq, n_chunks * k), sq_norms,
              result_form, out_s, out_i)
    if zero_scores_zero:
        for q in range(nq):
            if not np.any(x[q] != 0):
                for j in range(k):
                    if out_i[q, j] >= 0:
                        out_s[q, j] = np.float32(0.0)
    return True
