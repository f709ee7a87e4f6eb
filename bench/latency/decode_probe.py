"""GPU checks before the benchmark: compiled step == eager step == float64 reference,
the CUDA-graph capture works, what reduce-overhead does, and where the step's time goes.

python -m bench.latency.decode_probe [--variants] [--profile]
"""

from __future__ import annotations

import argparse
import time

import torch


import raas_flex as rf  # noqa: E402
from bench.latency import decode_cases as cases  # noqa: E402
from bench.latency.decode_state import decode_inputs, seen_cache  # noqa: E402
from bench.latency.decode_timing import capture, graph_median_ms  # noqa: E402
from raas_flex.compile import clone_cache, compile_decode_step  # noqa: E402
from raas_flex.functional import decode_step_tensors  # noqa: E402

STATE = ("fill", "visible", "timestamp", "pinned", "page_id", "current", "length")


def reference(q: torch.Tensor, cache) -> torch.Tensor:
    """float64 attention of q [B, Hq, 1, D] over the tokens cache.visible marks."""
    B, Hq, _, D = q.shape
    H, P = cache.k.shape[1], cache.page_size
    seen = (torch.arange(P, device=q.device) < cache.visible[..., None]).flatten(2)
    logits = q.double().view(B, H, Hq // H, D) @ cache.k.double().transpose(-1, -2) * D ** -0.5
    probs = torch.softmax(logits.masked_fill(~seen[:, :, None], float("-inf")), -1)
    return (probs @ cache.v.double()).view(B, Hq, 1, D)


def check(name: str, batch: int, n: int, budget: int, page: int, steps: int) -> None:
    gen = torch.Generator(device="cuda").manual_seed(1)
    policy = rf.make_policy(rf.RaaSConfig(budget=budget, page_size=page, policy=name))
    cache, step = seen_cache(policy, batch, 8, 128, n, 4096, torch.bfloat16, "cuda", gen)
    eager = clone_cache(cache)
    compiled = compile_decode_step(None)
    worst_ref = worst_eager = 0.0
    differ = 0
    for i in range(steps):
        q, k, v = decode_inputs(batch, gen)
        out = compiled(q, k, v, cache, policy, step + i, 128 ** -0.5)
        ref_out = decode_step_tensors(q, k, v, eager, policy, step + i, 128 ** -0.5)
        ref = reference(q, cache)
        worst_ref = max(worst_ref, float((out.double() - ref).norm() / ref.norm()))
        worst_eager = max(worst_eager, float((out.double() - ref_out.double()).norm() / ref.norm()))
        differ += sum(not torch.equal(getattr(cache, f), getattr(eager, f)) for f in STATE)
        if differ:  # decisions diverged (a rounding tie); resync to keep comparing outputs
            eager = clone_cache(cache)
    print(f"check {name} B={batch} N={n} L={budget} P={page}: {steps} steps, rel err vs f64 "
          f"{worst_ref:.2e}, vs eager {worst_eager:.2e}, state fields differing {differ}",
          flush=True)


def reduce_overhead_check() -> None:
    from torch._dynamo.utils import counters
    gen = torch.Generator(device="cuda").manual_seed(2)
    policy = rf.make_policy(rf.RaaSConfig(budget=512, page_size=16))
    cache, step = seen_cache(policy, 1, 8, 128, 4096, 0, torch.bfloat16, "cuda", gen)
    fn = compile_decode_step("reduce-overhead")
    q = torch.randn(1, 32, 1, 128, device="cuda", generator=gen).bfloat16()
    k = torch.randn(1, 8, 1, 128, device="cuda", generator=gen).bfloat16()
    for i in range(5):
        fn(q, k, k, cache, policy, step + i, 0.1)
    torch.cuda.synchronize()
    print("reduce-overhead cudagraph skips:", dict(counters["inductor"]).get("cudagraph_skips"),
          {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}, flush=True)


def profile(fn, label: str) -> list[tuple[str, float]]:
    """Print and return (kernel name, µs per replay) of fn's CUDA graph, slowest first."""
    graph = capture(fn)
    from torch.profiler import ProfilerActivity, profile as prof
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(20):
            graph.replay()
        torch.cuda.synchronize()
    events = [e for e in p.key_averages() if e.self_device_time_total > 0]
    events.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in events) / 20
    print(f"--- {label}: {len(events)} distinct kernels, {total:.1f} us kernel time per replay")
    for e in events[:40]:
        name = e.key.replace("\n", " ")[:110]
        print(f"  {e.self_device_time_total / 20:7.2f} us x{e.count / 20:<4.1f} {name}")
    return [(e.key, e.self_device_time_total / 20) for e in events]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import triton
    print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
    torch._dynamo.config.cache_size_limit = 512
    t0 = time.time()
    check("raas", 2, 4096, 512, 16, 40)
    print(f"  (compile + check {time.time() - t0:.1f}s)")
    check("raas", 1, 128 * 1024, 2048, 16, 20)
    if args.variants:
        reduce_overhead_check()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for P in (16, 128):
        case, cache = cases.policy_step("raas", 128 * 1024, 2048, P, 1, gen)
        ms = graph_median_ms(case[0])
        flex_ms = graph_median_ms(cases.flex_over_pool(cache, 1, gen)[0])
        print(f"P={P:<3}: raas step {ms * 1e3:6.1f} us, flex alone {flex_ms * 1e3:6.1f} us",
              flush=True)
        if args.profile and P == 16:
            profile(case[0], f"raas step P={P}")
            profile(cases.flex_over_pool(cache, 1, gen)[0], f"flex alone P={P}")
        if args.variants:
            for options in OPTIONS:
                flex_ms = graph_median_ms(cases.flex_over_pool(cache, 1, gen, options)[0])
                print(f"  flex alone P={P} {options}: {flex_ms * 1e3:6.1f} us", flush=True)
    if args.variants:
        import torch._inductor.config as inductor_config
        torch._dynamo.reset()
        inductor_config.combo_kernels = True
        case, cache = cases.policy_step("raas", 128 * 1024, 2048, 16, 1, gen)
        print(f"combo_kernels: raas step {graph_median_ms(case[0]) * 1e3:6.1f} us", flush=True)
        if args.profile:
            profile(case[0], "raas step, combo_kernels")
        inductor_config.combo_kernels = False
        torch._dynamo.reset()


OPTIONS = [{"SPLIT_KV": 4}, {"SPLIT_KV": 8}, {"SPLIT_KV": 16}, {"SPLIT_KV": 64},
           {"num_warps": 2}, {"num_warps": 8}, {"num_stages": 1}, {"num_stages": 3},
           {"SPLIT_KV": 8, "num_warps": 2}]


if __name__ == "__main__":
    main()
