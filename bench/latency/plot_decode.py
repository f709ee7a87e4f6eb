"""Latency vs context N per method, from a decode_latency JSON (batch 1, L=2048, P=16)."""

from __future__ import annotations

import json
import sys


def plot(json_path: str, png_path: str, batch: int = 1, budget: int = 2048,
         page: int = 16) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(json_path) as f:
        data = json.load(f)
    series: dict[str, list[tuple[int, float]]] = {}
    for r in data["rows"]:
        if (not r["median_ms"] or r["batch"] != batch or r["L"] not in (None, budget)
                or r["page_size"] not in (None, page)):
            continue
        series.setdefault(r["method"], []).append((r["N"], r["median_ms"] * 1e3))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context N (tokens seen)")
    ax.set_ylabel("decode step, one layer (us)")
    ax.set_title(f"{data['device']}: batch {batch}, L={budget}, P={page}, bf16, 32q/8kv heads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


if __name__ == "__main__":
    plot(sys.argv[1], sys.argv[2])
