"""Work split of decode attention over persistent warps (no GPU needed)."""

from __future__ import annotations

import numpy as np

__all__ = ["plan_splits", "TILE"]

TILE = 32  # tokens per warp iteration of tq_attend

# Cost model of the split planner (microseconds); see plan_splits.
_T_ITER_US = 1.5         # one tile of one warp when the memory system is not saturated
_T_ITEM_US = 2.0         # fixed cost of a work item (query rotation, first tile, partials)
_T_MERGE_US = 1.0        # one round trip of the merge kernel per 64 splits
_BW_BYTES_PER_US = 4.0e6  # sustained read bandwidth used to bound large problems


def plan_splits(batch: int, kv_heads: int, max_len: int, warps_total: int,
                bytes_per_token: int, partial_bytes: int, tile: int = TILE) -> tuple[int, int]:
    """Choose the number of splits per sequence and the tokens per split.

    Minimises a small cost model: the longest chain of work items one warp
    runs (items are spread round-robin over ``warps_total`` persistent warps),
    bounded below by the bytes to read at full bandwidth (cache plus the
    partial results written and merged), plus the merge's latency.

    Returns
    -------
    splits, tokens_per_split : int
        ``tokens_per_split`` is a multiple of ``tile``.
    """
    if max_len <= 0:
        return 1, tile
    tiles = -(-max_len // tile)
    s = np.arange(1, tiles + 1, dtype=np.int64)
    c_tiles = -(-tiles // s)
    s = -(-tiles // c_tiles)  # fewest splits giving that split length
    items = batch * kv_heads * s
    chain = -(-items // warps_total) * (c_tiles * _T_ITER_US + _T_ITEM_US)
    nbytes = batch * kv_heads * max_len * bytes_per_token + 2 * items * partial_bytes
    cost = np.maximum(chain, nbytes / _BW_BYTES_PER_US) + _T_MERGE_US * (-(-s // 64))
    i = int(np.argmin(cost))
    return int(s[i]), int(c_tiles[i]) * tile


