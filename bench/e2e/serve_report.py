"""bench/e2e/serve.py's outputs: the tokens/s-vs-length plot and the console/Markdown table."""

from __future__ import annotations

SERIES_STYLE = {"budget": "-", "equal_batch": ":"}


def label(row: dict) -> str:
    name = row["method"] + (f" L={row['L']}" if row["L"] else "")
    return name + (" (equal batch)" if row["series"] == "equal_batch" else "")


def plot(rows: list[dict], path: str, device: str, budget_gib: float) -> None:
    """Total decoded tokens/s vs decode length, one line per (model, method, L); budget
    series solid, the equal-batch series dotted. Log-scale y (the methods differ by 10×+)."""
    if not rows:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        for name in sorted({label(r) for r in mine}):
            pts = sorted((r["decode_tokens"], r["tokens_per_s"], r["batch"], r["series"])
                         for r in mine if label(r) == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], SERIES_STYLE[pts[0][3]],
                    marker="o", label=name)
            for x, y, b, _ in pts:
                ax.annotate(f"B={b}", (x, y), fontsize=7, textcoords="offset points",
                            xytext=(3, 3))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("decode length (tokens)")
        ax.set_ylabel("total decoded tokens/s")
        ax.set_title(f"{model}: {budget_gib:g} GiB KV budget, {device}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    """Markdown table of every row, with RaaS's ratio to the dense row of the same model,
    length and series (budget: tokens/s; equal batch: step time)."""
    head = ("| model | N | method | series | batch | tokens/s | per seq | ms/step | floor ms | "
            "KV/seq MiB | peak GiB | vs dense |\n|" + "---|" * 12)
    lines = [head]
    for r in rows:
        dense = next((d for d in rows if d["model"] == r["model"] and d["L"] is None
                      and d["decode_tokens"] == r["decode_tokens"] and d["batch"] == r["batch"]
                      ) if r["series"] == "equal_batch" else
                     (d for d in rows if d["model"] == r["model"] and d["L"] is None
                      and d["decode_tokens"] == r["decode_tokens"] and d["series"] == "budget"),
                     None)
        ratio = ""
        if dense is not None and r["L"] is not None:
            ratio = (f"{dense['step_ms'] / r['step_ms']:.2f}× faster step"
                     if r["series"] == "equal_batch" else
                     f"{r['tokens_per_s'] / dense['tokens_per_s']:.1f}× tok/s, "
                     f"{dense['kv_bytes_per_seq'] / r['kv_bytes_per_seq']:.1f}× less KV")
        floor = f"{r['floor_ms']:.2f}" if r.get("floor_ms") else "-"
        lines.append(f"| {r['model']} | {r['decode_tokens']} | {label(r)} | {r['series']} | "
                     f"{r['batch']} | {r['tokens_per_s']:.0f} | {r['per_seq_tokens_per_s']:.1f} "
                     f"| {r['step_ms']:.2f} | {floor} | {r['kv_bytes_per_seq'] / 2**20:.1f} | "
                     f"{r['peak_gib']:.1f} | {ratio} |")
    return "\n".join(lines)
