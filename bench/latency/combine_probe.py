"""Issue 15, lever 37: which config flex's combine kernel gets in the raas step, and what
each costs in the graph (4k tokens seen, L = 2048, P = 16, batch 1, bf16).

python -m bench.latency.combine_probe [--out combine_probe.json] [--repeats 2]

Flex's decode writes partial outputs per kv split; an Inductor persistent reduction
(`triton_per_fused_flex_attention_..._2`) merges them. Inductor chooses that reduction's
XBLOCK by timing each config once, alone, at its first launch; session 17 saw it take 2.0,
2.7 or 4.6 µs in the step from one compile to the next. Each row here compiles the step
afresh (Dynamo reset, Inductor's caches off, compiles in this process so the config filter
below sees them), times its CUDA graph (median of replays, L2 flushed) and profiles its
kernels:

- `autotuned`: as shipped before this lever, `repeats` times;
- `deterministic`: `torch.compile(..., options={"deterministic": True})`, under which
  Inductor keeps one reduction config by a fixed rule instead of timing them;
- `xblock_X`: the flex reductions restricted to XBLOCK = X (a patched config filter; a
  probe only, not a way to ship).

SDPA and flex_dense (compiled flex over the 4k contiguous tokens) are timed first and last.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from torch._inductor.runtime import triton_heuristics

import raas_flex as rf
from bench.latency import decode_cases as cases
from bench.latency.decode_probe import profile
from bench.latency.decode_state import decode_inputs, seen_cache
from bench.latency.decode_timing import graph_stats_ms, write_run
from raas_flex.functional import decode_step_tensors

K = 1024
ROWS: list[dict] = []
SEEN: list[dict] = []  # the flex reductions' configs as Inductor offered them
_ORIGINAL_FILTER = triton_heuristics.filter_reduction_configs_for_determinism


def _describe(config) -> str:
    return f"{config.kwargs} w{config.num_warps} s{config.num_stages}"


def _filter(only_xblock: int | None):
    """A stand-in for Inductor's reduction config filter that records the flex kernels'
    configs and, with only_xblock, keeps those with that XBLOCK."""

    def keep(inductor_meta: dict, configs: list) -> list:
        configs = _ORIGINAL_FILTER(inductor_meta, configs)
        name = str(inductor_meta.get("kernel_name", ""))
        if "flex" not in name:
            return configs
        SEEN.append(dict(kernel=name, configs=[_describe(c) for c in configs]))
        if only_xblock is None:
            return configs
        kept = [c for c in configs if c.kwargs.get("XBLOCK") == only_xblock]
        return kept or configs

    return keep


def _autotuners() -> dict[int, object]:
    gc.collect()
    return {id(o): o for o in gc.get_objects()
            if isinstance(o, triton_heuristics.CachingAutotuner)}


def row(label: str, options: dict | None, only_xblock: int | None) -> None:
    """Compile the step afresh under `options` / `only_xblock`, time it and profile it."""
    torch._dynamo.reset()
    triton_heuristics.filter_reduction_configs_for_determinism = _filter(only_xblock)
    before = set(_autotuners())
    gen = torch.Generator(device="cuda").manual_seed(0)
    policy = rf.make_policy(rf.RaaSConfig(budget=2048, page_size=16))
    cache, step = seen_cache(policy, 1, 8, 128, 4 * K, 0, torch.bfloat16, "cuda", gen)
    q, k, v = decode_inputs(1, gen)
    compiled = torch.compile(decode_step_tensors, fullgraph=True, dynamic=False,
                             options=options)
    t0 = time.time()
    compiled(q, k, v, cache, policy, step, cases.SCALE)
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    fn = lambda: compiled(q, k, v, cache, policy, step, cases.SCALE)  # noqa: E731
    stats = graph_stats_ms(fn)
    kernels = profile(fn, label)
    picked = {o.fn.__name__: [_describe(l.config) for l in o.launchers]
              for i, o in _autotuners().items() if i not in before and "flex" in o.fn.__name__}
    ROWS.append(dict(kind="time", method=label, N=4 * K, batch=1,
                     median_us=stats["median_ms"] * 1e3, mean_us=stats["mean_ms"] * 1e3,
                     compile_s=compile_s, picked=picked,
                     kernels_us={name[:90]: us for name, us in kernels}))
    triton_heuristics.filter_reduction_configs_for_determinism = _ORIGINAL_FILTER


def dense_rows() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, build in (("sdpa", cases.sdpa_dense), ("flex_dense", cases.flex_dense)):
        fn, _ = build(4 * K, 1, gen)
        stats = graph_stats_ms(fn)
        ROWS.append(dict(kind="time", method=name, N=4 * K, batch=1,
                         median_us=stats["median_ms"] * 1e3, mean_us=stats["mean_ms"] * 1e3))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="combine_probe.json")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--xblocks", default="1,8,32,128")
    args = parser.parse_args()
    torch._inductor.config.compile_threads = 1
    torch._inductor.config.force_disable_caches = True
    torch._dynamo.config.cache_size_limit = 64
    dense_rows()
    for i in range(args.repeats):
        row(f"autotuned_{i}", None, None)
    for i in range(args.repeats):
        row(f"deterministic_{i}", {"deterministic": True}, None)
    for x in (int(x) for x in args.xblocks.split(",") if x):
        row(f"xblock_{x}", None, x)
    dense_rows()
    write_run(args.out, "bench.latency.combine_probe", rows=ROWS, offered=SEEN)
    print("\nmethod               step us   combine us  picked")
    for r in ROWS:
        combine = [us for name, us in r.get("kernels_us", {}).items()
                   if "per_fused_flex" in name]
        print(f"{r['method']:<20} {r['median_us']:8.1f}   {combine}  "
              f"{list(r.get('picked', {}).values())}")


if __name__ == "__main__":
    main()
