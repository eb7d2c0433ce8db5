"""Time build variants and split counts of the decode-attention kernel (tuning aid).

Usage::

    python bench/kvcache/profile_attend.py --shapes 16x8192 1x131072 \
        --variants 12,32,2,1 16,32,2,1 --splits 0 8 32   # warps,tile,stages,wide; 0 = planned
    python bench/kvcache/profile_attend.py --shapes 4x32768 --variants 12,32,2,1,0 12,32,2,1,1
        # fifth field: programmatic dependent launch off (0) or on (1, the default)
    python bench/kvcache/profile_attend.py --shapes 16x32768 --once   # for a profiler
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
from tqsearch.kvcache.plan import plan_splits  # noqa: E402


def _cache(b, t, kb, vb, h=8, d=128):
    rng = cp.random.default_rng(0)
    cache = CupyKVCache(b, h, d, kb, vb, capacity=t)
    for t0 in range(0, t, 16384):  # encode in slabs to bound memory
        n = min(16384, t - t0)
        k = rng.standard_normal((b, h, n, d), dtype=cp.float32).astype(cp.float16)
        v = rng.standard_normal((b, h, n, d), dtype=cp.float32).astype(cp.float16)
        cache.append(k, v)
    return cache


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="*", default=["16x32768"], help="BATCHxCONTEXT")
    ap.add_argument("--bits", default="4,4")
    ap.add_argument("--variants", nargs="*", default=["12,32,2,1"])
    ap.add_argument("--splits", nargs="*", type=int, default=[0], help="0: the planned count")
    ap.add_argument("--bw", type=float, default=4.58e12, help="read bandwidth, bytes/s")
    ap.add_argument("--once", action="store_true", help="three plain calls (for a profiler)")
    ap.add_argument("--stream", action="store_true", help="run on a new non-blocking stream")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.stream:
        with cp.cuda.Stream(non_blocking=True):
            return _run(args)
    return _run(args)


def _run(args):
    kb, vb = map(int, args.bits.split(","))
    h, d, g = 8, 128, 8
    res = []
    for shape in args.shapes:
        b, t = map(int, shape.split("x"))
        cache = _cache(b, t, kb, vb, h, d)
        q = cp.random.default_rng(1).standard_normal((b, h * g, d), dtype=cp.float32)
        q = q.astype(cp.float16)
        nbytes = b * h * t * cache.layout.bytes_per_token
        if args.once:
            for _ in range(3):
                cache.attention(q)
            cp.cuda.Device().synchronize()
            continue
        reps = max(1, min(16, -(-4 * (60 << 20) // nbytes)))
        caches = [cache] + [_clone_cache(cache) for _ in range(reps - 1)]
        for var in args.variants:
            nw, tt, ns, wide, pdl = (list(map(int, var.split(","))) + [1])[:5]
            cupy_cache._WARPS, cupy_cache._TILE = nw, tt
            cupy_cache._STAGES, cupy_cache._WIDE = ns, bool(wide)
            cupy_cache._PDL = bool(pdl)
            for c in caches:
                c._occ = {}
            try:
                blocks = caches[0]._occupancy(g, 1)
                warps = caches[0]._attend_fn(g, 1)[2]
            except Exception as exc:  # noqa: BLE001
                print(var, "failed:", repr(exc)[:300], flush=True)
                continue
            planned = plan_splits(b, h, t, blocks, warps, cache.layout.bytes_per_token,
                                  g * d * 4, tile=tt)[0]
            for s in args.splits:
                sp = s or None
                def call(i, sp=sp, cs=caches, qq=q):
                    return cs[i % len(cs)].attention(qq, splits=sp)

                us = gpu_time(call, 10, 3, nbytes / args.bw * 1e6)
                frac = nbytes / (us * 1e-6) / args.bw
                print(f"B={b} ctx={t} bits={kb}/{vb} warps={nw} tile={tt} stages={ns} "
                      f"wide={wide} pdl={pdl} splits={s or planned}"
                      f"{'' if s else ' (planned)'}{' stream' if args.stream else ''}: "
                      f"{us:.1f} us  {frac:.3f} of read bw  blocks/SM={blocks // 132}",
                      flush=True)
                res.append({"warps": nw, "tile": tt, "stages": ns, "wide": wide, "pdl": pdl,
                            "stream": args.stream, "batch": b,
                            "context": t, "key_bits": kb, "value_bits": vb,
                            "splits": s or planned, "us": us, "bw_frac": frac})
        caches = cache = None
        cp.get_default_memory_pool().free_all_blocks()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
