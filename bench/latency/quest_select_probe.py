"""Issue 15, lever 35: quest's select alone, two Triton kernels vs one CUDA C++ kernel.

python -m bench.latency.quest_select_probe [--out quest_select_probe.json]

Times raas_flex::quest_blocks's two CUDA bodies (CUDA-graph replays, median) at S = 9,217
slots (128k tokens, P = 16), k = 128 (L = 2048), 8 kv heads, batch 1, 8 and 32, on
Quest-like bounds (a binade or two wide), each checked to give the torch rule's visible,
and the one-launch body under 512 and 1,024 threads a row, and with warp-aggregated
histogram atomics.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.latency.decode_timing import graph_stats_ms, write_run
from raas_flex.policies import quest_select_cuda
from raas_flex.policies.keep_all_ops import quest_blocks_torch
from raas_flex.policies.keep_all_triton import quest_blocks_cuda


def rows_of(batch: int, S: int, gen: torch.Generator):
    """(scores, page_id, fill, current): every slot held but the last 15, bounds ~16 ± 2."""
    H = 8
    fill = torch.full((batch, H, S), 16, dtype=torch.int32, device="cuda")
    fill[..., -15:] = 0
    scores = 16 + 2 * torch.randn(batch, H, S, generator=gen, device="cuda")
    scores = torch.where(fill > 0, scores, float("-inf"))
    page_id = torch.argsort(torch.rand(batch, H, S, generator=gen, device="cuda"), dim=-1)
    page_id = torch.where(fill > 0, page_id, -1)
    current = torch.full((batch, H), S - 16, dtype=torch.int64, device="cuda")
    return scores, page_id, fill, current


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="quest_select_probe.json")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    S, k, rows = 9217, 128, []
    for batch in (1, 8, 32):
        inputs = rows_of(batch, S, gen)
        want = torch.zeros_like(inputs[2])
        quest_blocks_torch(*inputs, want, k)
        bodies = [("triton", quest_blocks_cuda, None, {})]
        bodies += [(f"one_launch_{t}{'_aggregate' if agg else ''}",
                    quest_select_cuda.quest_blocks_one_launch, t, {"AGGREGATE": 1} if agg else {})
                   for t, agg in ((1024, 0), (512, 0), (1024, 1))]
        # the kernel without its search (chooses nothing: same_as_torch False): its floor
        bodies += [("one_launch_1024_no_search", quest_select_cuda.quest_blocks_one_launch,
                    1024, {"PROBE_NO_SEARCH": 1})]
        for name, body, threads, defines in bodies:
            if threads:
                quest_select_cuda.THREADS = threads
                quest_select_cuda.DEFINES = defines
            visible = torch.zeros_like(inputs[2])
            body(*inputs, visible, k)
            same = bool(torch.equal(visible, want))
            us = graph_stats_ms(lambda: body(*inputs, visible, k))["median_ms"] * 1e3
            rows.append(dict(impl=name, batch=batch, median_us=us, same_as_torch=same))
            print(json.dumps(rows[-1]), flush=True)
        quest_select_cuda.THREADS, quest_select_cuda.DEFINES = 1024, {}
    write_run(args.out, "bench.latency.quest_select_probe", rows=rows)
    print("\nimpl              batch     us  same")
    for r in rows:
        print(f"{r['impl']:17s} {r['batch']:5d} {r['median_us']:6.1f}  {r['same_as_torch']}")


if __name__ == "__main__":
    main()
