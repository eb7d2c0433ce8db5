"""The tile intrinsics against their NumPy twins (which stand in for them uncompiled)."""

import numpy as np
import pytest
from numba import njit

from tqsearch.codebook import lloyd_max
from tqsearch.kernels import lanes
from tqsearch.kernels.lanes import LANES


@njit(cache=True)
def _run(name_id, tile, other, matrix, vec, edges, mags, dot, sq, cells, blocked):
    if name_id == 0:
        lanes.butterfly2(tile, 1, 2)
    elif name_id == 1:
        lanes.butterfly4(tile, 2, 3)
    elif name_id == 2:
        lanes.move_row(tile, 3, other, 5, np.float32(-0.5))
    elif name_id == 3:
        lanes.matmul_rows(tile, matrix, other)
    elif name_id == 4:
        lanes.centre_rows(tile, vec, sq)
    elif name_id == 5:
        lanes.scale_lanes(tile, sq)
    elif name_id == 6:
        lanes.grid_fit(tile, sq, edges, mags, dot, sq, cells)
    elif name_id == 7:
        lanes.grid_cells(tile, sq, edges, mags, dot, sq, cells)
    elif name_id == 8:
        lanes.load_tile(tile, matrix, 2, vec)
    else:
        lanes.store_block(blocked, 1, tile[:5], other[:5], cells[:5], tile[5:10])


@pytest.mark.parametrize("name_id, name", list(enumerate(
    ["butterfly2", "butterfly4", "move_row", "matmul_rows", "centre_rows", "scale_lanes",
     "grid_fit", "grid_cells", "load_tile", "store_block"])))
@pytest.mark.parametrize("rows", [14, 50])
def test_intrinsics_equal_numpy_twins(name_id, name, rows):
    cb = lloyd_max(rows, 3)
    mags = np.ascontiguousarray(cb.centroids[4:], dtype=np.float32)
    edges = np.ascontiguousarray(cb.boundaries[4:], dtype=np.float32)

    def inputs():
        r = np.random.default_rng(rows + name_id)
        tile = (r.standard_normal((rows, LANES)) / np.sqrt(rows)).astype(np.float32)
        other = r.standard_normal((rows, LANES)).astype(np.float32)
        matrix = r.standard_normal((rows, rows)).astype(np.float32)
        vec = r.standard_normal(rows).astype(np.float32)
        scale = r.uniform(0.8, 1.3, LANES).astype(np.float32)
        nibbles = r.integers(0, 16, (3, rows, LANES)).astype(np.float32)
        if name == "store_block":
            tile, other = nibbles[0], nibbles[1]
        return [tile, other, matrix, vec, edges, mags, np.zeros(LANES, np.float32), scale,
                nibbles[2], np.zeros((3, 80), np.uint8)]

    got, want = inputs(), inputs()
    _run(name_id, *got)
    tile, other, matrix, vec, _, _, dot, sq, cells, blocked = want
    twin = lanes.NUMPY_TWINS[name]
    if name == "butterfly2":
        twin(tile, 1, 2)
    elif name == "butterfly4":
        twin(tile, 2, 3)
    elif name == "move_row":
        twin(tile, 3, other, 5, -0.5)
    elif name == "matmul_rows":
        twin(tile, matrix, other)
    elif name == "centre_rows":
        twin(tile, vec, sq)
    elif name == "scale_lanes":
        twin(tile, sq)
    elif name == "load_tile":
        twin(tile, matrix, 2, vec)
    elif name == "store_block":
        twin(blocked, 1, tile[:5], other[:5], cells[:5], tile[5:10])
    else:
        twin(tile, sq.copy(), edges, mags, dot, sq, cells)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("d, n", [(64, 100), (50, 32), (7, 75)])
def test_encoder_writes_the_fast_scan_layout_of_its_rows(bits, d, n):
    # The codes coded straight into blocks are the packed rows, laid out by pack_blocked.
    import tqsearch
    from tqsearch.kernels import fastscan

    x = np.random.default_rng(d + n).standard_normal((n, d)).astype(np.float32)
    index = tqsearch.TurboQuantIndex(d, bits, metric="l2")
    index.train(x)
    codec = index.codec
    rows = codec.encode(x).codes
    nibbles = np.stack([(rows[:, m // 2] >> (4 * (m % 2))) & 15
                        for m in range(-(-d * bits // 4))], axis=1).astype(np.uint8)
    blocked = np.full((fastscan.n_blocks(n) + 2, 16 * nibbles.shape[1]), 0xAB, np.uint8)
    batch = codec.encode(x, blocked, 1)
    assert batch.codes.shape == (n, 0)
    np.testing.assert_array_equal(blocked[1:-1], fastscan.pack_blocked(nibbles))
    assert (blocked[0] == 0xAB).all() and (blocked[-1] == 0xAB).all()
