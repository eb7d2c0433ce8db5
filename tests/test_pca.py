"""The trained PCA codec: bit allocation, k-means and encoding kernels against NumPy,
search against its own reconstructions, persistence, determinism, recall."""

from __future__ import annotations

import numpy as np
import pytest
from reference import decoded_scores, recall_at

import tqsearch
from tqsearch import TurboQuantIndex, merge_results
from tqsearch.codec import SCALE_SEARCH
from tqsearch.kernels.books import encode_books, kmeans_books
from tqsearch.pca import allocate_bits, pack_groups


def build(x, bits=2, **kwargs):
    index = TurboQuantIndex(x.shape[1], bits, estimator="pca", **kwargs)
    index.add(x)
    return index


# -- allocation and packing ----------------------------------------------------------

@pytest.mark.parametrize("d", [2, 3, 5, 17, 50, 128])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_allocation_fills_whole_nibbles(d, bits):
    rng = np.random.default_rng([d, bits])
    nibbles = -(-d * bits // 4)
    for variances in (np.ones(d), rng.gamma(0.5, size=d), np.sort(rng.random(d))[::-1] ** 4):
        alloc = allocate_bits(variances, 4 * nibbles)
        assert alloc.sum() == 4 * nibbles and alloc.min() >= 0 and alloc.max() <= 4
        coords = pack_groups(alloc)
        assert coords.shape[0] == nibbles
        used = coords[coords >= 0]
        assert len(set(used.tolist())) == len(used)  # an axis is in one nibble
        assert set(used.tolist()) == set(np.flatnonzero(alloc).tolist())
        for row in coords:
            assert alloc[row[row >= 0]].sum() == 4  # every nibble exactly full


def test_allocation_follows_the_variance():
    # reverse water-filling: an axis never gets fewer bits than a smaller one,
    # and axes far below the others get none
    variances = np.concatenate([np.geomspace(100, 1, 32), np.full(32, 1e-6)])
    alloc = allocate_bits(variances, 64)
    assert np.all(np.diff(alloc) <= 0)
    assert alloc[0] == 4 and np.all(alloc[32:] == 0)


# -- kernels against NumPy -------------------------------------------------------------

def _kmeans_reference(points, draws, iterations, k=16):
    """k-means++ seeded by ``draws`` then Lloyd iterations, as documented by the kernel."""
    points = points.astype(np.float64)
    S = len(points)
    nearest = np.full(S, np.inf)
    centres = np.zeros((k, points.shape[1]))
    for e in range(k):
        if e == 0:
            pick = min(int(draws[0] * S), S - 1)
        else:
            cum = np.cumsum(nearest)
            pick = int(np.searchsorted(cum, draws[e] * cum[-1], side="right"))
            pick = min(pick, S - 1)
        centres[e] = points[pick]
        nearest = np.minimum(nearest, ((points - centres[e]) ** 2).sum(1))
    for _ in range(iterations):
        label = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for e in range(k):
            if np.any(label == e):
                centres[e] = points[label == e].mean(0)
    return centres


def test_kmeans_kernel_matches_reference():
    rng = np.random.default_rng(5)
    d = 7
    samples = (rng.standard_normal((500, d)) * np.linspace(2, 0.5, d)).astype(np.float32)
    coords = np.array([[0, -1, -1], [1, 2, -1], [3, 4, 5]], dtype=np.int32)
    draws = rng.random((3, 16))
    books = np.zeros((3, 16, 3), dtype=np.float32)
    kmeans_books(samples, coords, draws, 8, books)
    for m, row in enumerate(coords):
        axes = row[row >= 0]
        expected = _kmeans_reference(samples[:, axes], draws[m], 8)
        np.testing.assert_allclose(books[m, :, :len(axes)], expected, rtol=1e-4, atol=1e-5)
        assert np.all(books[m, :, len(axes):] == 0)


def test_encode_kernel_matches_reference():
    rng = np.random.default_rng(6)
    n, d = 200, 9
    z = rng.standard_normal((n, d)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    z[3] = 0  # a zero row codes as something, with <z, z_hat> = 0
    coords = np.array([[0, -1], [1, 2], [3, 4], [5, 6], [7, 8]], dtype=np.int32)
    books = (rng.standard_normal((5, 16, 2)) * 0.3).astype(np.float32)
    books[0, :, 1] = 0
    codes = np.empty((n, 3), dtype=np.uint8)
    dots = np.empty(n, dtype=np.float32)
    encode_books(z, coords, np.ascontiguousarray(books.transpose(0, 2, 1)), SCALE_SEARCH,
                 codes, dots)

    full = np.zeros((5, 16, d))  # centroids as d-vectors
    for m, row in enumerate(coords):
        for t, j in enumerate(row):
            if j >= 0:
                full[m, :, j] = books[m, :, t]
    best_cos = np.full(n, -np.inf)
    want = np.zeros((n, 5), dtype=np.int64)
    for s in SCALE_SEARCH:
        picks = np.stack([((s * z[:, None, :] - full[m][None]) ** 2).sum(-1).argmin(1)
                          for m in range(5)], axis=1)
        z_hat = sum(full[m][picks[:, m]] for m in range(5))
        cos = (z * z_hat).sum(1) / np.linalg.norm(z_hat, axis=1)
        better = cos > best_cos + 1e-6
        want[better], best_cos[better] = picks[better], cos[better]
    got = np.stack([(codes[:, m // 2] >> (4 * (m % 2))) & 15 for m in range(5)], axis=1)
    assert np.all(codes[:, 2] >> 4 == 0)  # the unused half byte stays 0
    np.testing.assert_array_equal(got, want)
    z_hat = sum(full[m][got[:, m]] for m in range(5))
    np.testing.assert_allclose(dots, (z * z_hat).sum(1), atol=1e-5)
    assert dots[3] == 0


# -- the index ---------------------------------------------------------------------------

@pytest.mark.parametrize("metric, center", [("ip", False), ("cosine", True), ("l2", True),
                                            ("l2", False)])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("engine", ["best", "shuffle"])
def test_search_scores_are_decoded_inner_products(synthetic, monkeypatch, metric, center, bits,
                                                  engine):
    # the scan scores exactly the reconstructions, with the distance identity on the
    # stored norm where the index uses it; d = 37 leaves half a byte of padding. Both
    # the CPU's best scan engine and the byte shuffles every SIMD variant has.
    if engine == "shuffle":
        from tqsearch.kernels.blocked_scan import ENGINE_SHUFFLE
        monkeypatch.setattr("tqsearch.index.scan_engine", lambda bits, books: ENGINE_SHUFFLE)
        # stores regroup steps only for the VNNI engines
        monkeypatch.setattr("tqsearch.kernels.fastscan.VECTOR_STEPS", False)
    ds = synthetic(d=37, nb=400, nq=6)
    index = build(ds.xb, bits=bits, metric=metric, center=center, seed=3)
    assert index.code_size == -(-37 * bits // 8) + 4 * (metric != "cosine" or center) + 2
    D, I = index.search(ds.xq, 400)
    expected = decoded_scores(index, ds.xq)
    got = np.take_along_axis(expected, I, 1)
    np.testing.assert_allclose(D, got, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # and every vector is found once, best first
    assert sorted(I[0].tolist()) == list(range(400))
    key = -D if metric != "l2" else D
    assert np.all(np.diff(key, axis=1) >= -1e-6 * np.abs(D).max())


def test_single_queries_and_batches_agree(synthetic):
    ds = synthetic(d=64, nb=2000, nq=40)
    index = build(ds.xb, bits=2, metric="l2")
    D, I = index.search(ds.xq, 10)
    for i in range(0, 40, 7):
        d1, i1 = index.search(ds.xq[i:i + 1], 10, n_threads=1)
        np.testing.assert_array_equal(i1[0], I[i])
        np.testing.assert_allclose(d1[0], D[i], rtol=1e-5)


def test_pca_recalls_more_than_turboquant_on_anisotropic_data(synthetic):
    ds = synthetic(d=64, nb=4000, nq=100)
    gt = ds.ground_truth(10, "l2")
    for bits in (2, 3):
        ours = recall_at(build(ds.xb, bits=bits, metric="l2").search(ds.xq, 10)[1], gt, 10)
        plain = TurboQuantIndex(64, bits, metric="l2")
        plain.add(ds.xb)
        base = recall_at(plain.search(ds.xq, 10)[1], gt, 10)
        assert ours > base + 0.02, (bits, ours, base)


def test_recall_on_shipped_sample(sample_dataset):
    ds = sample_dataset
    base = TurboQuantIndex(ds.d, 2, metric="cosine")
    base.add(ds.train)
    plain = recall_at(base.search(ds.test, 10)[1], ds.neighbors, 10)
    ours = recall_at(build(ds.train, bits=2, metric="cosine").search(ds.test, 10)[1],
                     ds.neighbors, 10)
    assert ours >= plain, (ours, plain)


def test_same_seed_same_codes(synthetic):
    ds = synthetic(d=40, nb=500, nq=1)
    a, b = build(ds.xb, seed=7), build(ds.xb, seed=7)
    np.testing.assert_array_equal(a.codes(), b.codes())
    c = build(ds.xb, seed=8)  # other training rows / k-means seeding
    assert not np.array_equal(a.codec.books[1], c.codec.books[1])


def test_train_then_add_in_chunks_equals_one_batch(synthetic):
    ds = synthetic(d=40, nb=700, nq=5)
    whole = build(ds.xb, bits=3, metric="l2")
    parts = TurboQuantIndex(40, 3, estimator="pca", metric="l2")
    parts.train(ds.xb)
    for lo in (0, 13, 300):
        parts.add(ds.xb[lo:{0: 13, 13: 300, 300: 700}[lo]])
    np.testing.assert_array_equal(whole.codes(), parts.codes())


def test_shards_trained_alike_merge(synthetic):
    ds = synthetic(d=32, nb=600, nq=8)
    whole = TurboQuantIndex(32, 2, estimator="pca", metric="cosine")
    whole.train(ds.xb)
    whole.add(ds.xb)
    shards = []
    for lo, hi in ((0, 250), (250, 600)):
        shard = TurboQuantIndex(32, 2, estimator="pca", metric="cosine")
        shard.train(ds.xb)  # the same sample: the same mean, axes and codebooks
        shard.add(ds.xb[lo:hi])
        D, I = shard.search(ds.xq, 5)
        shards.append((D, np.where(I >= 0, I + lo, -1)))
    D, I = merge_results(shards, 5)
    Dw, Iw = whole.search(ds.xq, 5)
    np.testing.assert_array_equal(I, Iw)
    np.testing.assert_allclose(D, Dw, rtol=1e-5)


def test_save_and_load(tmp_path, synthetic):
    ds = synthetic(d=24, nb=300, nq=4)
    index = build(ds.xb, bits=3, metric="l2")
    path = tmp_path / "pca.tq"
    tqsearch.write_index(index, path)
    again = tqsearch.read_index(path)
    assert again.estimator == "pca" and again.code_size == index.code_size
    for a, b in zip(index.search(ds.xq, 7), again.search(ds.xq, 7), strict=True):
        np.testing.assert_array_equal(a, b)
    again.add(ds.xq)  # the loaded codebook codes new vectors as the old one would
    np.testing.assert_array_equal(again.codes()[300:], index.sa_encode(ds.xq))


def test_untrained_file_round_trip(tmp_path):
    index = TurboQuantIndex(16, 2, estimator="pca")
    tqsearch.write_index(index, tmp_path / "empty.tq")
    again = tqsearch.read_index(tmp_path / "empty.tq")
    assert not again.is_trained and again.ntotal == 0


def test_few_training_vectors(synthetic):
    # fewer rows than centroids: duplicate centroids, still a working index
    x = synthetic(d=12, nb=5, nq=1).xb
    index = build(x, bits=2, metric="l2")
    D, I = index.search(x, 1)
    assert I.shape == (5, 1) and np.all(I >= 0)


def test_bad_parameters_and_order():
    with pytest.raises(ValueError, match="1 to 4 bits"):
        TurboQuantIndex(16, 5, estimator="pca")
    with pytest.raises(ValueError, match="without QJL"):
        TurboQuantIndex(16, 3, estimator="pca", qjl=True)
    index = TurboQuantIndex(16, 2, estimator="pca")
    with pytest.raises(ValueError, match="train"):
        index.sa_encode(np.ones((2, 16), np.float32))
    index.add(np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32))
    with pytest.raises(ValueError, match="before add"):
        index.train(np.ones((2, 16), np.float32))


def test_threads_do_not_change_codes_or_results(synthetic):
    ds = synthetic(d=48, nb=1500, nq=30)
    one = TurboQuantIndex(48, 2, estimator="pca", metric="l2")
    one.set_threads(1)
    one.add(ds.xb)
    many = build(ds.xb, bits=2, metric="l2")
    np.testing.assert_array_equal(one.codes(), many.codes())
    np.testing.assert_array_equal(one.search(ds.xq, 5)[1], many.search(ds.xq, 5)[1])


def test_memory_before_and_after_training(synthetic):
    # an untrained index holds no codebook yet (and says so without failing);
    # training brings the axes and the books, adding the codes
    ds = synthetic(d=37, nb=500, nq=1)
    index = TurboQuantIndex(37, 2, metric="l2", estimator="pca")
    assert 0 < index.nbytes < 37 * 37 * 4 * 3
    index.add(ds.xb)
    codebook = index.codec.codebook
    learned = codebook.basis.nbytes + codebook.books.nbytes
    assert index.nbytes >= learned + index.ntotal * index.code_size


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_long_codes_search_decoded_inner_products(synthetic, metric):
    # 384 nibbles: the scan holds the rows that pass and re-scores the best at the end
    from tqsearch.kernels.blocked_scan import DEFER_SUB_CODES

    ds = synthetic(d=384, nb=1500, nq=5)
    index = build(ds.xb, bits=4, metric=metric, seed=1)
    assert index._store.nibbles >= DEFER_SUB_CODES
    D, I = index.search(ds.xq, 50)
    expected = decoded_scores(index, ds.xq)
    np.testing.assert_allclose(D, np.take_along_axis(expected, I, 1), rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    key = -expected if metric != "l2" else expected
    best = np.sort(key, axis=1)[:, :50]
    found = -D if metric != "l2" else D
    np.testing.assert_allclose(found, best, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
