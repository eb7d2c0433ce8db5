"""Render the KV-cache benchmark JSON files as Markdown tables.

Usage::

    python bench/kvcache/tables.py bench/kvcache/results_h200.json \
        bench/kvcache/quality_smollm2.json
"""

from __future__ import annotations

import json
import sys


def speed_table(res: dict) -> str:
    env, bw = res["env"], res["bandwidth"]
    best = bw["best_read_bytes_per_s"]
    out = [
        f"GPU {env['gpu']} ({env['nvidia_smi']}), CUDA driver {env['cuda_driver_version']}, "
        f"CuPy {env['cupy']}, PyTorch {env['torch']}; command `{env['command']}`, "
        f"{env['date_utc']}.",
        f"Read bandwidth: {bw['read_bytes_per_s'] / 1e12:.2f} TB/s (read kernel), best read "
        f"rate seen {best / 1e12:.2f} TB/s (used below); KV heads 8, 8 query heads per KV "
        "head, head_dim 128; times are GPU microseconds per decode-attention call.",
        "",
        "| context | batch | bits K/V | fp16 SDPA us | fp16 % BW | TQ us | TQ % BW | x fp16 "
        "| fp8 floor us | x fp8 floor | cos vs fp16 |",
        "|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        fp16_bw = r["fp16_bytes"] / (r["fp16_us"] * 1e-6) / best
        out.append(
            f"| {r['context']} | {r['batch']} | {r['key_bits']}/{r['value_bits']} "
            f"| {r['fp16_us']:.1f} | {100 * fp16_bw:.0f} | {r['tq_us']:.1f} "
            f"| {100 * r['tq_bw_frac_of_best']:.0f} | {r['speedup_vs_fp16']:.2f} "
            f"| {r['fp8_floor_us_at_best']:.1f} | {r['speedup_vs_fp8_floor_at_best']:.2f} "
            f"| {r['cos_vs_fp16']:.4f} |"
        )
    return "\n".join(out)


def quality_table(res: dict) -> str:
    d = res["data"]
    out = [
        f"{d['model']}: {d['layers']} layers x {d['q_heads']} query heads, "
        f"{d['kv_heads']} KV heads, head_dim {d['head_dim']}, {d['tokens']} tokens of "
        f"CPython reference-doc prose; {d['decode_queries_per_layer']} decode queries per "
        f"layer at positions {d['query_positions'][0]}..{d['query_positions'][-1]}.",
        "",
        "| K/V bits | cosine mean | cosine p01 | top-8 recall mean | top-8 recall p05 |",
        "|:---:|---:|---:|---:|---:|",
    ]
    rows = list(res["configs"].items())
    if "fp8_e4m3" in res:
        rows.append(("fp8 e4m3 (reference)", res["fp8_e4m3"]))
    for name, c in rows:
        out.append(f"| {name} | {c['cos_mean']:.4f} | {c['cos_p01']:.4f} "
                   f"| {c['top8_recall_mean']:.3f} | {c['top8_recall_p05']:.3f} |")
    return "\n".join(out)


def main(paths):
    for p in paths:
        with open(p) as f:
            res = json.load(f)
        print(speed_table(res) if "rows" in res else quality_table(res))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
