"""Decode-attention quality of the TurboQuant KV cache on real SmolLM2 attention tensors.

Reads the ``.npz`` written by ``capture_smollm2.py`` (post-RoPE queries, keys
and values of every layer of SmolLM2-135M-Instruct on real text). Each kept
query position ``t`` is a decode step over keys ``0..t`` (so one batch holds
sequences of different lengths). For every layer and key/value bit pair the
keys and values are coded with :class:`tqsearch.kvcache.NumpyKVCache` (the
reference implementation; the GPU kernels compute the same values), and the
decode attention output is compared with attention on the fp16 tensors:

* cosine similarity of the attention outputs (per layer, query head, query);
* top-8 recall: the fraction of the 8 most attended positions (fp16 logits)
  found among the 8 largest logits computed from the codes.

An fp8 (e4m3, per-tensor scale 1) cache is reported beside it when PyTorch is
installed. Usage::

    python bench/kvcache/quality_smollm2.py --data /tmp/smollm2_qkv.npz \
        --out bench/kvcache/quality_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from tqsearch.kvcache import NumpyKVCache, float_attention  # noqa: E402

TOPK = 8


def _cos(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)


def _topk_recall(ref_logits, logits, lengths, k=TOPK):
    """Mean |top-k(ref) & top-k(test)| / k over (query, head); -inf marks padding."""
    hits = []
    for i, n in enumerate(lengths):
        kk = min(k, int(n))
        r = np.argpartition(-ref_logits[i, :, :n], kk - 1, axis=-1)[:, :kk]
        t = np.argpartition(-logits[i, :, :n], kk - 1, axis=-1)[:, :kk]
        for h in range(r.shape[0]):
            hits.append(len(np.intersect1d(r[h], t[h])) / kk)
    return np.asarray(hits)


def exact_logits(q, k, lengths, scale):
    """(batch, q_heads, tokens) logits, -inf past each length; q (b, hq, d), k (b, h, t, d)."""
    b, h, t, d = k.shape
    g = q.shape[1] // h
    s = np.einsum("bhgd,bhtd->bhgt", q.reshape(b, h, g, d).astype(np.float64), k) * scale
    s = s.reshape(b, h * g, t)
    mask = np.arange(t)[None, :] >= np.asarray(lengths)[:, None]
    s[np.broadcast_to(mask[:, None, :], s.shape)] = -np.inf
    return s


def evaluate_layer(q, k, v, pos, scale, kb, vb, norm_correction=True, seed=0):
    """q (hq, nq, d), k/v (h, T, d) float16 of one layer -> per (query, head) metrics."""
    nq = q.shape[1]
    h, _, d = k.shape
    lengths = pos + 1
    t = int(lengths.max())
    k16 = k[:, :t].astype(np.float32)
    v16 = v[:, :t].astype(np.float32)
    qb = np.ascontiguousarray(q.transpose(1, 0, 2)).astype(np.float32)  # (nq, hq, d)
    one = NumpyKVCache(1, h, d, kb, vb, seed=seed, norm_correction=norm_correction)
    one.append(k16[None], v16[None])
    cache = NumpyKVCache(nq, h, d, kb, vb, seed=seed, norm_correction=norm_correction,
                         capacity=t)
    for name in ("key_codes", "value_codes", "key_scale", "value_scale"):
        getattr(cache, name)[:] = getattr(one, name)[:, :, :t]
    cache.lengths[:] = lengths
    kk = np.broadcast_to(k16[None], (nq, *k16.shape))
    vv = np.broadcast_to(v16[None], (nq, *v16.shape))
    ref = float_attention(qb, kk, vv, lengths, scale)
    out = cache.attention(qb, scale)
    cos = _cos(out.astype(np.float64), ref)
    ref_logits = exact_logits(qb, kk, lengths, scale)
    recall = _topk_recall(ref_logits, cache.logits(qb, scale), lengths)
    return cos.ravel(), recall


def evaluate_fp8_layer(q, k, v, pos, scale):
    import torch

    lengths = pos + 1
    t = int(lengths.max())
    f8 = torch.float8_e4m3fn
    k8 = torch.from_numpy(k[:, :t].astype(np.float32)).to(f8).to(torch.float32).numpy()
    v8 = torch.from_numpy(v[:, :t].astype(np.float32)).to(f8).to(torch.float32).numpy()
    nq = q.shape[1]
    qb = np.ascontiguousarray(q.transpose(1, 0, 2)).astype(np.float32)
    kk = np.broadcast_to(k[:, :t].astype(np.float32)[None], (nq, *k8.shape))
    vv = np.broadcast_to(v[:, :t].astype(np.float32)[None], (nq, *v8.shape))
    k8b = np.broadcast_to(k8[None], kk.shape)
    v8b = np.broadcast_to(v8[None], vv.shape)
    ref = float_attention(qb, kk, vv, lengths, scale)
    out = float_attention(qb, k8b, v8b, lengths, scale)
    recall = _topk_recall(exact_logits(qb, kk, lengths, scale),
                          exact_logits(qb, k8b, lengths, scale), lengths)
    return _cos(out, ref).ravel(), recall


def summarize(cos, rec):
    return {
        "cos_mean": float(np.mean(cos)), "cos_p01": float(np.quantile(cos, 0.01)),
        "cos_min": float(np.min(cos)), "top8_recall_mean": float(np.mean(rec)),
        "top8_recall_p05": float(np.quantile(rec, 0.05)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/smollm2_qkv.npz")
    ap.add_argument("--out", default=None)
    ap.add_argument("--queries", type=int, default=32, help="decode queries per layer (spaced)")
    ap.add_argument("--bits", nargs="*", default=["4,4", "3,4", "2,4"])
    ap.add_argument("--no-norm-correction", action="store_true")
    args = ap.parse_args(argv)
    z = np.load(args.data)
    q_all, k_all, v_all, q_pos = z["q"], z["k"], z["v"], z["q_pos"]
    scale = float(z["scaling"])
    n_layers, hq, nq_all, d = q_all.shape
    sel = np.linspace(0, nq_all - 1, min(args.queries, nq_all)).round().astype(int)
    pos = q_pos[sel]
    res = {"data": {"model": str(z["model"]), "sections": [str(s) for s in z["sections"]],
                    "layers": n_layers, "q_heads": hq, "kv_heads": k_all.shape[1],
                    "head_dim": d, "tokens": int(k_all.shape[2]),
                    "decode_queries_per_layer": len(sel),
                    "query_positions": [int(p) for p in pos]},
           "norm_correction": not args.no_norm_correction, "configs": {}}
    t0 = time.time()
    for bits in args.bits:
        kb, vb = map(int, bits.split(","))
        cos_all, rec_all, per_layer = [], [], []
        for li in range(n_layers):
            c, r = evaluate_layer(q_all[li][:, sel], k_all[li], v_all[li], pos, scale, kb, vb,
                                  norm_correction=not args.no_norm_correction)
            cos_all.append(c)
            rec_all.append(r)
            per_layer.append({"layer": li, **summarize(c, r)})
        cfg = summarize(np.concatenate(cos_all), np.concatenate(rec_all))
        cfg["per_layer"] = per_layer
        res["configs"][f"{kb}/{vb}"] = cfg
        print(f"{kb}/{vb}: cos mean {cfg['cos_mean']:.4f} p01 {cfg['cos_p01']:.4f} "
              f"min {cfg['cos_min']:.4f} | top-8 recall {cfg['top8_recall_mean']:.3f} "
              f"(p05 {cfg['top8_recall_p05']:.3f})  [{time.time() - t0:.0f}s]", flush=True)
    try:
        cos_all, rec_all = [], []
        for li in range(n_layers):
            c, r = evaluate_fp8_layer(q_all[li][:, sel], k_all[li], v_all[li], pos, scale)
            cos_all.append(c)
            rec_all.append(r)
        res["fp8_e4m3"] = summarize(np.concatenate(cos_all), np.concatenate(rec_all))
        f = res["fp8_e4m3"]
        print(f"fp8 e4m3: cos mean {f['cos_mean']:.4f} p01 {f['cos_p01']:.4f} | "
              f"top-8 recall {f['top8_recall_mean']:.3f}", flush=True)
    except ImportError:
        pass
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
        print("wrote", args.out)


if __name__ == "__main__":
    main()
