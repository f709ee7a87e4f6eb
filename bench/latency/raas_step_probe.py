"""Issue 15, lever 36: raas's fused bookkeeping kernel alone, and where its time goes.

python -m bench.latency.raas_step_probe [--out raas_step_probe.json]

Times raas_flex::raas_bookkeeping's CUDA kernel (raas_step.cu; CUDA-graph replays, L2
flushed before each, median) over a RaaS pool that has seen 4k tokens (L = 2048, P = 16:
128 slots, 8 kv heads, 4 query heads each, bf16) at batch 1, 8 and 32: as shipped (a
cluster of 4 blocks a row where the rows' blocks fit the GPU at once, raas_step_layout.row_blocks),
with one or two blocks a row, and with parts left out
(raas_step.cu's PROBE: +1 no arrival count, +2 no bound sums, +4 no rank, 8 the launch
alone). (The second version, one block a row, took 12.0 µs with 1,024 threads against 12.4
with 512 at batch 1: raas_step_probe_h200_v2.json.)
"""

from __future__ import annotations

import argparse
import json

import torch

import raas_flex as rf
from bench.latency.decode_state import seen_cache
from bench.latency.decode_timing import graph_stats_ms, write_run
from raas_flex.policies import raas_step_cuda, raas_step_layout

DEFAULT_BLOCKS = raas_step_layout.CLUSTER_BLOCKS

# (name, raas_step.cu -D settings, blocks per row)
VARIANTS = [("shipped", {}, 4), ("one_block", {}, 1), ("two_blocks", {}, 2),
            ("no_arrival", {"PROBE": 1}, 4), ("no_bound_sums", {"PROBE": 2}, 4),
            ("no_rank", {"PROBE": 4}, 4), ("no_arrival_sums_rank", {"PROBE": 7}, 4),
            ("launch_only", {"PROBE": 8}, 4)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="raas_step_probe.json")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    config = rf.RaaSConfig(budget=2048, page_size=16)
    policy = rf.make_policy(config)
    rows = []
    for batch in (1, 8, 32):
        cache, step = seen_cache(policy, batch, 8, 128, 4096, 4096, torch.bfloat16, "cuda", gen)
        q = torch.randn(batch, 8, 4, 128, generator=gen, device="cuda").bfloat16()
        k, v = (torch.randn(batch, 8, 1, 128, generator=gen, device="cuda").bfloat16()
                for _ in range(2))
        c = cache
        tensors = (c.k, c.v, c.fill, c.visible, c.timestamp, c.pinned, c.page_id, c.kmin,
                   c.kmax, c.current, c.length, c.overflow, c.policy_state["arrivals"], step,
                   k, v, q)
        for name, defines, blocks in VARIANTS:
            raas_step_cuda.DEFINES, raas_step_layout.CLUSTER_BLOCKS = defines, blocks
            blocks = raas_step_layout.row_blocks(c.k.device, batch * 8)  # as the launch decides
            layout = raas_step_layout.fused_layout(c.num_slots, 128, 4, torch.bfloat16, blocks)

            def op() -> torch.Tensor:
                return raas_step_cuda.raas_bookkeeping_cuda(layout, *tensors, 16,
                                                            128 ** -0.5, 1, 2)

            us = graph_stats_ms(op)["median_ms"] * 1e3
            rows.append(dict(variant=name, batch=batch, median_us=us, blocks=blocks,
                             threads=layout.threads if layout else None))
            print(json.dumps(rows[-1]), flush=True)
        raas_step_cuda.DEFINES, raas_step_layout.CLUSTER_BLOCKS = {}, DEFAULT_BLOCKS
        del cache
    write_run(args.out, "bench.latency.raas_step_probe", rows=rows)
    print("\nvariant               batch     us")
    for r in rows:
        print(f"{r['variant']:21s} {r['batch']:5d} {r['median_us']:6.1f}")


if __name__ == "__main__":
    main()
