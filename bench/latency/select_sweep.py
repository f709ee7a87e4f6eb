"""Issue 15, levers 12, 15, 25: the keep-all select's settings, then quest and recycled.

python -m bench.latency.select_sweep [--out select_sweep.json]

Times keep_all_triton.select_top_slots_cuda (CUDA-graph replays, median) with stage 2 by
search or by rank counting, over chunk sizes, ranks per program and warps at S = 9,217 slots
(128k tokens, P = 16), k = 128 (L = 2048), batch 1 and 8, beside torch's rule
(scores.top_slots: torch.topk); every setting must choose the same slots as torch. Then
times the quest and recycled steps at 128k beside SDPA (decode_levers' peers) under the
module's settings and again under the fastest setting at batch 1 if that differs.
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


SETTINGS = ("rank", "chunk", "chunk_warps", "merge_warps", "rank_block", "rank_tile",
            "rank_warps")


def candidates() -> list[dict]:
    """The settings timed: stage 2 by search (lever 15's default and its batch-1 best),
    then by rank counting (lever 25) over chunk sizes, ranks per program, tile and warps."""
    out = [dict(rank=False, chunk=c, chunk_warps=8, merge_warps=16) for c in (1024, 2048)]
    for chunk, block, tile, warps in itertools.product((512, 1024, 2048), (16, 32, 64),
                                                       (64, 128), (2, 4)):
        out.append(dict(rank=True, chunk=chunk, chunk_warps=8, rank_block=block,
                        rank_tile=tile, rank_warps=warps))
    return out


def use(setting: dict) -> None:
    """Make `setting` the module's (the step reads them when it is traced)."""
    kt = keep_all_triton
    kt.MERGE_BY_RANK, kt.SELECT_CHUNK, kt.CHUNK_WARPS = (
        setting["rank"], setting["chunk"], setting["chunk_warps"])
    kt.MERGE_WARPS = setting.get("merge_warps")
    kt.RANK_BLOCK = setting.get("rank_block", kt.RANK_BLOCK)
    kt.RANK_TILE = setting.get("rank_tile", kt.RANK_TILE)
    kt.RANK_WARPS = setting.get("rank_warps", kt.RANK_WARPS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="select_sweep.json")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    S, k, rows = 9217, 128, []
    kt = keep_all_triton
    defaults = dict(rank=kt.MERGE_BY_RANK, chunk=kt.SELECT_CHUNK, chunk_warps=kt.CHUNK_WARPS,
                    merge_warps=kt.MERGE_WARPS, rank_block=kt.RANK_BLOCK,
                    rank_tile=kt.RANK_TILE, rank_warps=kt.RANK_WARPS)
    best = {}
    for batch in (1, 8):
        scores, page_id, held = rows_of(batch, S, gen)
        want, _ = top_slots(scores, page_id, held, k)
        torch_us = graph_stats_ms(lambda: top_slots(scores, page_id, held, k))["median_ms"] * 1e3
        rows.append(dict(kind="select", impl="torch.topk", batch=batch, median_us=torch_us))
        for setting in candidates():
            use(setting)

            def fn():
                return kt.select_top_slots_cuda(scores, page_id, held, k)
            same = bool(torch.equal(fn()[0], want))
            us = graph_stats_ms(fn)["median_ms"] * 1e3
            rows.append(dict(kind="select", impl="triton", batch=batch, median_us=us,
                             same_as_torch=same, **setting))
            if same and (batch not in best or us < best[batch][0]):
                best[batch] = (us, setting)
        use(defaults)
        print(f"batch {batch}: torch {torch_us:.1f} us, best triton {best[batch]}", flush=True)
    with open(args.out, "w") as f:
        json.dump(dict(rows=rows, best={str(b): v for b, v in best.items()}, defaults=defaults,
                       device=torch.cuda.get_device_name(), torch=torch.__version__,
                       command="python -m bench.latency.select_sweep " + " ".join(sys.argv[1:])),
                  f, indent=1)
    print("\nimpl        batch rank chunk block tile warps   us   same")
    for r in rows:
        if r["impl"] == "torch.topk" or r["median_us"] <= 1.3 * best[r["batch"]][0] \
                or not r.get("rank", True):
            print(f"{r['impl']:11s} {r['batch']:5d} {r.get('rank', '-')!s:5} "
                  f"{r.get('chunk', '-')!s:5} {r.get('rank_block', '-')!s:5} "
                  f"{r.get('rank_tile', '-')!s:4} "
                  f"{r.get('rank_warps', r.get('merge_warps', '-'))!s:5} "
                  f"{r['median_us']:6.1f} {r.get('same_as_torch', '')}")
    decode_levers.OUT.append(args.out.replace(".json", "_steps.json"))
    torch._dynamo.config.cache_size_limit = 512
    bw, launch = copy_bandwidth(), launch_ms()
    print("module settings:", defaults, flush=True)
    decode_levers.peers(["quest", "recycled"], [], bw, launch, False)
    fastest = best[1][1]
    if any(fastest.get(name) != defaults.get(name) for name in SETTINGS if name in fastest):
        use(fastest)
        torch._dynamo.reset()  # the settings are read when the step is traced
        print("fastest settings at batch 1:", fastest, flush=True)
        decode_levers.peers(["quest", "recycled"], [], bw, launch, False)


if __name__ == "__main__":
    main()
