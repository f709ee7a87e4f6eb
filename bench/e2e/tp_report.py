"""bench/e2e/tensor_parallel.py's outputs side by side: every row, then the issue's ratios
(N GPUs against 1 at the same per-GPU batch; RaaS against dense on the same sharding).

    python -m bench.e2e.tp_report bench/results/e2e/serving_tp_h200_*.json

Why a separate reader: each launch (1 GPU, 2 GPUs, 70B dense, 70B RaaS) is its own torchrun
call and file; the ratios only exist across files."""

from __future__ import annotations

import argparse
import json

from bench.e2e.serve_sizing import GIB


def load_rows(paths: list[str]) -> list[dict]:
    """Every row of every run in the files (a run appended twice keeps both)."""
    rows: list[dict] = []
    for path in paths:
        with open(path) as f:
            for run in json.load(f)["runs"]:
                rows.extend(run["rows"])
    return rows


def rows_table(rows: list[dict]) -> str:
    head = ("| model | GPUs | method | batch | tokens/s | ms/step | floor ms | KV GiB/GPU | "
            "peak GiB/GPU | graphs/rank | tokens_equal (first diff) |\n"
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["model"], r["method"], r["gpus"])):
        diff = r.get("tokens_first_difference")
        lines.append(
            f"| {r['model']} | {r['gpus']} | {r['method']} | {r['batch']} | "
            f"{r['tokens_per_s']:,.0f} | {r['step_ms']:.2f} | {r['floor_ms']:.2f} | "
            f"{r['kv_bytes_per_gpu'] / GIB:.2f} | {r['peak_gib_per_gpu']:.1f} | "
            f"{r.get('compiled_graphs_per_rank')} | {r['tokens_equal']}"
            f"{'' if diff is None else f' ({diff})'} |")
    return "\n".join(lines)


def scaling(rows: list[dict]) -> list[str]:
    """For each (model, method, batch) run on 1 GPU and on N: total tokens/s and KV bytes per
    GPU of N over 1."""
    out = []
    for one in (r for r in rows if r["gpus"] == 1):
        for many in (r for r in rows if r["gpus"] > 1 and r["model"] == one["model"]
                     and r["method"] == one["method"] and r["batch"] == one["batch"]):
            out.append(f"{one['model']} {one['method']} B={one['batch']}: {many['gpus']} GPUs "
                       f"vs 1: tokens/s {many['tokens_per_s'] / one['tokens_per_s']:.2f}x, "
                       f"KV bytes/GPU {many['kv_bytes_per_gpu'] / one['kv_bytes_per_gpu']:.3f}x")
    return out


def raas_vs_dense(rows: list[dict]) -> list[str]:
    """On each (model, GPUs) with both: RaaS's batch and total tokens/s over dense's."""
    out = []
    for raas in (r for r in rows if r["method"] == "raas"):
        for dense in (r for r in rows if r["method"] != "raas" and r["model"] == raas["model"]
                      and r["gpus"] == raas["gpus"]):
            out.append(f"{raas['model']} on {raas['gpus']} GPU(s): RaaS L={raas['L']} batch "
                       f"{raas['batch']} vs {dense['method']} {dense['batch']} "
                       f"({raas['batch'] / dense['batch']:.1f}x), tokens/s "
                       f"{raas['tokens_per_s']:,.0f} vs {dense['tokens_per_s']:,.0f} "
                       f"({raas['tokens_per_s'] / dense['tokens_per_s']:.2f}x)")
    return out


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="tensor_parallel --out files")
    rows = load_rows(p.parse_args(argv).paths)
    text = "\n".join([rows_table(rows), "", *scaling(rows), *raas_vs_dense(rows)])
    print(text)
    return text


if __name__ == "__main__":
    main()
