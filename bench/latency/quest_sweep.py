"""Issue 15, lever 18: quest's bound fused into its select's first stage, by launch setting.

python -m bench.latency.quest_sweep [--out quest_sweep.json]

At S = 9,217 slots (128k tokens, P = 16), k = 128 (L = 2048), Llama-3-8B heads (8 kv heads,
groups of 4, D = 128), bf16 summaries, batch 1 and 8: times (CUDA-graph replays, median)
the unfused pair (quest_bound_cuda then quest_blocks_cuda), the bound alone, and
quest_select_cuda over its chunk, tile, warps and pipeline stages; every setting must write
the same visible and block list as the pair. Then the quest step at 128k beside SDPA
(decode_levers' peers: compiled checked against eager, profiled) under the module's
settings, and again under the fastest batch-1 setting if that differs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch

from bench.latency import decode_levers
from bench.latency.decode_timing import copy_bandwidth, graph_stats_ms, launch_ms
from raas_flex.policies import keep_all_triton as kt

S, K, H, G, D = 9217, 128, 8, 4, 128
SETTINGS = list(itertools.product((512, 1024), (32, 64), (4, 8), (2, 3))) + [
    (1024, 32, 16, 3), (1024, 32, 8, 4), (1024, 16, 8, 3), (2048, 32, 8, 3)]


def inputs(batch: int, gen: torch.Generator) -> tuple:
    """A full keep-all pool's summaries and metadata, as the pool lays them out."""
    def randn(*shape):
        return torch.randn(*shape, generator=gen, device="cuda").to(torch.bfloat16)
    q = randn(batch, H, G, D)
    a, b = randn(batch, H, S, D), randn(batch, H, S, D)
    kmax, kmin = torch.maximum(a, b), torch.minimum(a, b)
    fill = torch.full((batch, H, S), 16, dtype=torch.int32, device="cuda")
    fill[..., -1] = 0  # the keep-all margin's empty slot
    page_id = torch.argsort(torch.rand(batch, H, S, generator=gen, device="cuda"), dim=-1)
    current = torch.zeros((batch, H), dtype=torch.int64, device="cuda")
    return q, kmax, kmin, fill, page_id, current


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="quest_sweep.json")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows, best = [], {}
    for batch in (1, 8):
        q, kmax, kmin, fill, page_id, current = inputs(batch, gen)
        visible = torch.zeros_like(fill)

        def pair():
            scores = kt.quest_bound_cuda(q, kmax, kmin, fill, 0.1, None)
            return kt.quest_blocks_cuda(scores, page_id, fill, current, visible, K)
        want = [t.clone() for t in pair()] + [visible.clone()]
        for impl, fn in (("bound+blocks", pair),
                         ("bound alone", lambda: kt.quest_bound_cuda(q, kmax, kmin, fill,
                                                                     0.1, None))):
            us = graph_stats_ms(fn)["median_ms"] * 1e3
            rows.append(dict(impl=impl, batch=batch, median_us=us))
        for chunk, tile, warps, stages in SETTINGS:
            def fused():
                return kt.quest_select_cuda(q, kmax, kmin, fill, page_id, current, visible,
                                            0.1, None, K, chunk, tile, warps, stages)
            visible.fill_(-1)
            got = [t.clone() for t in fused()] + [visible.clone()]
            same = all(torch.equal(a, b) for a, b in zip(got, want))
            us = graph_stats_ms(fused)["median_ms"] * 1e3
            rows.append(dict(impl="fused", batch=batch, chunk=chunk, tile=tile, warps=warps,
                             stages=stages, median_us=us, same_as_pair=same))
            if same and (batch not in best or us < best[batch][0]):
                best[batch] = (us, chunk, tile, warps, stages)
        print(f"batch {batch}: " + ", ".join(f"{r['impl']} {r['median_us']:.1f} us"
                                             for r in rows[-len(SETTINGS) - 2:-len(SETTINGS)])
              + f"; fastest fused {best.get(batch)}", flush=True)
    defaults = (kt.QUEST_CHUNK, kt.QUEST_TILE, kt.QUEST_WARPS, kt.QUEST_STAGES)
    with open(args.out, "w") as f:
        json.dump(dict(rows=rows, best={str(b): v for b, v in best.items()}, defaults=defaults,
                       device=torch.cuda.get_device_name(), torch=torch.__version__,
                       command="python -m bench.latency.quest_sweep " + " ".join(sys.argv[1:])),
                  f, indent=1)
    print("\nimpl          batch chunk tile warps stages    us  same")
    for r in rows:
        if r["impl"] != "fused" or r["median_us"] <= 1.15 * best[r["batch"]][0]:
            print(f"{r['impl']:13s} {r['batch']:5d} {r.get('chunk', '-')!s:5} "
                  f"{r.get('tile', '-')!s:4} {r.get('warps', '-')!s:5} "
                  f"{r.get('stages', '-')!s:6} {r['median_us']:6.1f} {r.get('same_as_pair', '')}")
    decode_levers.OUT.append(args.out.replace(".json", "_steps.json"))
    torch._dynamo.config.cache_size_limit = 512
    bw, launch = copy_bandwidth(), launch_ms()
    print("module settings (chunk, tile, warps, stages):", defaults, flush=True)
    decode_levers.peers(["quest"], ["quest"], bw, launch, True)
    if best[1][1:] != defaults:
        kt.QUEST_CHUNK, kt.QUEST_TILE, kt.QUEST_WARPS, kt.QUEST_STAGES = best[1][1:]
        torch._dynamo.reset()  # the settings are read when the step is traced
        print("fastest settings:", best[1][1:], flush=True)
        decode_levers.peers(["quest"], [], bw, launch, True)


if __name__ == "__main__":
    main()
