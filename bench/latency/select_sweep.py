"""Issue 15, lever 12: the keep-all select's launch settings, then quest and recycled.

python -m bench.latency.select_sweep [--out select_sweep.json]

Times keep_all_triton.select_top_slots_cuda (CUDA-graph replays, median) over the k-th
key search (bit pairs or radix histograms), chunk sizes and warps at S = 9,217 slots
(128k tokens, P = 16), k = 128 (L = 2048), batch 1 and 8, beside torch's rule
(scores.top_slots: torch.topk); every setting must choose the same slots as torch. Then
times the quest and recycled steps at 128k beside SDPA (decode_levers' peers, quest's
compiled step checked against eager), with their profiles, under the module's settings
and again under the fastest setting at batch 1 if that differs.
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
from raas_flex.policies.scores import top_slots


def rows_of(batch: int, S: int, gen: torch.Generator):
    H = 8
    scores = torch.randn(batch, H, S, generator=gen, device="cuda")
    scores[..., 0] = float("inf")
    page_id = torch.argsort(torch.rand(batch, H, S, generator=gen, device="cuda"), dim=-1)
    held = torch.rand(batch, H, S, generator=gen, device="cuda") < 0.99
    return scores, page_id, held


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="select_sweep.json")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    S, k, rows = 9217, 128, []
    defaults = (keep_all_triton.RADIX_SEARCH, keep_all_triton.SELECT_CHUNK,
                keep_all_triton.CHUNK_WARPS, keep_all_triton.merge_warps_for(2048))
    best = {}
    for batch in (1, 8):
        scores, page_id, held = rows_of(batch, S, gen)
        want, _ = top_slots(scores, page_id, held, k)
        torch_us = graph_stats_ms(lambda: top_slots(scores, page_id, held, k))["median_ms"] * 1e3
        rows.append(dict(kind="select", impl="torch.topk", batch=batch, median_us=torch_us))
        for radix, chunk, cw, mw in itertools.product((False, True), (512, 1024, 2048),
                                                      (4, 8, 16), (4, 8, 16, 32)):
            def fn():
                return keep_all_triton.select_top_slots_cuda(scores, page_id, held, k, chunk,
                                                             cw, mw, radix)
            same = bool(torch.equal(fn()[0], want))
            us = graph_stats_ms(fn)["median_ms"] * 1e3
            rows.append(dict(kind="select", impl="triton", batch=batch, radix=radix,
                             chunk=chunk, chunk_warps=cw, merge_warps=mw, median_us=us,
                             same_as_torch=same))
            if same and (batch not in best or us < best[batch][0]):
                best[batch] = (us, radix, chunk, cw, mw)
        print(f"batch {batch}: torch {torch_us:.1f} us, best triton {best[batch]}", flush=True)
    with open(args.out, "w") as f:
        json.dump(dict(rows=rows, best={str(b): v for b, v in best.items()},
                       device=torch.cuda.get_device_name(), torch=torch.__version__,
                       command="python -m bench.latency.select_sweep " + " ".join(sys.argv[1:])),
                  f, indent=1)
    print("\nimpl        batch radix chunk cw mw   us   same")
    for r in rows:
        if r["impl"] == "torch.topk" or r["median_us"] <= 1.3 * best[r["batch"]][0] \
                or (r.get("radix"), r.get("chunk"), r.get("chunk_warps")) == (False, 1024, 4):
            print(f"{r['impl']:11s} {r['batch']:5d} {r.get('radix', '-')!s:5} "
                  f"{r.get('chunk', '-')!s:5} "
                  f"{r.get('chunk_warps', '-')!s:2} {r.get('merge_warps', '-')!s:2} "
                  f"{r['median_us']:6.1f} {r.get('same_as_torch', '')}")
    decode_levers.OUT.append(args.out.replace(".json", "_steps.json"))
    torch._dynamo.config.cache_size_limit = 512
    bw, launch = copy_bandwidth(), launch_ms()
    print("module settings (radix, chunk, chunk warps, merge warps):", defaults, flush=True)
    decode_levers.peers(["quest", "recycled"], ["quest"], bw, launch, True)
    if best[1][1:] != defaults:
        (_, keep_all_triton.RADIX_SEARCH, keep_all_triton.SELECT_CHUNK,
         keep_all_triton.CHUNK_WARPS, keep_all_triton.MERGE_WARPS) = best[1]
        torch._dynamo.reset()  # the settings are read when the step is traced
        print("fastest settings:", best[1][1:], flush=True)
        decode_levers.peers(["quest", "recycled"], [], bw, launch, True)


if __name__ == "__main__":
    main()
