"""Time build variants of the decode-attention kernel on one shape (tuning aid).

Usage::

    python bench/kvcache/profile_attend.py --batch 64 --ctx 131072 \
        --variants 8,32,2,1 6,32,3,0        # warps,tile,stages,wide
    python bench/kvcache/profile_attend.py --batch 16 --ctx 32768 --once   # for ncu
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cupy as cp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_gpu import _clone_cache, gpu_time  # noqa: E402

from tqsearch.kvcache import CupyKVCache, cupy_cache  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--bits", default="4,4")
    ap.add_argument("--variants", nargs="*", default=["8,32,2,1"])
    ap.add_argument("--bw", type=float, default=4.52e12, help="read bandwidth, bytes/s")
    ap.add_argument("--once", action="store_true", help="three plain calls (for a profiler)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    kb, vb = map(int, args.bits.split(","))
    b, t, h, d, g = args.batch, args.ctx, 8, 128, 8
    rng = cp.random.default_rng(0)
    cache = CupyKVCache(b, h, d, kb, vb, capacity=t)
    for t0 in range(0, t, 16384):  # encode in slabs to bound memory
        n = min(16384, t - t0)
        k = rng.standard_normal((b, h, n, d), dtype=cp.float32).astype(cp.float16)
        v = rng.standard_normal((b, h, n, d), dtype=cp.float32).astype(cp.float16)
        cache.append(k, v)
    q = rng.standard_normal((b, h * g, d), dtype=cp.float32).astype(cp.float16)
    nbytes = b * h * t * cache.layout.bytes_per_token
    if args.once:
        for _ in range(3):
            cache.attention(q)
        cp.cuda.Device().synchronize()
        return
    reps = max(1, min(16, -(-4 * (60 << 20) // nbytes)))
    caches = [cache] + [_clone_cache(cache) for _ in range(reps - 1)]
    res = []
    for var in args.variants:
        nw, tt, ns, wide = map(int, var.split(","))
        cupy_cache._WARPS, cupy_cache._TILE = nw, tt
        cupy_cache._STAGES, cupy_cache._WIDE = ns, bool(wide)
        for c in caches:
            c._occ = {}
        try:
            us = gpu_time(lambda i: caches[i % reps].attention(q), 10, 3, nbytes / args.bw * 1e6)
        except Exception as exc:  # noqa: BLE001
            print(var, "failed:", repr(exc)[:300], flush=True)
            continue
        occ = caches[0]._occupancy(g, 1)
        frac = nbytes / (us * 1e-6) / args.bw
        print(f"warps={nw} tile={tt} stages={ns} wide={wide} B={b} ctx={t} bits={kb}/{vb}: "
              f"{us:.1f} us  {frac:.3f} of read bw  warps/SM={occ // 132}", flush=True)
        res.append({"warps": nw, "tile": tt, "stages": ns, "wide": wide, "batch": b, "context": t,
                    "key_bits": kb, "value_bits": vb, "us": us, "bw_frac": frac})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
