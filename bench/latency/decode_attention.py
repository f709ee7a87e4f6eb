"""Per-layer decode-step latency on the GPU: RaaS step vs every policy vs SDPA vs dense flex.

Run from the repository root:  python -m bench.latency.decode_attention [--quick]
Writes bench/results/latency/decode_latency_<device>.json (or --out) and a PNG of latency vs N.
See bench/NOTES.md for predictions and findings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


import raas_flex as rf  # noqa: E402
from bench.latency import decode_cases as cases  # noqa: E402
from bench.latency.decode_timing import copy_bandwidth, graph_stats_ms, launch_ms  # noqa: E402

K = 1024
DEFAULT = dict(L=2048, P=16, B=1)


def grid(quick: bool, followup: bool = False,
         issue15: bool = False) -> list[tuple[int, int, int]]:
    """(L, P, batch) step configurations; each is timed at every N (RaaS cost is N-free)."""
    if issue15:
        return [(2048, 16, b) for b in (1, 8, 32)]
    if followup:
        return [(2048, 16, 1), (2048, 128, 1), (4096, 16, 1)]
    if quick:
        return [(2048, 16, 1)]
    configs = [(2048, 16, 1)]
    configs += [(2048, p, 1) for p in (32, 64, 128)]
    configs += [(l, 16, 1) for l in (512, 1024, 4096)]
    configs += [(2048, 16, b) for b in (8, 32)]
    return configs


def run(args: argparse.Namespace, out: str) -> dict:
    torch._dynamo.config.cache_size_limit = 512
    torch._dynamo.config.accumulated_cache_size_limit = 4096
    gen = torch.Generator(device="cuda").manual_seed(0)
    ns = [4 * K, 128 * K] if args.quick or args.followup else [4 * K, 16 * K, 64 * K, 128 * K]
    if args.ns:
        ns = [int(x) * K for x in args.ns.split(",")]
    configs = grid(args.quick, args.followup, args.issue15)
    bw = copy_bandwidth()
    launch = launch_ms()
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s, one graphed kernel launch {launch * 1e3:.1f} us",
          flush=True)
    rows: list[dict] = []

    def record(method: str, n: int, L: int | None, P: int | None, B: int, case) -> None:
        fn, nbytes = case
        t0 = time.time()
        try:
            stats = graph_stats_ms(fn)
            ms = stats["median_ms"]
        except Exception as exc:  # e.g. a kernel that fails to compile at this size
            rows.append(dict(method=method, N=n, L=L, page_size=P, batch=B, median_ms=None,
                             error=f"{type(exc).__name__}: {str(exc)[-300:]}"))
            print(f"{method:>14} N={n // K:>3}k L={L} P={P} B={B}: FAILED {type(exc).__name__}",
                  flush=True)
            return
        floor = nbytes / bw * 1e3
        rows.append(dict(method=method, N=n, L=L, page_size=P, batch=B, median_ms=ms,
                         mean_ms=stats["mean_ms"], kv_bytes=nbytes, floor_ms=floor,
                         launch_ms=launch, over_floor_launch=ms / (floor + launch),
                         wall_s=time.time() - t0))
        print(f"{method:>14} N={n // K:>3}k L={L} P={P} B={B}: {ms * 1e3:8.1f} us "
              f"(mean {stats['mean_ms'] * 1e3:8.1f}) "
              f"(floor {floor * 1e3:6.1f} us, {ms / (floor + launch):5.2f}x floor+launch) "
              f"[{time.time() - t0:.1f}s]", flush=True)
        with open(out + ".partial", "w") as f:  # survives a run cut off at its time limit
            json.dump(rows, f)

    if args.quant:
        quant_rows(record, gen, sweep=not args.no_sweep, kernel_options=args.kernel_options)
        return dict(bandwidth_Bps=bw, launch_ms=launch, rows=rows)
    if args.issue15:
        issue15_rows(record, gen, ns, configs, args.kv_dtypes, args.policies)
        return dict(bandwidth_Bps=bw, launch_ms=launch, rows=rows)
    for B in sorted({b for _, _, b in configs}):
        for n in ns:
            record("sdpa", n, None, None, B, cases.sdpa_dense(n, B, gen))
            if not args.followup:
                record("flex_dense", n, None, None, B, cases.flex_dense(n, B, gen))
            torch.cuda.empty_cache()
    for L, P, B in configs:
        main = (L, P, B) == (DEFAULT["L"], DEFAULT["P"], DEFAULT["B"])
        for name in args.policies:
            keeps_all = rf.policies.policy_class(name).Options.keeps_all
            if keeps_all and not (P == 16 and L == 2048):
                continue  # keep-all pools do not depend on L; time them at P=16 only
            for n in ns:
                if keeps_all and (B > 1 or args.followup) and n != 128 * K:
                    continue
                case, cache = cases.policy_step(name, n, L, P, B, gen,
                                                kernel_options=args.kernel_options)
                record(name, n, L, P, B, case)
                if name == "raas" and (main or n == 128 * K):
                    record("flex_pool", n, L, P, B, cases.flex_over_pool(cache, B, gen))
                del case, cache
                torch.cuda.empty_cache()
    return dict(bandwidth_Bps=bw, launch_ms=launch, rows=rows)


def issue15_rows(record, gen: torch.Generator, ns: list[int], configs, kv_dtypes: bool,
                 policies: tuple[str, ...]) -> None:
    """Issue 15: two dense decodes (SDPA; flex over the contiguous tokens, flex_dense,
    which beat SDPA at 4k, batch 1 on the H100 and the H200) and every policy's default
    step at batch 1 / 8 / 32, L = 2048, P = 16, with flex alone over the RaaS pool and the
    token write + that flex (write_flex_pool, the floor under any step) beside it; keep-all
    policies at batch 1, N = 4k and 128k; 8-bit pools (int8, fp8) at N = 128k, batch
    1 / 8 / 32. The dense baseline is the faster dense decode (add_ratios)."""
    for L, P, B in configs:
        for n in ns:
            record("sdpa", n, None, None, B, cases.sdpa_dense(n, B, gen))
            record("flex_dense", n, None, None, B, cases.flex_dense(n, B, gen))
            torch.cuda.empty_cache()
        for name in policies:
            keeps_all = rf.policies.policy_class(name).Options.keeps_all
            for n in ns:
                if keeps_all and (B > 1 or n not in (4 * K, 128 * K)):
                    continue
                case, cache = cases.policy_step(name, n, L, P, B, gen)
                record(name, n, L, P, B, case)
                if name == "raas" and n in (4 * K, 128 * K):
                    record("flex_pool", n, L, P, B, cases.flex_over_pool(
                        cache, B, gen, cache.kernel_options))
                    record("write_flex_pool", n, L, P, B, cases.write_then_flex_over_pool(
                        cache, B, gen, cache.kernel_options))
                del case, cache
                torch.cuda.empty_cache()
    if kv_dtypes:
        n, L, P = 128 * K, 2048, 16
        for B in (1, 8, 32):
            for kv_dtype, suffix in (("int8", "_int8"), ("float8_e4m3fn", "_fp8")):
                try:
                    case, cache = cases.policy_step("raas", n, L, P, B, gen, kv_dtype)
                except ImportError as exc:  # torchao missing where this runs: say so, go on
                    print(f"raas{suffix} B={B}: not timed, {exc}", flush=True)
                    continue
                record("raas" + suffix, n, L, P, B, case)
                del case, cache
                torch.cuda.empty_cache()


def quant_rows(record, gen: torch.Generator, sweep: bool,
               kernel_options: dict | None = None) -> None:
    """Issue 6: the RaaS step and its attention alone over bf16 / int8 / fp8 pools, side by
    side with SDPA, at N = 128k, L = 2048, P = 16 and batch 1, 8, 32."""
    n, L, P = 128 * K, DEFAULT["L"], DEFAULT["P"]
    for B in (1, 8, 32):
        record("sdpa", n, None, None, B, cases.sdpa_dense(n, B, gen))
        for kv_dtype, suffix in ((None, ""), ("int8", "_int8"), ("float8_e4m3fn", "_fp8")):
            case, cache = cases.policy_step("raas", n, L, P, B, gen, kv_dtype,
                                            kernel_options)
            record("raas" + suffix, n, L, P, B, case)
            record("attend" + suffix, n, L, P, B, cases.attend_only(cache, B, gen, kv_dtype))
            if B != 8 and sweep:  # does a decode-kernel setting suit 8-bit K/V better?
                for options in QUANT_SWEEP:
                    record(f"attend{suffix} {json.dumps(options)}", n, L, P, B,
                           cases.attend_only(cache, B, gen, kv_dtype, options))
            del case, cache
            torch.cuda.empty_cache()


QUANT_SWEEP = ({"BLOCK_N": 64}, {"BLOCK_N": 128}, {"num_warps": 8}, {"num_stages": 3})


DENSE = ("sdpa", "flex_dense")  # the dense decodes timed; the faster is the baseline


def add_ratios(rows: list[dict]) -> None:
    """sdpa_over_this, and dense_over_this: against the faster dense decode timed at the
    same N and batch (SDPA or flex over the contiguous tokens)."""
    for field, methods in (("sdpa_over_this", ("sdpa",)), ("dense_over_this", DENSE)):
        fastest: dict[tuple, float] = {}
        for r in rows:
            if r["method"] in methods and r["median_ms"]:
                key = (r["N"], r["batch"])
                fastest[key] = min(fastest.get(key, r["median_ms"]), r["median_ms"])
        for r in rows:
            if (r["N"], r["batch"]) in fastest and r["median_ms"]:
                r[field] = fastest[(r["N"], r["batch"])] / r["median_ms"]


def table(rows: list[dict], n: int) -> str:
    lines = [f"N={n // K}k  method        L     P   B   median_us  floor_us  "
             "x(floor+launch)  sdpa/this  dense/this"]
    for r in rows:
        if r["N"] == n and r["median_ms"]:
            lines.append(f"      {r['method']:<12} {str(r['L']):>5} {str(r['page_size']):>4} "
                         f"{r['batch']:>3} {r['median_ms'] * 1e3:10.1f} {r['floor_ms'] * 1e3:9.1f} "
                         f"{r['over_floor_launch']:12.2f} {r.get('sdpa_over_this', 0):10.2f} "
                         f"{r.get('dense_over_this', 0):11.2f}")
    return "\n".join(lines)


def policy_list(text: str) -> tuple[str, ...]:
    """--policies: comma-separated registered names, each checked (a typo names the choices)."""
    names = tuple(name for name in text.split(",") if name)
    for name in names:
        rf.policies.policy_class(name)  # ValueError listing the registered policies
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one config, two N")
    parser.add_argument("--followup", action="store_true",
                        help="after a kernel change: 3 configs, N in {4k, 128k}, no flex_dense")
    parser.add_argument("--quant", action="store_true",
                        help="issue 6: bf16 vs int8 vs fp8 pools, N=128k, L=2048, B=1/8/32")
    parser.add_argument("--issue15", action="store_true",
                        help="issue 15: every policy at batch 1/8/32, L=2048, P=16")
    parser.add_argument("--kv-dtypes", action="store_true",
                        help="with --issue15: int8 / fp8 pools too (N=128k)")
    parser.add_argument("--ns", default=None,
                        help="comma-separated N in k tokens, e.g. 4,16,64,128")
    parser.add_argument("--no-sweep", action="store_true", help="--quant without the "
                        "kernel-option sweep of the attention")
    parser.add_argument("--kernel-options", type=json.loads, default=None,
                        help='decode flex kernel_options for every step, e.g. \'{"num_stages": 3}\'')
    parser.add_argument("--policies", type=policy_list, default=rf.available_policies(),
                        help="comma-separated policies to time (default: every registered "
                             "one), e.g. rkv,lazy_eviction,lessismore; SDPA is always timed")
    parser.add_argument("--out", default=None, help="JSON path")
    args = parser.parse_args()
    import triton
    t0 = time.time()
    device = torch.cuda.get_device_name()
    out = args.out or f"bench/results/latency/decode_latency_{device.split()[-1].lower()}.json"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    result = run(args, out)
    add_ratios(result["rows"])
    result.update(device=device, torch=torch.__version__, triton=triton.__version__,
                  command="python -m bench.latency.decode_attention " + " ".join(sys.argv[1:]),
                  kernel_options=args.kernel_options, wall_s=time.time() - t0,
                  policies=list(args.policies))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    try:
        from bench.latency.plot_decode import plot
        plot(out, out.replace(".json", ".png"))
    except Exception as exc:  # plotting is optional on the device
        print("plot skipped:", exc)
    for n in sorted({r["N"] for r in result["rows"] if r["N"] in (4 * K, 128 * K)}):
        print(table(result["rows"], n))


if __name__ == "__main__":
    main()
