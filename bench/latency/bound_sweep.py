"""Issue 15, lever 21: raas_flex::quest_bound's launch settings (pages per program, warps).

python -m bench.latency.bound_sweep [--out bound_sweep.json]

Times keep_all_triton.quest_bound_cuda alone (CUDA-graph replays, median) over the pages
each program reads (its [SLOTS, D] tile of kmax and kmin) and its warps, for the shapes
the decode step gives it: quest at 128k (S = 9,217 slots, batch 1 and 8) and raas's pool
(S = 128 slots, L = 2048, batch 32); Llama-3-8B heads (8 kv heads, group 4, D = 128),
bf16 summaries. Each setting's output must equal the torch rule (scores.summary_bound)
to 1e-5; the bytes floor is the summaries' size over the measured copy bandwidth. Then
times the quest step (batch 1) and raas (batch 32) at 128k beside SDPA under the module's
settings and, if it differs, under the fastest setting at quest's batch 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch

from bench.latency import decode_levers
from bench.latency.decode_timing import copy_bandwidth, graph_stats_ms, launch_ms
from raas_flex.policies import keep_all_triton
from raas_flex.policies.scores import summary_bound

SHAPES = (("quest 128k", 1, 9217), ("quest 128k", 8, 9217), ("raas L=2048", 32, 128))
H, G, D = 8, 4, 128


def inputs(batch: int, S: int, gen: torch.Generator):
    q = torch.randn(batch, H, G, D, generator=gen, device="cuda", dtype=torch.bfloat16)
    kmax = torch.randn(batch, H, S, D, generator=gen, device="cuda", dtype=torch.bfloat16)
    kmin = kmax - torch.rand(batch, H, S, D, generator=gen, device="cuda").to(torch.bfloat16)
    fill = (torch.rand(batch, H, S, generator=gen, device="cuda") < 0.99).to(torch.int32) * 16
    return q, kmax, kmin, fill


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bound_sweep.json")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    bw = copy_bandwidth()
    defaults = (keep_all_triton.BOUND_SLOTS, keep_all_triton.BOUND_WARPS)
    rows, best = [], {}
    for label, batch, S in SHAPES:
        q, kmax, kmin, fill = inputs(batch, S, gen)
        want = summary_bound(q, kmax, kmin, fill, D ** -0.5, None)
        floor_us = 2 * kmax.numel() * kmax.element_size() / bw * 1e6
        for slots, warps in itertools.product((8, 16, 32, 64, 128), (1, 2, 4, 8)):
            def fn():
                return keep_all_triton.quest_bound_cuda(q, kmax, kmin, fill, D ** -0.5, None,
                                                        slots, warps)
            same = bool(torch.allclose(fn(), want, rtol=1e-5, atol=1e-5))
            us = graph_stats_ms(fn)["median_ms"] * 1e3
            rows.append(dict(shape=label, batch=batch, S=S, slots=slots, warps=warps,
                             median_us=us, floor_us=floor_us, same_as_torch=same))
            key = (label, batch)
            if same and (key not in best or us < best[key][0]):
                best[key] = (us, slots, warps)
        print(f"{label} batch {batch}: floor {floor_us:.1f} us, best {best[(label, batch)]}",
              flush=True)
    out = dict(rows=rows, best=[dict(shape=k[0], batch=k[1], median_us=v[0], slots=v[1],
                                     warps=v[2]) for k, v in best.items()],
               defaults=dict(slots=defaults[0], warps=defaults[1]),
               device=torch.cuda.get_device_name(), torch=torch.__version__,
               bandwidth_GBps=bw / 1e9,
               command="python -m bench.latency.bound_sweep " + " ".join(sys.argv[1:]))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("\nshape        batch slots warps     us  floor  same")
    for r in rows:
        fastest = best[(r["shape"], r["batch"])][0]
        if r["median_us"] <= 1.15 * fastest or (r["slots"], r["warps"]) == defaults:
            print(f"{r['shape']:12s} {r['batch']:5d} {r['slots']:5d} {r['warps']:5d} "
                  f"{r['median_us']:6.1f} {r['floor_us']:6.1f} {r['same_as_torch']}")
    decode_levers.OUT.append(args.out.replace(".json", "_steps.json"))
    torch._dynamo.config.cache_size_limit = 512
    launch = launch_ms()
    print("module settings (slots, warps):", defaults, flush=True)
    decode_levers.peers(["quest"], [], bw, launch, False)
    decode_levers.peers(["raas"], [], bw, launch, False, batch=32)
    fastest = best[("quest 128k", 1)][1:]
    if fastest != defaults:
        keep_all_triton.BOUND_SLOTS, keep_all_triton.BOUND_WARPS = fastest
        torch._dynamo.reset()  # the settings are read when the step is traced
        print("fastest settings at quest batch 1 (slots, warps):", fastest, flush=True)
        decode_levers.peers(["quest"], ["quest"], bw, launch, False)
        decode_levers.peers(["raas"], [], bw, launch, False, batch=32)


if __name__ == "__main__":
    main()
