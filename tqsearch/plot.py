"""Recall-versus-speed figure of one benchmark result (matplotlib, Agg backend)."""

from __future__ import annotations

import os

__all__ = ["plot_recall_qps"]

_MARKERS = {"tqsearch": "o", "faiss": "s", "turbovec": "^"}


def plot_recall_qps(result: dict, path: str | os.PathLike, *, threads: str | None = None) -> str:
    """Draw recall@k against QPS (log scale), one point per method and bit width.

    Parameters
    ----------
    result : dict
        What :func:`tqsearch.bench.run_dataset` returns.
    path : str or path-like
        PNG file to write.
    threads : str, optional
        Thread label whose QPS is plotted (``"1"``, ``"all"``, ...); the first
        one measured by default.

    Returns
    -------
    str
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    meta = result["meta"]
    label = threads or next(iter(meta["threads"]))
    key = f"qps_{label}"
    groups: dict[str, list[tuple[float, float, int, str]]] = {}
    for r in result["rows"]:
        if r["status"] != "ok" or r.get(key) is None or r.get("recall") is None:
            continue
        fam_label = r["method"] if r["library"] != "faiss" else _strip_bits(r["method"], r["bits"])
        groups.setdefault(fam_label, []).append((r[key], r["recall"], r["bits"], r["library"]))

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    tab10, tab20 = plt.get_cmap("tab10"), plt.get_cmap("tab20")
    for i, (name, pts) in enumerate(sorted(groups.items())):
        color = tab10(i) if i < 10 else tab20((2 * (i - 10) + 1) % 20)
        pts.sort(key=lambda p: p[2])
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        lib = pts[0][3]
        ax.plot(xs, ys, marker=_MARKERS.get(lib, "x"), color=color,
                lw=2.2 if lib == "tqsearch" else 1.0, label=name)
        for x, y, b, _ in pts:
            ax.annotate(f"{b}b", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"queries per second ({'all' if label == 'all' else label} thread(s), log)")
    ax.set_ylabel(f"recall@{meta['k']}")
    ax.set_title(f"{meta['dataset']} ({meta['n_train']:,} x {meta['d']}, {meta['metric']})")
    ax.grid(True, which="both", alpha=0.3)
    if groups:
        ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def _strip_bits(factory: str, bits: int) -> str:
    """``"RR50,RaBitQfs4"`` -> ``"RaBitQfs{b}"`` so bit widths share a line."""
    last = factory.split(",")[-1]
    if last.startswith("PQ"):
        return "PQ x" + last.split("x", 1)[1]
    suffix = str(bits)
    return (last[: -len(suffix)] if last.endswith(suffix) else last) + "{b}"
