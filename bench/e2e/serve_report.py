"""bench/e2e/serve.py's outputs: the tokens/s-vs-length plot and the console/Markdown table."""

from __future__ import annotations

SERIES_STYLE = {"budget": "-", "equal_batch": ":"}


def label(row: dict) -> str:
    name = row["method"] + (f" L={row['L']}" if row["L"] else "")
    if row.get("dense_compile") == "dynamic":
        name += " (dynamic batch: main flex kernel)"
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


def best_dense(rows: list[dict], row: dict) -> dict | None:
    """The fastest dense row of the same model and length (and, for the equal-batch series,
    the same batch): what a RaaS row is compared with."""
    same = [d for d in rows if d["model"] == row["model"] and d["L"] is None
            and d["decode_tokens"] == row["decode_tokens"]
            and (d["batch"] == row["batch"] if row["series"] == "equal_batch"
                 else d["series"] == "budget")]
    return max(same, key=lambda d: d["tokens_per_s"], default=None)


def table(rows: list[dict]) -> str:
    """Markdown table of every row, with RaaS's ratio to best_dense (budget series: tokens/s
    and KV bytes per sequence; equal batch: step time)."""
    head = ("| model | N | method | series | batch | tokens/s | per seq | ms/step | floor ms | "
            "KV/seq MiB | peak GiB | vs dense |\n|" + "---|" * 12)
    lines = [head]
    for r in rows:
        dense = best_dense(rows, r)
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


def main(argv=None) -> None:
    """Plot and tabulate the rows of one or more serving JSONs together (runs split across
    device calls):  python -m bench.e2e.serve_report A.json B.json --out serving_h200_tps.png"""
    import argparse
    import json
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", required=True, help="PNG path")
    args = parser.parse_args(argv)
    results = [json.load(open(path)) for path in args.files]
    rows = [row for result in results for row in result["rows"]]
    budgets = {row["kv_budget_gib"] for row in rows}
    if len(budgets) != 1:
        raise ValueError(f"the files mix KV budgets {sorted(budgets)}; plot one budget at a time.")
    plot(rows, args.out, results[0]["device"], budgets.pop())
    print(table(rows))


if __name__ == "__main__":
    main()
