"""Per-step decode latency of every registered policy, one layer, on a CUDA GPU.

One attention layer (32 query heads, 8 kv heads, head_dim 128, bf16, batch 1, page 16)
holds N tokens of history. Keep-all policies (dense, quest, recycled, hsr) hold all N in
their pool; evicting policies hold a full L-token pool, so their step cannot depend on N.
Each policy's `decode_step_tensors` is compiled (fullgraph, static shapes), captured in a
CUDA graph and replayed; the figure is the median of triton's do_bench over replays
(state keeps advancing: pages open and are evicted as in a real decode). Dense SDPA over N
and over L, and the HBM floor (bytes of K/V read / bandwidth), are measured in the same run.

Usage: python bench/peer_step_latency.py OUT.json [policy ...]
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

import raas_flex as rf
from raas_flex.cache import write_prompt
from raas_flex.functional import decode_step_tensors

B, HQ, H, D, P = 1, 32, 8, 128, 16
N, L, PINNED_PAGES = 131072, 2048, 16
DTYPE, DEVICE = torch.bfloat16, "cuda"
SCALE = D ** -0.5


def median_us(fn) -> float:
    from triton.testing import do_bench  # CUDA machines only

    return 1000.0 * do_bench(fn, warmup=25, rep=200, return_mode="median")


def graphed(fn):
    """Capture fn in a CUDA graph (after warm-up on a side stream); None if it cannot be."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as error:  # a host sync inside the step, e.g.
        print(f"  graph capture failed: {type(error).__name__}: {str(error)[:200]}", flush=True)
        return None
    return graph.replay


def layer_cache(policy_name: str):
    config = rf.RaaSConfig(budget=L, page_size=P, policy=policy_name)
    policy = rf.make_policy(config)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    tokens = N if policy.keeps_all else L - P
    cache = rf.new_layer_cache(config, policy, B, H, D, prompt_tokens=tokens,
                               max_new_tokens=16384, dtype=DTYPE, device=DEVICE)
    k = torch.randn(B, H, tokens, D, generator=g, device=DEVICE, dtype=DTYPE)
    v = torch.randn(B, H, tokens, D, generator=g, device=DEVICE, dtype=DTYPE)
    write_prompt(cache, k, v, torch.full((B,), tokens, device=DEVICE), pin=policy.keeps_all)
    if not policy.keeps_all:  # a 256-token prompt stays pinned, the rest is decode history
        cache.pinned[..., :PINNED_PAGES] = True
    return config, policy, cache


def bench_policy(name: str) -> dict:
    config, policy, cache = layer_cache(name)
    g = torch.Generator(device=DEVICE).manual_seed(1)
    q = torch.randn(B, HQ, 1, D, generator=g, device=DEVICE, dtype=DTYPE)
    k = torch.randn(B, H, 1, D, generator=g, device=DEVICE, dtype=DTYPE)
    v = torch.randn(B, H, 1, D, generator=g, device=DEVICE, dtype=DTYPE)
    step = torch.tensor(10_000, device=DEVICE)
    compiled = torch.compile(decode_step_tensors, fullgraph=True, dynamic=False)
    start = time.perf_counter()
    compiled(q, k, v, cache, policy, step, SCALE)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - start

    def one_step():
        return compiled(q, k, v, cache, policy, step, SCALE)

    replay = graphed(one_step)
    result = {
        "policy": name, "keeps_all": policy.keeps_all,
        "pool_tokens": cache.capacity, "history_tokens": N,
        "compile_s": round(compile_s, 1), "cuda_graph": replay is not None,
        "step_us": round(median_us(replay or one_step), 2),
    }
    if "dropped_mass_bound" in cache.policy_state:
        bound = cache.policy_state["dropped_mass_bound"]
        result["last_dropped_mass_bound_max"] = float(bound.max())
    result["attended_tokens_last_step"] = int(cache.visible.sum(-1).float().mean())
    return result


def bench_sdpa(tokens: int) -> dict:
    g = torch.Generator(device=DEVICE).manual_seed(2)
    q = torch.randn(B, HQ, 1, D, generator=g, device=DEVICE, dtype=DTYPE)
    k = torch.randn(B, H, tokens, D, generator=g, device=DEVICE, dtype=DTYPE)
    v = torch.randn_like(k)

    def attend():
        return F.scaled_dot_product_attention(q, k, v, scale=SCALE, enable_gqa=True)

    kv_bytes = 2 * k.numel() * k.element_size()
    return {"policy": f"sdpa_dense_{tokens}", "history_tokens": tokens,
            "step_us": round(median_us(graphed(attend) or attend), 2), "kv_bytes": kv_bytes}


def main() -> None:
    out_path, names = sys.argv[1], sys.argv[2:] or list(rf.available_policies())
    props = torch.cuda.get_device_properties(0)
    report = {"device": props.name, "torch": torch.__version__,
              "shape": dict(batch=B, q_heads=HQ, kv_heads=H, head_dim=D, page=P,
                            N=N, L=L, dtype=str(DTYPE)),
              "method": "median of triton do_bench over CUDA-graph replays, us",
              "results": [bench_sdpa(N), bench_sdpa(L)]}
    for name in names:
        try:
            report["results"].append(bench_policy(name))
        except Exception as error:
            report["results"].append({"policy": name, "error": f"{type(error).__name__}: "
                                                           f"{str(error)[:500]}"})
        print(json.dumps(report["results"][-1]), flush=True)
        with open(out_path, "w") as f:
            json.dump(report, f, indent=1)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
