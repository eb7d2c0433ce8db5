"""TurboQuant KV cache: NumPy path against float attention, GPU kernels against NumPy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tqsearch.codebook import lloyd_max
from tqsearch.kvcache import KVLayout, NumpyKVCache, float_attention, gpu_available
from tqsearch.kvcache.codec import (
    fwht,
    hadamard_signs,
    key_stream_order,
    pack_codes,
    rotate,
    unpack_codes,
    unrotate,
    value_stream_order,
)
from tqsearch.kvcache.plan import plan_splits

RNG = np.random.default_rng(1234)


def _cos(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _peaked_inputs(rng, b, h, t, d, g, sharp=2.0):
    """Keys/values with a shared mean (like real caches) and queries aligned to some keys."""
    k = rng.standard_normal((b, h, t, d)).astype(np.float32)
    k += 0.5 * rng.standard_normal((1, h, 1, d)).astype(np.float32)
    v = rng.standard_normal((b, h, t, d)).astype(np.float32)
    idx = rng.integers(0, t, size=(b, h, g))
    q = np.take_along_axis(k, idx[..., None], axis=2)  # (b, h, g, d)
    q = sharp * q + rng.standard_normal(q.shape).astype(np.float32)
    return q.reshape(b, h * g, d).astype(np.float32), k, v


# --- codec ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pack_roundtrip_and_exact_size(d, bits):
    codes = RNG.integers(0, 1 << bits, size=(3, 5, d)).astype(np.uint8)
    for order in (key_stream_order(d), value_stream_order(d)):
        assert np.array_equal(np.sort(order), np.arange(d))
        packed = pack_codes(codes, bits, order)
        assert packed.shape == (3, 5, d * bits // 8)  # 3-bit codes take 3/8 byte, no padding
        assert np.array_equal(unpack_codes(packed, bits, order), codes)


def test_stream_orders_follow_lane_fragments():
    ko = key_stream_order(128).reshape(4, 8, 4)  # chunk (lane % 4), tile, 4 coordinates
    assert list(ko[1, 2]) == [32 + 2, 32 + 3, 32 + 10, 32 + 11]
    vo = value_stream_order(128).reshape(8, 8, 2)  # chunk (lane // 4), tile, pair
    assert list(vo[3, 5]) == [80 + 3, 80 + 11]


def test_fwht_is_sylvester_hadamard_and_rotation_is_orthonormal():
    d = 64
    h = np.array([[1.0]])
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    x = RNG.standard_normal((4, d)).astype(np.float32)
    assert np.allclose(fwht(x), x @ h.T, atol=1e-4)
    s = hadamard_signs(d, 7)
    assert set(np.unique(s)) == {-1.0, 1.0}
    assert np.array_equal(s, hadamard_signs(d, 7))
    y = rotate(x, s)
    assert np.allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    assert np.allclose(unrotate(y, s), x, atol=1e-5)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_reconstruction_error_matches_codebook_mse(bits):
    d = 128
    lay = KVLayout(d, bits, bits, seed=3, norm_correction=False)
    x = RNG.standard_normal((4000, d)).astype(np.float32) * 3.0
    packed, scale = lay.encode_keys(x)
    xh = lay.decode_keys(packed, scale)
    rel = np.sum((xh - x) ** 2, axis=1) / np.sum(x**2, axis=1)
    expected = d * lloyd_max(d, bits).mse  # distortion of a unit vector
    assert 0.85 * expected < rel.mean() < 1.15 * expected


def test_norm_correction_keeps_norms():
    lay = KVLayout(64, 2, 2, seed=0, norm_correction=True)
    x = RNG.standard_normal((50, 64)).astype(np.float32)
    xh = lay.decode_values(*lay.encode_values(x))
    assert np.allclose(np.linalg.norm(xh, axis=1), np.linalg.norm(x, axis=1), rtol=1e-4)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_inner_product_error_scales_with_sqrt_mse(bits):
    # q . k_hat - q . k has std ||q|| ||k|| sqrt(mse) for a random rotation
    d = 128
    lay = KVLayout(d, bits, bits, seed=5, norm_correction=False)
    k = RNG.standard_normal((3000, d)).astype(np.float32)
    q = RNG.standard_normal((3000, d)).astype(np.float32)
    kh = lay.decode_keys(*lay.encode_keys(k))
    err = np.sum(q * (kh - k), axis=1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(k, axis=1))
    ratio = err.std() / np.sqrt(lloyd_max(d, bits).mse)
    assert 0.8 < ratio < 1.2


def test_layout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="head_dim"):
        KVLayout(96)
    with pytest.raises(ValueError, match="key_bits"):
        KVLayout(64, key_bits=5)
    with pytest.raises(ValueError, match="value_bits"):
        KVLayout(64, value_bits=1)
    assert KVLayout(128, 4, 4).bytes_per_token == 136
    assert KVLayout(128, 3, 4).bytes_per_token == 120


# --- NumPy cache ---------------------------------------------------------------------


def test_attention_on_codes_equals_attention_on_decoded_tensors():
    b, h, t, d, g = 2, 3, 120, 64, 3
    q, k, v = _peaked_inputs(RNG, b, h, t, d, g)
    cache = NumpyKVCache(b, h, d, 3, 4, seed=11)
    cache.append(k, v, n_valid=[120, 77])
    kd, vd = cache.decoded()
    ref = float_attention(q, kd, vd, cache.lengths)
    out = cache.attention(q)
    assert out.shape == (b, h * g, d) and out.dtype == np.float32
    assert np.allclose(out, ref, atol=2e-5 * np.abs(ref).max())


def test_logit_error_matches_theory():
    # logits q . k_hat * scale deviate by scale ||q|| ||k|| sqrt(mse) (norm_correction off)
    b, h, t, d, g = 1, 2, 300, 128, 4
    q, k, v = _peaked_inputs(RNG, b, h, t, d, g, sharp=0.5)
    exact = np.einsum("bhgd,bhtd->bhgt", q.reshape(b, h, g, d), k) / np.sqrt(d)
    for kb in (2, 3, 4):
        cache = NumpyKVCache(b, h, d, kb, 4, seed=2, norm_correction=False, center_keys=False)
        cache.append(k, v)
        err = cache.logits(q).reshape(b, h, g, t) - exact
        qn = np.linalg.norm(q.reshape(b, h, g, 1, d), axis=-1)
        kn = np.linalg.norm(k[:, :, None], axis=-1)
        theory = qn * kn * np.sqrt(lloyd_max(d, kb).mse) / np.sqrt(d)
        ratio = np.sqrt(np.mean(err**2) / np.mean(theory**2))
        assert 0.75 < ratio < 1.25, (kb, ratio)


def test_attention_error_within_theory_and_ordered_by_bits():
    b, h, t, d, g = 2, 2, 400, 128, 4
    q, k, v = _peaked_inputs(RNG, b, h, t, d, g, sharp=0.5)
    ref = float_attention(q, k, v)
    errs = {}
    for kb, vb in [(4, 4), (3, 4), (2, 4)]:
        cache = NumpyKVCache(b, h, d, kb, vb, seed=2)
        cache.append(k, v)
        out = cache.attention(q)
        errs[kb] = np.linalg.norm(out - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
        # value rows carry relative error sqrt(d * mse_v); logit noise of relative size
        # sqrt(d * mse_k) re-weights them: the output error stays within a small multiple
        sv = np.sqrt(d * lloyd_max(d, vb).mse)
        sk = np.sqrt(d * lloyd_max(d, kb).mse)
        assert np.median(errs[kb]) < sv + sk, (kb, np.median(errs[kb]))
    assert np.median(errs[4]) < np.median(errs[3]) < np.median(errs[2])
    assert np.mean(_cos(out, ref)) > 0.8  # 2-bit keys (last in the loop) still usable


def test_key_centering_cancels_in_softmax_and_cuts_error():
    b, h, t, d, g = 1, 2, 256, 64, 4
    q, k, v = _peaked_inputs(RNG, b, h, t, d, g, sharp=0.5)
    k = k + 4.0 * RNG.standard_normal((1, h, 1, d)).astype(np.float32)  # common component
    ref = float_attention(q, k, v)
    errs = {}
    for center in (False, True):
        cache = NumpyKVCache(b, h, d, 3, 4, seed=1, center_keys=center)
        cache.append(k, v)
        assert np.any(cache.key_offset != 0) == center
        kd, vd = cache.decoded()  # decoded keys include the offset again
        assert np.allclose(cache.attention(q), float_attention(q, kd, vd), atol=1e-4)
        errs[center] = np.linalg.norm(cache.attention(q) - ref) / np.linalg.norm(ref)
    assert errs[True] < 0.7 * errs[False]
    # a first append shorter than center_min_tokens leaves the offset at zero
    small = NumpyKVCache(1, h, d)
    small.append(k[:, :, :3], v[:, :, :3])
    small.append(k[:, :, 3:], v[:, :, 3:])
    assert np.all(small.key_offset == 0)


def test_gqa_maps_query_head_to_kv_head_by_integer_division():
    b, h, t, d, g = 1, 2, 50, 64, 4
    k = RNG.standard_normal((b, h, t, d)).astype(np.float32)
    v = RNG.standard_normal((b, h, t, d)).astype(np.float32)
    v[:, 1] += 10.0  # KV head 1 has values far from head 0
    cache = NumpyKVCache(b, h, d)
    cache.append(k, v)
    q = RNG.standard_normal((b, h * g, d)).astype(np.float32)
    out = cache.attention(q)
    assert np.all(out[0, :g].mean(-1) < 2) and np.all(out[0, g:].mean(-1) > 8)
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        cache.attention(q[:, :3])


def test_variable_lengths_match_separate_sequences():
    h, d, g = 2, 64, 2
    lens1, lens2 = [37, 0, 64], [5, 9, 0]
    k1 = RNG.standard_normal((3, h, 64, d)).astype(np.float32)
    v1 = RNG.standard_normal((3, h, 64, d)).astype(np.float32)
    k2 = RNG.standard_normal((3, h, 9, d)).astype(np.float32)
    v2 = RNG.standard_normal((3, h, 9, d)).astype(np.float32)
    q = RNG.standard_normal((3, h * g, d)).astype(np.float32)
    cache = NumpyKVCache(3, h, d, 4, 3, seed=4)
    cache.append(k1, v1, n_valid=lens1)
    cache.append(k2, v2, n_valid=lens2)
    assert list(cache.lengths) == [42, 9, 64]
    out = cache.attention(q)
    for i in range(3):
        one = NumpyKVCache(1, h, d, 4, 3, seed=4)
        one.append(k1[i:i + 1, :, : lens1[i]], v1[i:i + 1, :, : lens1[i]])
        one.append(k2[i:i + 1, :, : lens2[i]], v2[i:i + 1, :, : lens2[i]])
        assert np.allclose(out[i], one.attention(q[i:i + 1])[0], atol=1e-5)
    assert cache.nbytes == 115 * h * KVLayout(d, 4, 3).bytes_per_token


def test_empty_sequence_gives_zero_output():
    cache = NumpyKVCache(2, 1, 64)
    x = RNG.standard_normal((2, 1, 3, 64)).astype(np.float32)
    cache.append(x, x, n_valid=[3, 0])
    out = cache.attention(RNG.standard_normal((2, 1, 64)).astype(np.float32))
    assert np.all(np.isfinite(out)) and np.all(out[1] == 0)


def test_append_checks_shapes():
    cache = NumpyKVCache(2, 2, 64)
    x = np.zeros((2, 2, 4, 64), np.float32)
    with pytest.raises(ValueError, match="expected"):
        cache.append(x[:1], x[:1])
    with pytest.raises(ValueError, match="same shape"):
        cache.append(x, x[:, :, :3])
    with pytest.raises(ValueError, match="n_valid"):
        cache.append(x, x, n_valid=[5, 1])


def test_plan_splits_covers_sequence():
    for b, h, t in [(1, 8, 8192), (64, 8, 131072), (3, 2, 77), (1, 1, 0)]:
        s, c = plan_splits(b, h, t, 132, 12, 136, 4096)
        assert c % 32 == 0 and s * c >= t and (s - 1) * c < max(t, 1)


def test_import_does_not_need_cupy():
    code = (
        "import sys; import tqsearch, tqsearch.kvcache; "
        "assert 'cupy' not in sys.modules, 'cupy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- GPU kernels against the NumPy path ------------------------------------------------

gpu = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a working CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("d,kb,vb", [(128, 4, 4), (128, 3, 4), (128, 2, 4), (64, 3, 3),
                                     (64, 2, 2), (256, 4, 2)])
def test_gpu_encode_matches_numpy(d, kb, vb):
    import cupy as cp

    from tqsearch.kvcache import CupyKVCache

    b, h, t = 2, 3, 150
    k = RNG.standard_normal((b, h, t, d)).astype(np.float32)
    v = RNG.standard_normal((b, h, t, d)).astype(np.float32)
    k[..., :4] += 20.0  # outlier channels
    n = [150, 61]
    for dtype in (np.float32, np.float16):
        gc = CupyKVCache(b, h, d, kb, vb, seed=9, capacity=10)
        kk, vv = k.astype(dtype), v.astype(dtype)
        gc.append(cp.asarray(kk[:, :, :100]), cp.asarray(vv[:, :, :100]), n_valid=[100, 61])
        gc.append(cp.asarray(kk[:, :, 100:]), cp.asarray(vv[:, :, 100:]), n_valid=[50, 0])
        got = gc.to_numpy()
        assert list(got.lengths) == n
        ref = NumpyKVCache(b, h, d, kb, vb, seed=9)
        ref.append(kk[:, :, :100], vv[:, :, :100], n_valid=[100, 61])
        ref.append(kk[:, :, 100:], vv[:, :, 100:], n_valid=[50, 0])
        assert np.allclose(got.key_offset, ref.key_offset, rtol=1e-5, atol=1e-5)
        for name in ("key", "value"):
            for i in range(b):
                m = n[i]
                a = getattr(got, f"{name}_codes")[i, :, :m]
                r = getattr(ref, f"{name}_codes")[i, :, :m]
                same_rows = np.all(a == r, axis=-1).mean()
                assert same_rows > 0.99, (name, dtype, same_rows)
                sa = getattr(got, f"{name}_scale")[i, :, :m]
                sr = getattr(ref, f"{name}_scale")[i, :, :m]
                assert np.allclose(sa, sr, rtol=2e-3)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "d,kb,vb,g,qdtype",
    [(128, 4, 4, 8, np.float16), (128, 3, 4, 8, np.float32), (128, 2, 4, 8, np.float16),
     (64, 4, 4, 3, np.float32), (64, 3, 3, 1, np.float16), (128, 4, 2, 16, np.float32),
     (128, 4, 4, 12, np.float16), (64, 2, 4, 20, np.float32), (256, 4, 4, 4, np.float32)],
)
def test_gpu_attention_matches_numpy_on_same_codes(d, kb, vb, g, qdtype):
    import cupy as cp

    from tqsearch.kvcache import CupyKVCache

    b, h = 4, 2
    lens = [3001, 1, 0, 517]
    t = max(lens)
    q, k, v = _peaked_inputs(RNG, b, h, t, d, g, sharp=1.0)
    ref = NumpyKVCache(b, h, d, kb, vb, seed=21)
    ref.append(k, v, n_valid=lens)
    gc = CupyKVCache.from_numpy(ref)
    want = ref.attention(q)
    for splits in (None, 1, 4, 7):
        got = cp.asnumpy(gc.attention(cp.asarray(q.astype(qdtype)), splits=splits))
        assert got.dtype == qdtype
        got = got.astype(np.float32)
        assert np.all(got[2] == 0)  # empty sequence
        rows = [0, 1, 3]
        scale = np.abs(want[rows]).max(axis=-1, keepdims=True)
        tol = 1e-2  # queries, centroids and weights enter the tensor cores as fp16
        err = np.abs(got[rows] - want[rows]) / scale
        assert err.max() < tol, (splits, err.max(axis=-1))


@pytest.mark.gpu
@gpu
def test_gpu_decode_loop_grows_and_tracks_numpy():
    import cupy as cp

    from tqsearch.kvcache import CupyKVCache

    b, h, d, g = 2, 2, 128, 8
    gc = CupyKVCache(b, h, d, 3, 4, seed=1, capacity=1)
    ref = NumpyKVCache(b, h, d, 3, 4, seed=1)
    for step in range(70):
        k = RNG.standard_normal((b, h, 1, d)).astype(np.float32)
        v = RNG.standard_normal((b, h, 1, d)).astype(np.float32)
        n = [1, step % 2]
        gc.append(cp.asarray(k), cp.asarray(v), n_valid=n)
        ref.append(k, v, n_valid=n)
    assert gc.capacity >= 70 and list(gc.lengths) == [70, 35]
    q = RNG.standard_normal((b, h * g, d)).astype(np.float32)
    got = cp.asnumpy(gc.attention(cp.asarray(q)))
    want = NumpyKVCache.attention(gc.to_numpy(), q)
    assert np.abs(got - want).max() < 5e-3 * np.abs(want).max()
    assert np.mean(_cos(got, ref.attention(q))) > 0.999


@pytest.mark.gpu
@gpu
def test_gpu_back_to_back_calls_match_plain_launches():
    # calls queued back to back (programmatic dependent launches where the device has them:
    # each call reuses the partials and counters the previous one wrote) give the results
    # of calls launched the ordinary way, one at a time
    import cupy as cp

    from tqsearch.kvcache import CupyKVCache, cupy_cache

    b, h, d, g = 3, 2, 128, 8
    lens = [2900, 700, 1500]
    q, k, v = _peaked_inputs(RNG, b, h, max(lens), d, g, sharp=1.0)
    ref = NumpyKVCache(b, h, d, 4, 4, seed=5)
    ref.append(k, v, n_valid=lens)
    caches = [CupyKVCache.from_numpy(ref) for _ in range(2)]
    qs = [cp.asarray((q * (1.0 + 0.5 * i)).astype(np.float16)) for i in range(4)]
    splits = (None, 5, 1, 9)
    pdl = cupy_cache._PDL
    try:
        cupy_cache._PDL = False
        want = []
        for i, qq in enumerate(qs):
            w = caches[i % 2].attention(qq, splits=splits[i])
            want.append(cp.asnumpy(w).astype(np.float32))
            cp.cuda.Device().synchronize()
        cupy_cache._PDL = pdl
        for _ in range(3):
            outs = [caches[i % 2].attention(qq, splits=splits[i]) for i, qq in enumerate(qs)]
            for o, w in zip(outs, want, strict=True):
                o = cp.asnumpy(o).astype(np.float32)
                assert np.abs(o - w).max() <= 1e-3 * np.abs(w).max()
    finally:
        cupy_cache._PDL = pdl
