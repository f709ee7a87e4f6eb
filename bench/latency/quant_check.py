"""Issue 6 on the GPU: the compiled RaaS step over an 8-bit pool, checked against eager.

For int8 and float8_e4m3fn pools (and the bf16 pool as the control) it runs the same
64 decode steps (4 page openings, each evicting) eagerly and through the compiled step, and
reports: output difference, identical decisions and codes, graphs/breaks, and whether
Inductor's code allocates any buffer the size of the pool (a dequantized copy would be one).
Also the pool bytes at Llama-3-8B head shapes. CUDA only (Inductor's CPU flex rejects 8-bit
K/V). Run from the repository root:
    python -m bench.latency.quant_check --out bench/results/latency/quant_check_h100.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import torch
from torch._inductor.utils import run_and_get_code

import raas_flex as rf
from raas_flex.compile import compile_decode_step
from raas_flex.compile.step import clone_cache
from raas_flex.attention import attend_visible, device_kernel_options, fold_gqa
from raas_flex.functional import decode_step_tensors
from bench.latency.decode_state import seen_cache

B, HQ, H, D, P, L, N = 1, 32, 8, 128, 16, 2048, 16384
STEPS = 64
SCALE = D ** -0.5
KV_DTYPES = (None, "int8", "float8_e4m3fn")
KERNEL_OPTIONS: dict | None = None  # --kernel-options, for every pool this script builds


def pool_sized_buffers(code: str, pool_elements: int) -> list[str]:
    """Allocations in Inductor's output holding at least half as many elements as the K
    pool: a dequantized copy of the pool (what must not exist) would be one of them."""
    found = []
    for match in re.finditer(r"empty_strided_\w+\(\(([0-9, ]*)\)", code):
        numel = 1
        for size in filter(None, (x.strip() for x in match.group(1).split(","))):
            numel *= int(size)
        if numel * 2 >= pool_elements:
            found.append(match.group(0))
    return found


def check(kv_dtype: str | None, gen: torch.Generator) -> dict:
    config = rf.RaaSConfig(budget=L, page_size=P, kv_dtype=kv_dtype,
                           kernel_options=KERNEL_OPTIONS)
    policy = rf.make_policy(config)
    cache, step = seen_cache(policy, B, H, D, N, 0, torch.bfloat16, "cuda", gen)
    eager_cache, compiled_cache = clone_cache(cache), clone_cache(cache)
    inputs = [tuple(torch.randn(B, h, 1, D, generator=gen, device="cuda").bfloat16()
                    for h in (HQ, H, H)) for _ in range(STEPS)]
    torch._dynamo.reset()
    compiled = compile_decode_step(None)
    explain = torch._dynamo.explain(decode_step_tensors)(
        *inputs[0], clone_cache(cache), policy, step, SCALE)
    worst, same_visible, t0 = 0.0, True, time.time()
    code = ""
    for i, (q, k, v) in enumerate(inputs):
        s = step + i + 1
        want = decode_step_tensors(q, k, v, eager_cache, policy, s, SCALE)
        if i == 0:
            got, codes = run_and_get_code(compiled, q, k, v, compiled_cache, policy, s, SCALE)
            code = "\n".join(codes)
        else:
            got = compiled(q, k, v, compiled_cache, policy, s, SCALE)
        err = (got.float() - want.float()).norm() / want.float().norm()
        worst = max(worst, float(err))
        same_visible &= bool(torch.equal(eager_cache.visible, compiled_cache.visible))
    # The attention alone, compiled vs eager, on the final (identical) state: separates a
    # kernel problem from a problem with the step's in-place writes.
    query = fold_gqa(inputs[0][0], H)
    attend = torch.compile(attend_visible, fullgraph=True, dynamic=False)
    a_want = attend_visible(query, eager_cache, SCALE).float()
    a_got = attend(query, eager_cache, SCALE).float()
    attend_err = float((a_got - a_want).norm() / a_want.norm())
    fields = ("k", "v", "page_id", "timestamp", "fill") + (
        ("k_scale", "v_logscale") if cache.quantized else ())
    equal = {f: bool(torch.equal(getattr(eager_cache, f), getattr(compiled_cache, f)))
             for f in fields}
    big = pool_sized_buffers(code, cache.k.numel())
    return dict(kv_dtype=kv_dtype or "bf16", steps=STEPS, pool_tokens=cache.capacity,
                worst_rel_err_compiled_vs_eager=worst, attend_rel_err_compiled_vs_eager=attend_err,
                same_decisions=same_visible,
                equal_state=equal, graphs=explain.graph_count, breaks=explain.graph_break_count,
                pool_sized_buffers=big, kernels=code.count(".run("),
                flex_decode_template="flex_decoding" in code or "triton_tem" in code,
                seconds=round(time.time() - t0, 1))


def pool_bytes() -> dict:
    """K/V bytes and metadata bytes of one layer's pool, Llama-3-8B heads, L = 2048."""
    out = {}
    for kv_dtype in KV_DTYPES:
        config = rf.RaaSConfig(budget=L, page_size=P, kv_dtype=kv_dtype,
                           kernel_options=KERNEL_OPTIONS)
        cache = rf.new_layer_cache(config, rf.make_policy(config), 1, H, D, prompt_tokens=P,
                                   dtype=torch.bfloat16, device="cuda")
        kv, meta = cache.nbytes()
        out[kv_dtype or "bf16"] = dict(kv_bytes=kv, meta_bytes=meta)
    for name in [k for k in out if k != "bf16"]:
        out[name]["kv_over_bf16"] = out[name]["kv_bytes"] / out["bf16"]["kv_bytes"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kernel-options", type=json.loads, default=None,
                        help='decode flex kernel_options for every step, e.g. \'{"num_stages": 3}\'')
    parser.add_argument("--out", default="bench/results/latency/quant_check.json")
    args = parser.parse_args()
    global KERNEL_OPTIONS  # noqa: PLW0603 (a script-level setting)
    KERNEL_OPTIONS = args.kernel_options
    gen = torch.Generator(device="cuda").manual_seed(0)
    checks = []
    for kv_dtype in KV_DTYPES:
        try:
            checks.append(check(kv_dtype, gen))
        except Exception as exc:  # report and go on: the other dtypes still tell something
            checks.append(dict(kv_dtype=kv_dtype or "bf16",
                               error=f"{type(exc).__name__}: {str(exc)[-1500:]}"))
        print(json.dumps(checks[-1]), flush=True)
    result = dict(checks=checks, pool_bytes=pool_bytes(), device=torch.cuda.get_device_name(),
                  torch=torch.__version__, command="python -m bench.latency.quant_check " + " ".join(sys.argv[1:]),
                  kernel_options=args.kernel_options,
                  decode_kernel_options=device_kernel_options("cuda", args.kernel_options),
                  shapes=dict(batch=B, q_heads=HQ, kv_heads=H, head_dim=D, page=P, budget=L,
                              seen=N))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["pool_bytes"]))


if __name__ == "__main__":
    main()
