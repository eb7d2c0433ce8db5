"""TurboQuantIndex through its public API: search against the NumPy reference, metric
semantics, shards, reconstruction, threads, determinism, edge cases, rerank, recall."""

from __future__ import annotations

import numpy as np
import pytest
from reference import (
    ReferenceTurboQuant,
    assert_same_results,
    codes_of_index,
    decoded_scores,
    recall_at,
    topk,
)

import tqsearch
from tqsearch import TurboQuantIndex, merge_results


def build(ds_or_x, d=None, bits=4, **kwargs):
    x = getattr(ds_or_x, "xb", ds_or_x)
    index = TurboQuantIndex(d or x.shape[1], bits, **kwargs)
    index.add(x)
    return index


def assert_matches_reference(index, xq, k):
    """Search results equal the reference's exhaustive top-k of the index's own codes.

    Scores agree to float32 rounding; ids agree except where the reference
    itself has near-ties at the k-th place.
    """
    D, I = index.search(xq, k)
    ref = ReferenceTurboQuant.from_index(index)
    S = ref.scores(xq, codes_of_index(index))
    l2 = index.metric == "l2"
    if l2 or ref.mean is not None:
        # scores come from ||q'||^2 + n^2 - 2 est: rounding scales with those terms
        scale = (ref.prepare(xq) ** 2).sum(1) + (codes_of_index(index)["norms"] ** 2).max()
    else:
        scale = np.abs(S).max(1)
    tol = 1e-4 * scale[:, None] + 1e-6
    n = S.shape[1]
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (len(xq), k)
    valid = I >= 0
    assert valid.sum(1).tolist() == [min(k, n)] * len(xq)
    got = np.take_along_axis(S, np.where(valid, I, 0), 1)
    # the index reports a negative estimated distance as 0 (ranking uses the estimate)
    reported = np.maximum(got, 0) if l2 else got
    err = np.abs(np.where(valid, D - reported, 0))
    assert np.all(err <= tol), f"scores differ from the reference by up to {err.max():.3g}"
    # best first
    step = np.diff(np.where(valid, D, -np.inf if not l2 else np.inf), axis=1)[:, : min(k, n) - 1]
    assert np.all(step >= 0) if l2 else np.all(step <= 0)
    for row in I:
        ids = row[row >= 0]
        assert len(set(ids.tolist())) == len(ids)
    Dref, Iref = topk(S, k, smaller_is_better=l2)
    kth = Dref[:, min(k, n) - 1:min(k, n)]
    worse = got > kth + tol if l2 else got < kth - tol
    assert not (worse & valid).any(), "a returned id scores clearly below the k-th best"
    for q in range(len(xq)):
        missing = np.setdiff1d(Iref[q][Iref[q] >= 0], I[q])
        if len(missing):
            gap = np.abs(S[q, missing] - kth[q, 0])
            assert np.all(gap <= tol[q, 0]), "a clearly better id was not returned"
    return D, I, S


SEARCH_CONFIGS = [
    # d, bits, metric, estimator, qjl, rotation, center (None: the default)
    (64, 4, "ip", "mse", False, "hadamard", None),
    (64, 4, "ip", "corrected", False, "dense", None),
    (64, 2, "cosine", "mse", False, "dense", None),
    (64, 2, "cosine", "corrected", False, "hadamard", None),
    (64, 2, "cosine", "corrected", False, "hadamard", False),
    (50, 3, "l2", "mse", False, "hadamard", None),
    (50, 3, "l2", "mse", False, "hadamard", True),
    (50, 3, "l2", "corrected", False, "dense", None),
    (50, 3, "l2", "corrected", False, "dense", False),
    (64, 1, "ip", "corrected", False, "hadamard", None),
    (64, 8, "l2", "mse", False, "dense", None),
    (40, 5, "cosine", "corrected", False, "hadamard", None),
    (40, 5, "cosine", "mse", False, "hadamard", True),
    (384, 4, "cosine", "corrected", False, "hadamard", None),
    (64, 3, "ip", "mse", True, "hadamard", None),
    (50, 2, "l2", "mse", True, "dense", None),
    (64, 4, "cosine", "mse", True, "hadamard", None),
    (64, 4, "cosine", "mse", True, "dense", True),
    # row-major decoding: widths read as words, byte tables, 3-bit pairs, with
    # coordinates left over past the last whole group
    (37, 6, "l2", "corrected", False, "hadamard", None),
    (20, 7, "ip", "mse", False, "dense", None),
    (33, 2, "cosine", "mse", True, "hadamard", None),
    (45, 4, "l2", "mse", True, "hadamard", None),
]


@pytest.mark.parametrize("d, bits, metric, estimator, qjl, rotation, center", SEARCH_CONFIGS)
def test_search_matches_reference(synthetic, d, bits, metric, estimator, qjl, rotation, center):
    ds = synthetic(d=d, nb=1500, nq=20)
    index = build(ds, bits=bits, metric=metric, estimator=estimator, qjl=qjl,
                  rotation=rotation, seed=3, center=center)
    D, I, _ = assert_matches_reference(index, ds.xq, 10)
    # one query at a time gives the batch's answers
    for q in range(3):
        D1, I1 = index.search(ds.xq[q:q + 1], 10)
        np.testing.assert_array_equal(I1[0], I[q])
        np.testing.assert_allclose(D1[0], D[q], rtol=1e-6, atol=1e-6)


DECODE_CONFIGS = [
    (metric, estimator, qjl, center)
    for metric in ("ip", "cosine", "l2")
    for estimator, qjl, center in (("mse", False, False), ("corrected", False, False),
                                   ("mse", True, False), ("corrected", False, True),
                                   ("mse", False, True))
    if not (center and metric == "ip")  # centring applies to l2 and cosine
]


@pytest.mark.parametrize("metric, estimator, qjl, center", DECODE_CONFIGS)
def test_search_scores_are_decoded_inner_products(synthetic, metric, estimator, qjl, center):
    # for every estimator the reconstruction is what the index scores against:
    # <q, x_hat> ("ip", "cosine"), or with the distance identity
    # ||q' - mu||^2 + n^2 - 2 <q' - mu, x_hat - mu> on the stored norm n
    ds = synthetic(d=48, nb=300, nq=5)
    index = build(ds, bits=3, metric=metric, estimator=estimator, qjl=qjl, seed=1,
                  center=center)
    D, I = index.search(ds.xq, 300)
    expected = decoded_scores(index, ds.xq)
    got = np.take_along_axis(expected, I, 1)
    np.testing.assert_allclose(D, got, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


# -- metric semantics ------------------------------------------------------------

def test_ip_is_near_exact_at_8_bits(synthetic):
    ds = synthetic(d=64, nb=1000, nq=20)
    index = build(ds, bits=8, metric="ip", estimator="mse", seed=2)
    D, I = index.search(ds.xq, 10)
    exact = ds.exact_scores("ip")
    assert np.all(np.diff(D, axis=1) <= 0)
    err = np.abs(D - np.take_along_axis(exact, I, 1))
    # 8 bits: ||x - x_hat|| ~ 0.007 ||x||, so |<q, x - x_hat>| ~ 0.007 / sqrt(d) ||q|| ||x||
    bound = np.linalg.norm(ds.xq, axis=1)[:, None] * np.linalg.norm(ds.xb, axis=1)[I]
    assert np.all(err < 5e-3 * bound)
    assert recall_at(I, ds.ground_truth(10, "ip"), 10) > 0.9


def test_l2_is_near_exact_at_8_bits(synthetic):
    ds = synthetic(d=64, nb=1000, nq=20)
    index = build(ds, bits=8, metric="l2", estimator="mse", seed=2)
    D, I = index.search(ds.xq, 10)
    exact = ds.exact_scores("l2")
    assert np.all(np.diff(D, axis=1) >= 0) and np.all(D >= 0)
    err = np.abs(D - np.take_along_axis(exact, I, 1))
    bound = np.linalg.norm(ds.xq, axis=1)[:, None] * np.linalg.norm(ds.xb, axis=1)[I]
    assert np.all(err < 1e-2 * bound)  # twice the inner-product error
    assert recall_at(I, ds.ground_truth(10, "l2"), 10) > 0.9


@pytest.mark.parametrize("estimator", ["mse", "corrected"])
def test_cosine_is_invariant_to_scaling(synthetic, estimator):
    ds = synthetic(d=64, nb=800, nq=20)
    rng = np.random.default_rng(0)
    a = build(ds, bits=4, metric="cosine", estimator=estimator, seed=4)
    xb = ds.xb * rng.uniform(0.1, 10, size=(ds.nb, 1)).astype(np.float32)
    b = build(xb, bits=4, metric="cosine", estimator=estimator, seed=4)
    xq = ds.xq * rng.uniform(0.1, 10, size=(ds.nq, 1)).astype(np.float32)
    Da, Ia = a.search(ds.xq, 10)
    Db, Ib = b.search(xq, 10)
    np.testing.assert_allclose(Db, Da, rtol=1e-4, atol=1e-5)
    assert np.mean(Ia == Ib) > 0.98  # only float-rounding near-ties may swap
    assert np.all(Da <= 1.0 + 1e-3)
    gt = ds.ground_truth(10, "cosine")
    assert recall_at(Ia, gt, 10) > 0.5


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("estimator, qjl, center", [
    ("mse", False, False), ("corrected", False, False), ("mse", True, False),
    ("corrected", False, None)])
def test_zero_vectors(synthetic, metric, estimator, qjl, center):
    ds = synthetic(d=32, nb=100, nq=3)
    xb = np.array(ds.xb)
    xb[[0, 17]] = 0
    index = build(xb, bits=3, metric=metric, estimator=estimator, qjl=qjl, seed=1,
                  center=center)
    xq = np.vstack([ds.xq, np.zeros((1, 32), np.float32)])
    D, I = index.search(xq, 100)
    assert np.all(np.isfinite(D)) and np.all(I >= 0)
    assert np.all(np.isfinite(index.reconstruct_n()))
    if metric == "cosine":
        # the cosine with a zero vector is taken as 0: it must not look like a
        # neighbour (with centring, the distance identity puts it at ||q|| = 1
        # from every unit query, i.e. cosine 0.5, above most real neighbours)
        zero_scores = D[:-1][np.isin(I[:-1], [0, 17])]
        assert np.all(np.abs(zero_scores) < 0.1), zero_scores
    if index.center:
        return  # centred codes estimate zero vectors like any other: nothing exact to check
    pos = {int(v): j for j, v in enumerate(I[0])}
    if metric == "l2":
        # a zero vector is at distance ||q||^2
        expected = float((ds.xq[0].astype(np.float64) ** 2).sum())
        assert D[0, pos[0]] == pytest.approx(expected, rel=1e-4)
    elif metric == "ip" or estimator == "corrected":
        assert D[0, pos[0]] == pytest.approx(0.0, abs=1e-6)
    # a zero query scores every vector 0 (ip, cosine) or ||x||^2 (l2)
    if metric == "l2":
        norms = (xb.astype(np.float64) ** 2).sum(1)
        np.testing.assert_allclose(D[-1], norms[I[-1]], rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(D[-1], 0.0, atol=1e-6)


def test_zero_vector_is_not_everyones_neighbour(sample_dataset):
    # real embeddings: one zero vector (an empty document) added to the sample
    # must not appear among the 10 nearest neighbours of the queries
    ds = sample_dataset
    xb = np.vstack([ds.train, np.zeros((1, ds.d), np.float32)])
    index = build(xb, bits=4, metric="cosine", seed=0)  # default options
    _, I = index.search(ds.test, 10)
    assert (I == ds.n).any(axis=1).mean() < 0.01


# -- shards ------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_merge_of_shards_equals_single_search(synthetic, metric):
    ds = synthetic(d=32, nb=1000, nq=15)
    k = 10
    whole = build(ds, bits=3, metric=metric, seed=6)
    D, I = whole.search(ds.xq, k)
    # one index, two subsets
    parts = [whole.search(ds.xq, k, subset=(0, 420)), whole.search(ds.xq, k, subset=(420, 1000))]
    assert parts[0][1].max() < 420 and parts[1][1].min() >= 420
    Dm, Im = merge_results(parts, k, metric=metric)
    np.testing.assert_allclose(Dm, D, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(Im, I)
    # two separate indexes (same seed, and trained on the same vectors so that a
    # centring mean is shared), ids of the second offset by hand
    a = TurboQuantIndex(32, 3, metric=metric, seed=6)
    b = TurboQuantIndex(32, 3, metric=metric, seed=6)
    for shard, rows in ((a, ds.xb[:420]), (b, ds.xb[420:])):
        shard.train(ds.xb)
        shard.add(rows)
    Da, Ia = a.search(ds.xq, k)
    Db, Ib = b.search(ds.xq, k)
    Dm, Im = merge_results([(Da, Ia), (Db, np.where(Ib >= 0, Ib + 420, -1))], k, metric=metric)
    np.testing.assert_allclose(Dm, D, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(Im, I)


def test_merge_results_pads_and_checks():
    D1 = np.array([[3.0, 1.0]], np.float32)
    I1 = np.array([[5, 2]], np.int64)
    D2 = np.array([[2.0, -np.inf]], np.float32)
    I2 = np.array([[9, -1]], np.int64)
    D, I = merge_results([(D1, I1), (D2, I2)], 5)
    assert I.tolist() == [[5, 9, 2, -1, -1]]
    assert D[0, :3].tolist() == [3.0, 2.0, 1.0] and np.all(np.isneginf(D[0, 3:]))
    D, I = merge_results([(D1, I1), (D2, I2)], 5, metric="l2")
    assert I.tolist() == [[2, 9, 5, -1, -1]]
    assert np.all(np.isposinf(D[0, 3:]))
    with pytest.raises(ValueError, match="at least one"):
        merge_results([], 3)


def test_subset_scans_only_the_range(synthetic):
    ds = synthetic(d=32, nb=600, nq=5)
    index = build(ds, bits=4, metric="ip", seed=0)
    D, I = index.search(ds.xq, 20, subset=(100, 110))
    assert np.all((I[:, :10] >= 100) & (I[:, :10] < 110))
    assert np.all(I[:, 10:] == -1) and np.all(np.isneginf(D[:, 10:]))
    sub = build(ds.xb[100:110], bits=4, metric="ip", seed=0)
    Ds, Is = sub.search(ds.xq, 20)
    np.testing.assert_allclose(D, Ds, rtol=1e-6)
    np.testing.assert_array_equal(I[:, :10], Is[:, :10] + 100)
    D, I = index.search(ds.xq, 5, subset=(7, 7))
    assert np.all(I == -1)


# -- reconstruction, codes ------------------------------------------------------------

@pytest.mark.parametrize("bits", [3, 4])
def test_reconstruct_n_and_codes(synthetic, bits):
    ds = synthetic(d=40, nb=300, nq=1)
    index = TurboQuantIndex(40, bits, metric="l2", seed=2)
    index.add(ds.xb[:120])
    index.add(ds.xb[120:])
    assert index.ntotal == len(index) == 300
    codes = index.codes()
    assert codes.shape == (300, index.code_size) and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, index.sa_encode(ds.xb))
    codes[:] = 0  # a copy: the index is unchanged
    np.testing.assert_array_equal(index.codes(), index.sa_encode(ds.xb))
    full = index.reconstruct_n()
    assert full.shape == (300, 40) and full.dtype == np.float32
    np.testing.assert_array_equal(full, index.sa_decode(index.codes()))
    np.testing.assert_array_equal(index.reconstruct_n(50, 20), full[50:70])
    np.testing.assert_array_equal(index.reconstruct_n(290, 10), full[290:])
    assert index.reconstruct_n(300, 0).shape == (0, 40)
    # reconstructions are close to the vectors
    rel = np.linalg.norm(full - ds.xb, axis=1) / np.linalg.norm(ds.xb, axis=1)
    assert np.median(rel) < 0.25


def test_add_in_chunks_equals_one_batch(synthetic, monkeypatch):
    ds = synthetic(d=32, nb=500, nq=4)
    one = build(ds, bits=4, metric="ip", keep_vectors="float32", seed=1)
    monkeypatch.setattr(tqsearch.index, "ADD_CHUNK", 50)  # not a multiple of any block size
    seen = []
    chunked = TurboQuantIndex(32, 4, metric="ip", keep_vectors="float32", seed=1)
    chunked.add(ds.xb, progress=seen.append)
    assert sum(seen) == 500 and len(seen) == 10
    np.testing.assert_array_equal(chunked.codes(), one.codes())
    assert_same_results(chunked.search(ds.xq, 5, rerank=4), one.search(ds.xq, 5, rerank=4))


def test_reset_and_attributes(synthetic):
    ds = synthetic(d=32, nb=50, nq=2)
    index = TurboQuantIndex(32, 3, metric="cosine", qjl=True, rotation="dense", seed=9,
                            keep_vectors="float16")
    index.train(ds.xb)  # no-op, faiss compatibility
    assert index.ntotal == 0 and index.is_trained
    index.add(ds.xb)
    assert (index.d, index.bits, index.metric, index.qjl, index.rotation) == (
        32, 3, "cosine", True, "dense")
    assert index.raw_size == 64 and index.ntotal == 50
    assert "TurboQuantIndex(d=32, bits=3" in repr(index)
    index.reset()
    assert index.ntotal == 0
    D, I = index.search(ds.xq, 3)
    assert np.all(I == -1) and np.all(np.isneginf(D))
    index.add(ds.xb[:5])
    assert index.search(ds.xq, 3)[1].max() < 5


# -- centring ------------------------------------------------------------------------------

def test_centring_defaults():
    assert TurboQuantIndex(8, 2, metric="l2").center
    assert TurboQuantIndex(8, 2, metric="cosine").center
    assert not TurboQuantIndex(8, 2, metric="ip").center
    assert not TurboQuantIndex(8, 2, metric="l2", estimator="mse").center
    assert not TurboQuantIndex(8, 2, metric="l2", qjl=True).center
    assert TurboQuantIndex(8, 2, metric="l2", estimator="mse", center=True).center


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_centring_mean_from_train_or_first_batch(synthetic, metric):
    ds = synthetic(d=32, nb=600, nq=200)
    x = ds.xb.astype(np.float64)
    if metric == "cosine":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    # the first batch added sets the mean when train() was not called
    lazy = TurboQuantIndex(32, 3, metric=metric, seed=1)
    assert lazy.center and not lazy.is_trained
    lazy.add(ds.xb[:200])
    assert lazy.is_trained
    np.testing.assert_allclose(lazy.codec.mean, x[:200].mean(0), atol=1e-6)
    lazy.add(ds.xb[200:])  # later batches do not move it
    np.testing.assert_allclose(lazy.codec.mean, x[:200].mean(0), atol=1e-6)
    # train() sets it explicitly, and must come first
    trained = TurboQuantIndex(32, 3, metric=metric, seed=1)
    trained.train(ds.xb)
    np.testing.assert_allclose(trained.codec.mean, x.mean(0), atol=1e-6)
    trained.add(ds.xb)
    with pytest.raises(ValueError, match=r"train\(\) must come before add\(\).*reset\(\)"):
        trained.train(ds.xb)
    # reset keeps the mean, so codes of the same vectors are the same again
    codes = trained.codes()
    trained.reset()
    trained.add(ds.xb)
    np.testing.assert_array_equal(trained.codes(), codes)
    with pytest.raises(ValueError, match="at least one vector"):
        TurboQuantIndex(32, 3, metric=metric).train(np.empty((0, 32), np.float32))
    # centring never costs recall (this mixture is nearly centred already)
    gt = ds.ground_truth(10, metric)
    plain = build(ds, bits=3, metric=metric, seed=1, center=False)
    assert (recall_at(trained.search(ds.xq, 10)[1], gt, 10)
            >= recall_at(plain.search(ds.xq, 10)[1], gt, 10) - 0.03)


def test_centring_makes_l2_invariant_to_an_offset(synthetic):
    # squared distances do not change when every vector and query is shifted;
    # centred codes see the same vectors, uncentred ones lose the directions
    ds = synthetic(d=32, nb=600, nq=200)
    gt = ds.ground_truth(10, "l2")
    base = build(ds, bits=3, metric="l2", seed=1, center=True)
    shifted = build(ds.xb + 5, bits=3, metric="l2", seed=1, center=True)
    plain = build(ds.xb + 5, bits=3, metric="l2", seed=1, center=False)
    r_base = recall_at(base.search(ds.xq, 10)[1], gt, 10)
    r_shifted = recall_at(shifted.search(ds.xq + 5, 10)[1], gt, 10)
    r_plain = recall_at(plain.search(ds.xq + 5, 10)[1], gt, 10)
    assert abs(r_shifted - r_base) < 0.03
    assert r_shifted > r_plain + 0.2


# -- determinism, seeds, threads ----------------------------------------------------------

@pytest.mark.parametrize("rotation", ["hadamard", "dense"])
@pytest.mark.parametrize("qjl", [False, True])
def test_same_seed_same_codes_other_seed_other_codes(synthetic, rotation, qjl):
    ds = synthetic(d=48, nb=400, nq=10)
    a = build(ds, bits=3, metric="ip", qjl=qjl, rotation=rotation, seed=21)
    b = build(ds, bits=3, metric="ip", qjl=qjl, rotation=rotation, seed=21)
    c = build(ds, bits=3, metric="ip", qjl=qjl, rotation=rotation, seed=22)
    np.testing.assert_array_equal(a.codes(), b.codes())
    assert_same_results(a.search(ds.xq, 10), b.search(ds.xq, 10))
    assert np.mean(a.codes()[:, :a.codec.code_bytes] != c.codes()[:, :c.codec.code_bytes]) > 0.3


def test_threads_do_not_change_results(synthetic):
    ds = synthetic(d=64, nb=9000, nq=3)  # few queries, many codes: the scan is split
    for metric, qjl in (("ip", False), ("l2", True), ("cosine", False)):
        index = TurboQuantIndex(64, 4, metric=metric, qjl=qjl, keep_vectors="float32", seed=2)
        index.set_threads(1)
        index.add(ds.xb)
        codes = index.codes()
        r1 = index.search(ds.xq, 10)
        r1b = index.search(ds.xq, 10)
        rr1 = index.search(ds.xq, 10, rerank=3)
        index.set_threads(None)
        r2 = index.search(ds.xq, 10, n_threads=2)
        rr2 = index.search(ds.xq, 10, rerank=3, n_threads=2)
        r3 = index.search(ds.xq, 10)
        two = TurboQuantIndex(64, 4, metric=metric, qjl=qjl, seed=2)
        two.set_threads(2)
        two.add(ds.xb)
        np.testing.assert_array_equal(two.codes(), codes)
        for a, b in ((r1, r1b), (r1, r2), (r1, r3), (rr1, rr2)):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


# -- edge cases --------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_k_larger_than_ntotal_pads(synthetic, metric):
    ds = synthetic(d=16, nb=7, nq=3)
    index = build(ds, bits=4, metric=metric, keep_vectors="float32", seed=0)
    for rerank in (None, 3):
        D, I = index.search(ds.xq, 12, rerank=rerank)
        assert D.shape == I.shape == (3, 12)
        assert np.all(np.sort(I[:, :7], axis=1) == np.arange(7))
        assert np.all(I[:, 7:] == -1)
        assert np.all(np.isfinite(D[:, :7]))
        pad = np.isposinf(D[:, 7:]) if metric == "l2" else np.isneginf(D[:, 7:])
        assert pad.all()
    # an empty index pads everything
    empty = TurboQuantIndex(16, 4, metric=metric)
    D, I = empty.search(ds.xq, 4)
    assert np.all(I == -1) and D.shape == (3, 4)


def test_empty_batches(synthetic):
    ds = synthetic(d=16, nb=20, nq=2)
    index = build(ds, bits=2, metric="l2", seed=0)
    before = index.codes()
    index.add(np.empty((0, 16), np.float32))
    np.testing.assert_array_equal(index.codes(), before)
    D, I = index.search(np.empty((0, 16), np.float32), 5)
    assert D.shape == I.shape == (0, 5) and D.dtype == np.float32 and I.dtype == np.int64
    assert index.sa_encode(np.empty((0, 16))).shape == (0, index.code_size)
    assert index.sa_decode(np.empty((0, index.code_size), np.uint8)).shape == (0, 16)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64])
def test_other_dtypes_are_converted(synthetic, dtype):
    ds = synthetic(d=32, nb=200, nq=5)
    xb = (ds.xb * 10).astype(dtype)
    xq = (ds.xq * 10).astype(dtype)
    a = build(xb, bits=4, metric="l2", seed=3)
    b = build(xb.astype(np.float32), bits=4, metric="l2", seed=3)
    np.testing.assert_array_equal(a.codes(), b.codes())
    assert_same_results(a.search(xq, 5), b.search(xq.astype(np.float32), 5))


def test_non_contiguous_inputs(synthetic):
    ds = synthetic(d=32, nb=200, nq=6)
    ref = build(ds, bits=3, metric="ip", seed=3)
    expected = ref.search(ds.xq, 5)
    wide = np.zeros((200, 64), np.float32)
    wide[:, ::2] = ds.xb
    tall = np.zeros((400, 32), np.float32)
    tall[::2] = ds.xb
    for xb in (np.asfortranarray(ds.xb), wide[:, ::2], tall[::2], ds.xb.T.copy().T):
        assert not xb.flags.c_contiguous
        index = build(xb, bits=3, metric="ip", seed=3)
        np.testing.assert_array_equal(index.codes(), ref.codes())
    for xq in (np.asfortranarray(ds.xq), np.repeat(ds.xq, 2, axis=0)[::2]):
        assert_same_results(ref.search(xq, 5), expected)


# -- rerank -------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_rerank_scores_exactly(synthetic, metric):
    ds = synthetic(d=64, nb=2000, nq=30)
    index = build(ds, bits=2, metric=metric, keep_vectors="float32", seed=5)
    gt = ds.ground_truth(10, metric)
    exact = ds.exact_scores(metric)
    D0, I0 = index.search(ds.xq, 10)
    D, I = index.search(ds.xq, 10, rerank=10)
    np.testing.assert_allclose(D, np.take_along_axis(exact, I, 1), rtol=1e-4,
                               atol=1e-4 * np.abs(exact).max())
    assert recall_at(I, gt, 10) > max(0.95, recall_at(I0, gt, 10))
    # rerank=1 re-scores exactly the k candidates of the plain search
    D1, I1 = index.search(ds.xq, 10, rerank=1)
    assert all(set(a) == set(b) for a, b in zip(I1.tolist(), I0.tolist(), strict=True))
    np.testing.assert_allclose(D1, np.take_along_axis(exact, I1, 1), rtol=1e-4,
                               atol=1e-4 * np.abs(exact).max())
    # rerank inside a subset stays in the subset
    Ds, Is = index.search(ds.xq, 10, rerank=5, subset=(500, 900))
    assert np.all((Is >= 500) & (Is < 900))


def test_rerank_with_float16_vectors(synthetic):
    ds = synthetic(d=64, nb=1000, nq=10)
    index = build(ds, bits=3, metric="cosine", keep_vectors="float16", seed=5)
    assert index.raw_size == 128
    D, I = index.search(ds.xq, 10, rerank=8)
    exact = ds.exact_scores("cosine")
    np.testing.assert_allclose(D, np.take_along_axis(exact, I, 1), atol=2e-3)
    assert recall_at(I, ds.ground_truth(10, "cosine"), 10) > 0.9


# -- real data ---------------------------------------------------------------------------

def test_recall_on_shipped_sample_not_below_faiss(sample_dataset):
    faiss = pytest.importorskip("faiss")
    ds = sample_dataset
    d = ds.d
    gt = ds.neighbors
    for bits, floor in ((2, 0.83), (4, 0.94)):
        index = faiss.index_factory(d, f"L2norm,RR{d},SQtqmse{bits}", faiss.METRIC_INNER_PRODUCT)
        index.train(ds.train)
        index.add(ds.train)
        baseline = recall_at(index.search(ds.test, 10)[1], gt, 10)
        for estimator in ("mse", "corrected"):
            ours = build(ds.train, bits=bits, metric="cosine", estimator=estimator, seed=0)
            r = recall_at(ours.search(ds.test, 10)[1], gt, 10)
            assert r >= baseline - 0.01, (bits, estimator, r, baseline)
            assert r >= floor


@pytest.mark.parametrize("d, bits, metric", [(50, 2, "cosine"), (64, 4, "l2"), (24, 3, "ip")])
def test_memory_is_the_codes_and_their_factors(d, bits, metric):
    # Nothing per vector beyond code_size bytes (padded to whole blocks) stays in memory,
    # searching included.
    x = np.random.default_rng(d).standard_normal((1000, d)).astype(np.float32)
    index = tqsearch.TurboQuantIndex(d, bits, metric=metric)
    empty = index.nbytes
    index.add(x)
    index.search(x[:3], 5)
    per_vector = (index.nbytes - empty) / index.ntotal
    padded = -(-index.ntotal // 32) * 32  # the last block of 32 is padded
    assert per_vector <= index.code_size * padded / index.ntotal


@pytest.mark.parametrize("metric, estimator, bits", [
    ("ip", "corrected", 4), ("l2", "corrected", 2), ("cosine", "mse", 1),
    ("cosine", "pca", 3), ("l2", "pca", 2), ("cosine", "corrected", 4)])
def test_one_call_paths_equal_general_path(synthetic, metric, estimator, bits):
    # Up to SERIAL_MAX_ROWS queries take one compiled call (kernels/query.py): on one
    # thread, or with a single query's 9,000 codes split into two ranges scanned on
    # two threads; a batch of 20 takes the separate calls. Same kernels, same results.
    ds = synthetic(d=40, nb=9000, nq=20)
    index = build(ds, bits=bits, metric=metric, estimator=estimator, seed=4)
    queries = ds.xq.copy()
    queries[2] = 0  # a zero query (cosine: scores 0 by convention)
    for subset in (None, (100, 8900)):
        general = index.search(queries, 7, n_threads=1, subset=subset)
        for rows in (slice(0, 1), slice(0, 6)):
            for threads in (1, 2):
                few = index.search(queries[rows], 7, n_threads=threads, subset=subset)
                np.testing.assert_array_equal(few[1], general[1][rows])
                np.testing.assert_array_equal(few[0], general[0][rows])
