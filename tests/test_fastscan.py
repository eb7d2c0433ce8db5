"""Blocked 4-bit fast scan: layout, and every SIMD variant against a NumPy reference."""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from tqsearch.kernels import fastscan, simd
from tqsearch.kernels.fastscan import BLOCK, lut_group, nibble_at, scan_block

VARIANTS = fastscan.VARIANTS
AVAILABLE = fastscan.available_variants()


def reference_sums(lut, nibbles):
    """S(v) = sum_m lut[m, nibbles[v, m]] in int64."""
    M = nibbles.shape[1]
    return lut[np.arange(M), nibbles].astype(np.int64).sum(axis=1)


def need(variant):
    if variant not in AVAILABLE:
        pytest.skip(f"this CPU cannot run the {variant} variant")
    return fastscan.kernels(variant)


def random_case(n, M, top, seed, nq=1):
    rng = np.random.default_rng(seed)
    nibbles = rng.integers(0, 16, (n, M), dtype=np.uint8)
    luts = rng.integers(0, top + 1, (nq, M, 16), dtype=np.uint8)
    luts[:, 0, 0] = top  # the group choice sees the stated maximum
    return nibbles, luts


# ---------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n, M", [(0, 3), (1, 1), (31, 2), (32, 4), (33, 7), (100, 16)])
def test_pack_unpack_roundtrip(n, M):
    nibbles, _ = random_case(n, M, 255, seed=n + M)
    blocked = fastscan.pack_blocked(nibbles)
    assert blocked.dtype == np.uint8 and blocked.flags.c_contiguous
    assert blocked.shape == (fastscan.n_blocks(n), 16 * M)
    assert blocked.nbytes == fastscan.n_blocks(n) * M * BLOCK // 2
    np.testing.assert_array_equal(fastscan.unpack_blocked(blocked, n, M), nibbles)


def test_layout_is_the_documented_one():
    n, M = 70, 3
    nibbles, _ = random_case(n, M, 255, seed=1)
    blocked = fastscan.pack_blocked(nibbles)
    v = np.arange(n)[:, None]
    m = np.arange(M)[None, :]
    r = v % 32
    byte = blocked[v // 32, 16 * m + 2 * (r % 8) + (r // 8) % 2]
    np.testing.assert_array_equal((byte >> (4 * (r // 16))) & 15, nibbles)
    # padding vectors of the last block are code 0
    full = fastscan.unpack_blocked(blocked, blocked.shape[0] * 32, M)
    assert not full[n:].any()


def test_append_blocked_equals_packing_everything():
    nibbles, _ = random_case(150, 5, 255, seed=2)
    for split in (0, 40, 64, 149):
        head = fastscan.pack_blocked(nibbles[:split])
        both = fastscan.append_blocked(head, split, nibbles[split:])
        np.testing.assert_array_equal(both, fastscan.pack_blocked(nibbles))


@njit(cache=True)
def _all_nibbles(blocked, n, M):
    out = np.empty((n, M), dtype=np.uint8)
    for v in range(n):
        for m in range(M):
            out[v, m] = nibble_at(blocked, M, v, m)
    return out


@pytest.mark.parametrize("M", [1, 4, 5, 8, 13, 26])
def test_vector_steps_round_trip_and_positions(M):
    # Full 64-byte steps regrouped per vector (byte 4 L + t <- byte 16 t + L), a
    # last partial step left canonical; nibble_at reads either order.
    rng = np.random.default_rng(M)
    nibbles = rng.integers(0, 16, (70, M)).astype(np.uint8)
    canonical = fastscan.pack_blocked(nibbles)
    regrouped = fastscan.to_vector_steps(canonical.copy())
    if M >= 4:
        step = canonical[0, :64]
        assert regrouped[0, 4 * 3 + 2] == step[16 * 2 + 3]
    np.testing.assert_array_equal(regrouped[:, 64 * (M // 4):], canonical[:, 64 * (M // 4):])
    np.testing.assert_array_equal(fastscan.to_canonical_steps(regrouped.copy()), canonical)
    got = np.array([[nibble_at(regrouped, M, v, m, True) for m in range(M)] for v in range(70)])
    np.testing.assert_array_equal(got, nibbles)


def test_nibble_at_reads_every_subcode():
    nibbles, _ = random_case(77, 9, 255, seed=3)
    blocked = fastscan.pack_blocked(nibbles)
    np.testing.assert_array_equal(_all_nibbles(blocked, 77, 9), nibbles)


def test_pack_rejects_bad_input():
    with pytest.raises(TypeError, match="astype"):
        fastscan.pack_blocked(np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="0..15"):
        fastscan.pack_blocked(np.full((4, 2), 16, dtype=np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        fastscan.pack_blocked(np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="16 \\* M"):
        fastscan.unpack_blocked(np.zeros((1, 32), dtype=np.uint8), 10, 3)


def test_lut_group_checks_the_grouped_rows():
    lut = np.zeros((16, 16), dtype=np.uint8)
    lut[:, 3] = 63
    assert lut_group(lut, 4) == lut_group(lut, 2) == 4  # 4 * 63 <= 255
    lut[:, 3] = 100
    assert lut_group(lut, 4) == 2  # pairs of rows sum to 200, fours to 400
    lut[:, 3] = 200
    assert lut_group(lut, 4) == 1
    # rows 0, 4, 8, 12 large: one lane of the 4-sub-code step holds all of them
    lut[:, 3] = 10
    lut[0::4, 5] = 200
    assert lut_group(lut, 4) == 1
    assert lut_group(lut, 2) == 2  # step 2: pairs are rows (0, 2), (4, 6), ...
    # fewer steps than a group: nothing is grouped, so any group is exact
    assert lut_group(np.full((7, 16), 255, np.uint8), 4) == 4


def turboquant_like_table(M, seed):
    """T[m, c] = y_m * centroid_c, the shape of a TurboQuant query table."""
    rng = np.random.default_rng(seed)
    centroids = np.sort(rng.standard_normal(16))
    return (rng.standard_normal(M)[:, None] * centroids[None, :]).astype(np.float32)


@pytest.mark.parametrize("step", [1, 2, 4])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_quantize_lut_meets_the_group_and_the_error_bound(group, step):
    M = 96
    T = turboquant_like_table(M, seed=group + 10 * step)
    L = np.empty((M, 16), dtype=np.uint8)
    scale, bias, err = fastscan.quantize_lut(T, L, group, step)
    assert lut_group(L, step) >= group
    nibbles, _ = random_case(500, M, 255, seed=11)
    exact = T[np.arange(M), nibbles].astype(np.float64).sum(axis=1)
    approx = scale * reference_sums(L, nibbles) + bias
    assert np.abs(approx - exact).max() <= err + 1e-6  # the error it reports bounds it
    assert err <= scale * M * fastscan.ROUNDING * (1 + 1e-9)
    if group == 1:
        assert L.max() == 255  # the plain 8-bit table uses the whole range


# ---------------------------------------------------------------------------------
# Scanners: every variant against the reference
# ---------------------------------------------------------------------------------

CASES = [
    # (n, M, largest table entry): partial blocks, M = 1, odd M, M not a multiple of
    # 4 (the 64-byte kernel's step), the three byte-grouping levels.
    (1, 1, 255),
    (31, 1, 63),
    (33, 3, 255),
    (64, 2, 127),
    (100, 5, 63),
    (257, 16, 255),
    (300, 37, 127),
    (96, 64, 63),
    (65, 133, 255),
]
# Largest tables at the top entry: overflow checks across many 16-bit flushes.
OVERFLOW_CASES = [(40, 1536, 255), (33, 4096, 255), (33, 4096, 127), (33, 4096, 63)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n, M, top", CASES + OVERFLOW_CASES)
def test_scan_blocked_matches_reference(variant, n, M, top):
    _, scan_blocked, _, _ = need(variant)
    nibbles, luts = random_case(n, M, top, seed=7 * n + M)
    if M >= 1536:
        luts[:] = top
    lut = luts[0]
    blocked = fastscan.pack_blocked(nibbles)
    expected = reference_sums(lut, nibbles)
    out = np.full(n, -1, dtype=np.int32)  # exact length: the last block goes via a copy
    scan_blocked(blocked, n, M, lut, out)
    np.testing.assert_array_equal(out, expected)
    padded = np.zeros(fastscan.n_blocks(n) * BLOCK, dtype=np.int32)
    scan_blocked(blocked, n, M, lut, padded)
    np.testing.assert_array_equal(padded[:n], expected)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n, M, top", CASES[2::2] + OVERFLOW_CASES[:1])
def test_scan_block_and_multi_match_reference(variant, n, M, top):
    scan_block_v, _, scan_block_multi, scan_blocked_multi = need(variant)
    nibbles, luts = random_case(n, M, top, seed=n * M, nq=3)  # a pair and a single
    if M >= 1536:
        luts[:] = top
    blocked = fastscan.pack_blocked(nibbles)
    nb = blocked.shape[0]
    expected = np.stack([reference_sums(lut, nibbles) for lut in luts])
    pad = np.zeros(nb * BLOCK - n, dtype=np.int64)
    padded_expected = [
        np.concatenate([e, pad + lut[:, 0].astype(np.int64).sum()])
        for e, lut in zip(expected, luts, strict=True)
    ]  # padding vectors are code 0

    out = np.zeros((3, n), dtype=np.int32)
    scan_blocked_multi(blocked, n, M, luts, out)
    np.testing.assert_array_equal(out, expected)

    out32 = np.zeros(BLOCK, dtype=np.int32)
    outq = np.zeros((3, BLOCK), dtype=np.int32)
    group = fastscan.luts_group(luts)
    for b in range(nb):
        scan_block_v(blocked, b, M, luts[0], out32, lut_group(luts[0]))
        np.testing.assert_array_equal(out32, padded_expected[0][b * 32 : (b + 1) * 32])
        scan_block_multi(blocked, b, M, luts, outq, group)
        for q in range(3):
            np.testing.assert_array_equal(outq[q], padded_expected[q][b * 32 : (b + 1) * 32])


def test_uint32_output():
    # one variant only: each output dtype is one more compilation
    nibbles, luts = random_case(50, 6, 255, seed=5)
    out = np.zeros(50, dtype=np.uint32)
    fastscan.scan_blocked(fastscan.pack_blocked(nibbles), 50, 6, luts[0], out)
    np.testing.assert_array_equal(out, reference_sums(luts[0], nibbles))


def test_scanners_reject_mismatched_shapes():
    nibbles, luts = random_case(40, 4, 255, seed=6)
    blocked = fastscan.pack_blocked(nibbles)
    with pytest.raises(ValueError, match="lut must have shape"):
        fastscan.scan_blocked(blocked, 40, 4, np.zeros((5, 16), np.uint8), np.zeros(40, np.int32))
    with pytest.raises(ValueError, match="16 \\* M"):
        fastscan.scan_blocked(blocked, 40, 3, luts[0, :3], np.zeros(40, np.int32))
    with pytest.raises(ValueError, match="out must hold"):
        fastscan.scan_blocked(blocked, 40, 4, luts[0], np.zeros(39, np.int32))
    with pytest.raises(ValueError, match="n exceeds"):
        fastscan.scan_blocked(blocked, 65, 4, luts[0], np.zeros(65, np.int32))
    with pytest.raises(ValueError, match="out must hold"):
        fastscan.check_block_args(blocked, 4, luts[0], np.zeros(31, np.int32))
    with pytest.raises(ValueError, match="lut must have shape"):
        fastscan.check_block_args(blocked, 4, luts[0, :3], np.zeros(32, np.int32))
    with pytest.raises(ValueError, match="luts must have shape"):
        fastscan.check_block_multi_args(blocked, 4, luts[:, :3], np.zeros((1, 32), np.int32))
    with pytest.raises(ValueError, match="out must have shape"):
        fastscan.check_block_multi_args(blocked, 4, luts, np.zeros((2, 32), np.int32))


# ---------------------------------------------------------------------------------
# Use from other kernels, code generation, variant choice
# ---------------------------------------------------------------------------------


@njit(cache=True)
def _best_by_blocks(blocked, n, M, lut):
    """A fused loop as the index writes it: scan block by block, keep the best."""
    sums = np.empty(BLOCK, dtype=np.int32)
    fastscan.check_block_args(blocked, M, lut, sums)
    group = lut_group(lut)
    best, arg = -1, -1
    for b in range(blocked.shape[0]):
        scan_block(blocked, b, M, lut, sums, group)
        for r in range(min(BLOCK, n - b * BLOCK)):
            if sums[r] > best:
                best, arg = sums[r], b * BLOCK + r
    # exact re-score of the winner straight from the blocked layout
    exact = np.int64(0)
    for m in range(M):
        exact += lut[m, nibble_at(blocked, M, arg, m)]
    return best, arg, exact


def test_scan_block_is_callable_from_a_cached_kernel():
    nibbles, luts = random_case(1000, 24, 255, seed=8)
    expected = reference_sums(luts[0], nibbles)
    best, arg, exact = _best_by_blocks(fastscan.pack_blocked(nibbles), 1000, 24, luts[0])
    assert (best, arg, exact) == (expected.max(), expected.argmax(), expected.max())


@pytest.mark.parametrize("variant, register", [("avx2", "ymm"), ("avx512", "zmm")])
def test_simd_variants_emit_vpshufb(variant, register):
    need(variant)
    fresh = njit(getattr(fastscan, f"scan_block_{variant}").py_func)  # uncached: asm available
    nibbles, luts = random_case(32, 8, 255, seed=9)
    fresh(fastscan.pack_blocked(nibbles), 0, 8, luts[0], np.zeros(32, np.int32), 1)
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert f"vpshufb\t%{register}" in asm


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="intrinsics need the compiler")
def test_intrinsics_refuse_a_target_without_the_instructions(monkeypatch):
    monkeypatch.setattr(simd, "target_features", lambda: set())
    assert fastscan.available_variants() == ("portable",)

    @njit
    def call(blocked, lut, out):
        simd.block_scan_avx2_g1(blocked, 0, 1, lut, 0, out, 0, 32)

    # 1-D codes: argument types no other test uses, so the typing is not cached
    with pytest.raises(TypingError, match="lacks avx2"):
        call(np.zeros(16, np.uint8), np.zeros(16, np.uint8), np.zeros(32, np.int32))


@pytest.mark.parametrize("forced", ["portable", "avx2", "bogus"])
def test_env_var_forces_the_variant(forced):
    if forced == "avx2":
        need("avx2")
    env = dict(os.environ, TQSEARCH_SIMD=forced)
    code = (
        "import warnings; warnings.simplefilter('error');\n"
        "try:\n from tqsearch.kernels import fastscan as f; print(f.VARIANT, f.scan_blocked is"
        " f.kernels(f.VARIANT)[1])\nexcept UserWarning as w: print('warned', w)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    if forced == "bogus":
        assert res.stdout.startswith("warned")
    else:
        assert res.stdout.split() == [forced, "True"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_scan_block_returns_the_block_maximum(variant):
    scan_block_v, _, _, _ = need(variant)
    nibbles, luts = random_case(64, 7, 255, seed=10)
    blocked = fastscan.pack_blocked(nibbles)
    expected = reference_sums(luts[0], nibbles)
    out32 = np.zeros(BLOCK, dtype=np.int32)
    for b in range(2):
        top = scan_block_v(blocked, b, 7, luts[0], out32, 1)
        assert top == expected[b * 32 : (b + 1) * 32].max() == out32.max()


@pytest.mark.parametrize("variant", VARIANTS)
def test_grouping_beyond_the_uniform_bound_is_exact(variant):
    _, scan_blocked, _, scan_blocked_multi = need(variant)
    step = fastscan.STEPS[variant]
    M, n = 136, 300
    L = np.empty((2, M, 16), dtype=np.uint8)
    for q in range(2):
        fastscan.quantize_lut(turboquant_like_table(M, seed=q), L[q], 4, step)
    assert L.max() > 63 and lut_group(L[0], step) == 4 and fastscan.luts_group(L, step) == 4
    nibbles, _ = random_case(n, M, 255, seed=12)
    blocked = fastscan.pack_blocked(nibbles)
    out = np.zeros((2, n), dtype=np.int32)
    scan_blocked(blocked, n, M, L[0], out[0])
    np.testing.assert_array_equal(out[0], reference_sums(L[0], nibbles))
    scan_blocked_multi(blocked, n, M, L, out)
    for q in range(2):
        np.testing.assert_array_equal(out[q], reference_sums(L[q], nibbles))


def _filter_runner(filter_one, filter_two):
    """Each block's masks, as the scan gets them: a filter goes from block to block
    until one has a row that passes, which it returns; the scan resumes after it.
    Blocks it passes over get 0; ``out[2]`` counts the calls."""
    def each_block(scan, i):
        @njit
        def run(blocked, M, luts, norms, gains, form, params, out):
            hit = np.zeros(1, dtype=np.int64)
            nb = blocked.shape[0]
            b = scan(blocked, 0, nb, M, luts, 0, norms, gains, form, params, hit)
            out[2, i] = 1
            while b < nb:
                out[i, b] = hit[0]
                b = scan(blocked, b + 1, nb, M, luts, 0, norms, gains, form, params, hit)
                out[2, i] += 1
        return run

    one, two = each_block(filter_one, 0), each_block(filter_two, 1)

    def run(blocked, M, luts, norms, gains, form_array, params, out):
        form = tuple(np.float32(v) for v in form_array)
        out[:] = 0
        one(blocked, M, luts, norms, gains, form, params, out)
        two(blocked, M, luts, norms, gains, form, params, out)
    return run


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stored", ["norms and gains", "stand-ins"])
def test_filter_masks_equal_the_float_bound(variant, stored):
    # Every variant forms fa = pre * norm * gain, fc = dist * norm^2 (zero vectors,
    # flagged by a negative norm: fa = 0, fc = 16) and tests fa * x - fc > threshold.
    need(variant)
    rng = np.random.default_rng(5)
    n, M = 96, 9
    nibbles, luts = random_case(n, M, 15, seed=6, nq=2)
    blocked = fastscan.pack_blocked(nibbles)
    if stored == "norms and gains":
        norms = rng.uniform(0.5, 2.0, n).astype(np.float32)
        norms[[3, 40]] *= -1
        gains = rng.integers(12000, 20000, n).astype(np.uint16)
        form = np.array([2.0 / 16384, 1.0, 1.0, 1.0], dtype=np.float32)
    else:
        norms = np.ones(32, dtype=np.float32)
        gains = np.full(32, 16384, dtype=np.uint16)
        form = np.array([1.0 / 16384, 0.0, 0.0, 0.0], dtype=np.float32)
    rows = np.arange(n) if stored == "norms and gains" else np.arange(n) % 32
    nv, gv = norms[rows], gains[rows].astype(np.float32)
    fa = np.where(nv < 0, 0, form[0] * nv * gv).astype(np.float32)
    fc = np.where(nv < 0, 16, form[1] * nv * nv).astype(np.float32)
    sums = [reference_sums(luts[q], nibbles).astype(np.float32) for q in range(2)]
    params = np.array([0.5, 0.01, 1.0, -0.3, 0.02, 0.8], dtype=np.float32)
    # and thresholds only each table's best block reaches: the scan passes over the others
    best = [(fa * (params[3 * q] + params[3 * q + 1] * sums[q]) - fc).reshape(-1, 32).max(1)
            for q in range(2)]
    cut = params.copy()
    cut[[2, 5]] = [np.sort(v)[-2] for v in best]
    one, two = fastscan.filter_kernels(variant)
    run = _filter_runner(one, two)
    out = np.zeros((3, blocked.shape[0]), dtype=np.int64)
    for p in (params, cut):
        run(blocked, M, luts, norms, gains, form, p, out)
        passing = np.zeros((2, blocked.shape[0]), dtype=bool)
        for q in range(2):
            x = p[3 * q] + p[3 * q + 1] * sums[q]
            want = (fa * x - fc > p[3 * q + 2]).reshape(-1, 32)
            passing[q] = want.any(axis=1)
            for b in range(blocked.shape[0]):
                got_one = [(int(out[0, b]) >> r) & 1 for r in range(32)] if q == 0 else None
                got_two = [(int(out[1, b]) >> (32 * q + r)) & 1 for r in range(32)]
                expected = want[b].astype(int).tolist()
                if got_one is not None:
                    assert got_one == expected
                assert got_two == expected
        # one call per block with a passing row, and one that runs off the end
        assert out[2, 0] == passing[0].sum() + 1
        assert out[2, 1] == passing.any(axis=0).sum() + 1
    assert not passing.all()


def _row_factors(n, stored, seed):
    """Norms, gains and form of ``n`` rows, and the factors ``fa``, ``fc`` the filter
    forms: shared stand-ins, or per-row factors in the distance form with a zero
    vector (negative norm) among them."""
    if stored == "none":
        norms, gains = np.ones(32, np.float32), np.full(32, 16384, np.uint16)
        form = np.array([1 / 16384, 0, 0, 0], np.float32)
    else:
        rng = np.random.default_rng(seed)
        norms = rng.uniform(0.5, 2.0, n).astype(np.float32)
        norms[3] = -1.0
        gains = rng.integers(12000, 20000, n).astype(np.uint16)
        form = np.array([2 / 16384, 1, 1, 1], np.float32)
    rows = np.arange(n) if stored != "none" else np.arange(n) % 32
    nv, gv = norms[rows], gains[rows].astype(np.float32)
    fa = np.where(nv < 0, 0, (form[0] * nv) * gv).astype(np.float32)
    fc = np.where(nv < 0, 16, (form[1] * nv) * nv).astype(np.float32)
    return norms, gains, form, fa, fc


@pytest.mark.skipif(not fastscan.DOT_AVAILABLE, reason="no AVX-512 VNNI/VBMI here")
@pytest.mark.parametrize("M", [2, 5, 12, 13, 14, 15, 16, 19])
@pytest.mark.parametrize("stored", ["none", "norms and gains"])
def test_dot_filter_masks_equal_integer_dot_products(M, stored):
    # Int8 weights against int8 levels of 4-bit codes, eight queries a pass and
    # one at a time (its full steps alternate between two accumulator chains:
    # M // 4 odd and even, M % 4 from 0 to 3): bit r of a query's mask is set iff
    # its bound fa * dot - fc exceeds t.
    @njit
    def run(blocked, M, w, levels, biases, norms, gains, form_array, params, masks, sums,
            eights, out, out_sums):
        form = (form_array[0], form_array[1], form_array[2], form_array[3])
        for b in range(blocked.shape[0]):
            sums[:] = -1
            if eights:
                simd.block_dot_filter_q8(blocked, b, M, w, 0, levels, biases, norms, gains,
                                         form, params, masks, sums)
            else:
                for q in range(8):
                    simd.block_dot_filter_q1(blocked, b, M, w, q, levels, biases, norms, gains,
                                             form, params, masks, sums)
            out[:, b] = masks
            out_sums[:, 32 * b: 32 * b + 32] = sums

    rng = np.random.default_rng(M)
    n = 96
    nibbles = rng.integers(0, 16, (n, M)).astype(np.uint8)
    blocked = fastscan.to_vector_steps(fastscan.pack_blocked(nibbles))  # as stores keep it
    weights = np.zeros((8, -(-M // 4) * 4), np.int8)
    weights[:, :M] = rng.integers(-127, 128, (8, M))
    levels = rng.integers(1, 256, 16).astype(np.uint8)
    biases = (128 * weights.astype(np.int64).sum(1)).astype(np.int32)
    dots = ((levels.astype(np.int64) - 128)[nibbles][None] * weights[:, None, :M]).sum(-1)
    norms, gains, form, fa, fc = _row_factors(n, stored, M)
    for eights in (True, False):
        for t in (-9000.0, -100.0, 0.0, 2500.0):
            params = np.tile(np.array([0.0, 1.0, t], np.float32), 8)
            out = np.zeros((8, blocked.shape[0]), np.int64)
            out_sums = np.zeros((8, n), np.int32)
            run(blocked, M, weights, levels, biases, norms, gains, form, params,
                np.zeros(8, np.int64), np.zeros((8, 32), np.int32), eights, out, out_sums)
            for q in range(8):
                expected = fa * dots[q].astype(np.float32) - fc > np.float32(t)
                _assert_block_outputs(out[q], out_sums[q], expected, dots[q])


@pytest.mark.skipif(not fastscan.DOT_AVAILABLE, reason="no AVX-512 VNNI/VBMI here")
@pytest.mark.parametrize("M", [1, 4, 13, 14, 15, 40])
@pytest.mark.parametrize("stored", ["none", "norms and gains"])
def test_perm_filter_masks_equal_table_sums(M, stored):
    # 64-byte table lookups summed by byte dot products, eight queries a pass and
    # one at a time: bit r of a query's mask is set iff its bound fa * sum - fc
    # exceeds t (full 8-bit tables; M % 4 != 0: a partial last step).
    @njit
    def run(blocked, M, luts, norms, gains, form_array, params, masks, sums, eights, out,
            out_sums):
        form = (form_array[0], form_array[1], form_array[2], form_array[3])
        for b in range(blocked.shape[0]):
            sums[:] = -1
            if eights:
                simd.block_perm_filter_q8(blocked, b, M, luts, 0, norms, gains, form, params,
                                          masks, sums)
            else:
                for q in range(8):
                    simd.block_perm_filter_q1(blocked, b, M, luts, q, norms, gains, form,
                                              params, masks, sums)
            out[:, b] = masks
            out_sums[:, 32 * b: 32 * b + 32] = sums

    rng = np.random.default_rng(M)
    n = 96
    nibbles = rng.integers(0, 16, (n, M)).astype(np.uint8)
    nibbles[:5] = 15
    luts = rng.integers(0, 256, (8, M, 16)).astype(np.uint8)
    luts[:, :, 15] = 255  # the largest sums: nothing wraps
    blocked = fastscan.to_vector_steps(fastscan.pack_blocked(nibbles))  # as stores keep it
    sums = np.stack([reference_sums(luts[q], nibbles) for q in range(8)]).astype(np.float32)
    norms, gains, form, fa, fc = _row_factors(n, stored, M)
    offset, scale = np.float32(-100.0), np.float32(0.5)
    rows = fa * (offset + scale * sums) - fc
    for eights in (True, False):
        for t in np.percentile(rows, [1, 50, 99, 100]):
            params = np.tile(np.array([offset, scale, t], np.float32), 8)
            out = np.zeros((8, blocked.shape[0]), np.int64)
            out_sums = np.zeros((8, n), np.int32)
            run(blocked, M, luts, norms, gains, form, params, np.zeros(8, np.int64),
                np.zeros((8, 32), np.int32), eights, out, out_sums)
            for q in range(8):
                _assert_block_outputs(out[q], out_sums[q], rows[q] > np.float32(t), sums[q])


def _assert_block_outputs(masks, got, passes, want):
    """Row ``r``'s mask bit is ``passes[r]``, and a block's integer sums are written,
    in row order, exactly when a row passed."""
    bits = [(int(masks[r // 32]) >> (r % 32)) & 1 for r in range(len(passes))]
    assert bits == np.asarray(passes).astype(int).tolist()
    for b, mask in enumerate(masks):
        block = got[32 * b: 32 * b + 32]
        if mask:
            np.testing.assert_array_equal(block, want[32 * b: 32 * b + 32])
        else:
            assert np.all(block == -1)
