"""Work split of decode attention over persistent blocks (no GPU needed)."""

from __future__ import annotations

import numpy as np

__all__ = ["plan_splits", "TILE"]

TILE = 32  # tokens per warp iteration of tq_attend

# Cost model of the split planner (microseconds); see plan_splits.
_T_TOKEN_US = 1.65 / (12 * 32)  # one token on one multiprocessor when all of them are busy
_T_ITEM_US = 8.0         # fixed cost of a work item (query rotation, first tiles, block merge)
_T_MERGE_US = 1.0        # one round trip of the final merge per 16 splits (MB in the kernel)
_BW_BYTES_PER_US = 4.0e6  # sustained read bandwidth used to bound large problems


def plan_splits(batch: int, kv_heads: int, max_len: int, blocks: int, warps: int,
                bytes_per_token: int, partial_bytes: int,
                tile: int = TILE) -> tuple[int, int]:
    """Choose the number of splits per sequence and the tokens per split.

    A work item (one split of one sequence and KV head) runs on one block of
    ``warps`` warps, which take its tiles in turn; items are spread
    round-robin over ``blocks`` persistent blocks (one multiprocessor each).
    The planner minimises a small cost model: rounds of items times the time
    of one item (its tiles per warp, rounded up, plus a fixed cost), bounded
    below by the bytes to read at full bandwidth (cache plus the partial
    results written and merged), plus the final merge's latency.

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
    rounds = -(-items // max(1, blocks))
    per_item = -(-c_tiles // warps) * warps * tile * _T_TOKEN_US + _T_ITEM_US
    nbytes = batch * kv_heads * max_len * bytes_per_token + 2 * items * partial_bytes
    merge = np.where(s > 1, _T_MERGE_US * -(-s // 16), 0.0)
    cost = np.maximum(rounds * per_item, nbytes / _BW_BYTES_PER_US) + merge
    i = int(np.argmin(cost))
    return int(s[i]), int(c_tiles[i]) * tile
