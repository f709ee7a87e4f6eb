"""Issue 15: where a decode step's time goes, lever by lever, on the GPU.

python -m bench.latency.decode_levers [--out levers.json] [--skip-checks]

Checks first (compiled RaaS kernel step == eager generic step == float64 reference, same
state after every step, 1 graph), then times, at N = 128k, L = 2048, P = 16: the step, the
generic step, flex alone under each mask layout and kernel option, the bookkeeping alone,
and the keep-all policies; and profiles the captured graphs (kernels per replay).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


import raas_flex as rf  # noqa: E402
from bench.latency import decode_cases as cases  # noqa: E402
from bench.latency.decode_probe import profile, reference  # noqa: E402
from bench.latency.decode_state import decode_inputs, seen_cache  # noqa: E402
from bench.latency.decode_timing import capture, copy_bandwidth, graph_median_ms, launch_ms  # noqa: E402
from raas_flex import functional  # noqa: E402
from raas_flex.compile import clone_cache, compile_decode_step, recompile_count  # noqa: E402
from raas_flex.functional import decode_step_tensors  # noqa: E402
from raas_flex.masks import decode_block_mask, listed_block_mask, pool_blocks  # noqa: E402

K = 1024
STATE = ("fill", "visible", "timestamp", "pinned", "page_id", "current", "length", "kmin",
         "kmax", "k", "v", "overflow")
ROWS: list[dict] = []


def note(**row) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def check(name: str, batch: int, n: int, steps: int, kv_dtype=None) -> None:
    """Compiled default step vs the eager generic step (RAAS_KERNEL off) from one state."""
    gen = torch.Generator(device="cuda").manual_seed(7)
    policy = rf.make_policy(rf.RaaSConfig(budget=2048, page_size=16, policy=name,
                                          kv_dtype=kv_dtype))
    cache, step = seen_cache(policy, batch, 8, 128, n, 4096, torch.bfloat16, "cuda", gen)
    eager = clone_cache(cache)
    compiled = compile_decode_step(None)
    worst_ref = worst_eager = 0.0
    differ = []
    for i in range(steps):
        q, k, v = decode_inputs(batch, gen)
        out = compiled(q, k, v, cache, policy, step + i, 128 ** -0.5)
        functional.RAAS_KERNEL = False
        try:
            ref_out = decode_step_tensors(q, k, v, eager, policy, step + i, 128 ** -0.5)
        finally:
            functional.RAAS_KERNEL = True
        bad = [f for f in STATE if not torch.equal(getattr(cache, f), getattr(eager, f))]
        if bad:
            differ.append((i, bad))
            for f in STATE:
                getattr(eager, f).copy_(getattr(cache, f))
        if kv_dtype is None:
            ref = reference(q, cache)
            worst_ref = max(worst_ref, float((out.double() - ref).norm() / ref.norm()))
        worst_eager = max(worst_eager, float((out.double() - ref_out.double()).norm()
                                             / ref_out.double().norm()))
    note(kind="check", policy=name, batch=batch, N=n, kv_dtype=kv_dtype, steps=steps,
         rel_err_vs_f64=worst_ref, rel_err_vs_eager_generic=worst_eager,
         steps_differing=len(differ), first_differ=str(differ[:3]),
         recompiles=recompile_count(compiled), kernel_step=functional.uses_raas_kernel(
             cache, policy))


def timed(method: str, fn, nbytes: int, bw: float, launch: float, **extra) -> float | None:
    try:
        ms = graph_median_ms(fn)
    except Exception as exc:  # noqa: BLE001 - record and go on
        note(kind="time", method=method, error=f"{type(exc).__name__}: {str(exc)[-400:]}",
             **extra)
        return None
    floor = nbytes / bw * 1e3
    note(kind="time", method=method, median_us=ms * 1e3, floor_us=floor * 1e3,
         over_floor_launch=ms / (floor + launch), **extra)
    return ms


_flex = torch.compile(torch.nn.attention.flex_attention.flex_attention, fullgraph=True,
                      dynamic=False)


def flex_case(cache, batch, gen, layout: str, options: dict | None):
    query = cases._randn(gen, batch, 8, 4, 128)
    if layout == "compacted":
        mask = decode_block_mask(cache.visible, cache.page_size, 4)
    elif layout == "listed":
        mask = listed_block_mask(cache.visible, cache.page_size, 4, *pool_blocks(cache.visible))
    else:  # "all_full": every page a full block, no mask_mod (an upper bound on speed)
        B, H, S = cache.visible.shape
        count, index = pool_blocks(cache.visible)
        zero = torch.zeros_like(count)
        from torch.nn.attention.flex_attention import BlockMask
        mask = BlockMask.from_kv_blocks(zero, index.contiguous(), count, index.contiguous(),
                                        BLOCK_SIZE=(128, cache.page_size),
                                        seq_lengths=(4, S * cache.page_size),
                                        compute_q_blocks=False)
    return lambda: _flex(query, cache.k, cache.v, block_mask=mask, scale=cases.SCALE,
                         kernel_options=options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="levers.json")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import triton
    torch._dynamo.config.cache_size_limit = 512
    torch._dynamo.config.accumulated_cache_size_limit = 4096
    t0 = time.time()
    bw, launch = copy_bandwidth(), launch_ms()
    note(kind="device", device=torch.cuda.get_device_name(), torch=torch.__version__,
         triton=triton.__version__, bandwidth_GBps=bw / 1e9, launch_us=launch * 1e3)

    if not args.skip_checks:
        check("raas", 1, 128 * K, 40)
        check("raas", 4, 16 * K, 40)
        # int8 pools need torchao, absent from the device image (2026-12-01)
        check("quest", 1, 16 * K, 20)
        print(f"[checks done {time.time() - t0:.0f}s]", flush=True)

    gen = torch.Generator(device="cuda").manual_seed(0)
    n, L, P = 128 * K, 2048, 16
    for B in (1,):
        for N in (4 * K, 128 * K):
            timed("sdpa", *cases.sdpa_dense(N, B, gen), bw, launch, N=N, batch=B)
        (step_fn, nbytes), cache = cases.policy_step("raas", n, L, P, B, gen)
        timed("raas", step_fn, nbytes, bw, launch, N=n, batch=B)
        if args.profile:
            profile(step_fn, f"raas kernel step B={B}")
        functional.RAAS_KERNEL = False
        (gen_fn, _), gcache = cases.policy_step("raas", n, L, P, B, gen)
        timed("raas_generic", gen_fn, nbytes, bw, launch, N=n, batch=B)
        if args.profile:
            profile(gen_fn, f"raas generic step B={B}")
        functional.RAAS_KERNEL = True
        del gcache
        from raas_flex.compile.raas_kernel import raas_bookkeep
        q = cases._randn(gen, B, 8, 4, 128)
        kk = cases._randn(gen, B, 8, 1, 128)
        step = torch.tensor(n, device="cuda")
        timed("bookkeeping_kernel_alone", lambda: raas_bookkeep(q, kk, cache, step, 0.088, 0.5),
              0, bw, launch, N=n, batch=B)
        print(f"[{time.time() - t0:.0f}s]", flush=True)
        for layout, option_list in (
                ("listed", (None, {"num_stages": 3}, {"SPLIT_KV": 16, "num_stages": 3},
                            {"SPLIT_KV": 64, "num_stages": 3})),
                ("compacted", (None, {"num_stages": 3})), ("all_full", ({"num_stages": 3},))):
            for options in option_list:
                timed(f"flex_{layout}", flex_case(cache, B, gen, layout, options),
                      cases.kv_bytes(B, L), bw, launch, N=n, batch=B, options=options)
        if args.profile:
            profile(flex_case(cache, B, gen, "listed", {"num_stages": 3}), "flex listed")
        print(f"[{time.time() - t0:.0f}s]", flush=True)
        del cache
    for name in ("quest", "dense", "hsr"):
        (fn, nbytes), cache = cases.policy_step(name, n, L, P, 1, gen)
        timed(name, fn, nbytes, bw, launch, N=n, batch=1)
        if args.profile and name == "quest":
            profile(fn, "quest step")
        del cache
        torch.cuda.empty_cache()
        print(f"[{time.time() - t0:.0f}s]", flush=True)
    for B in (8, 32):
        timed("sdpa", *cases.sdpa_dense(n, B, gen), bw, launch, N=n, batch=B)
        (fn, nbytes), cache = cases.policy_step("raas", n, L, P, B, gen)
        timed("raas", fn, nbytes, bw, launch, N=n, batch=B)
        for options in ({"num_stages": 3},):
            timed("flex_listed", flex_case(cache, B, gen, "listed", options),
                  cases.kv_bytes(B, L), bw, launch, N=n, batch=B, options=options)
        del cache
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(dict(rows=ROWS, wall_s=time.time() - t0,
                       command="python -m bench.latency.decode_levers " + " ".join(sys.argv[1:])), f, indent=1)
    print("\nmethod                     B   options                      us")
    for r in ROWS:
        if r.get("kind") == "time":
            print(f"{r['method']:<26} {r.get('batch', ''):>2} {json.dumps(r.get('options')):<28}"
                  f" {r.get('median_us', float('nan')):8.1f}")


if __name__ == "__main__":
    main()
