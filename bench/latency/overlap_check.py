"""GPU check: bookkeeping beside the attention (raas_flex/overlap.py) decides as the serial step.

python -m bench.latency.overlap_check [--out overlap_check.json] [--steps 64]

For each policy whose bookkeeping may run on a side stream (raas, raas_guard, h2o), two
compiled steps from one cache state, one with overlap_bookkeeping=True (the default), one
with False, each captured in its own CUDA graph and replayed with the same fresh q, k, v
every step: outputs and every state tensor are compared after each replay. A race between
the streams (the attention or a buffer reuse overtaking the side stream) shows as a state
or output difference; decisions must match exactly, outputs to bf16 rounding.
"""

from __future__ import annotations

import argparse
import json

import torch

import raas_flex as rf
from bench.latency.decode_state import decode_inputs, seen_cache
from bench.latency.decode_timing import capture
from raas_flex.compile import clone_cache, compile_decode_step

FIELDS = ("fill", "visible", "timestamp", "pinned", "page_id", "current", "length", "kmin",
          "kmax", "k", "v")


def differing(a, b) -> list[str]:
    bad = [f for f in FIELDS if not torch.equal(getattr(a, f), getattr(b, f))]
    return bad + [n for n, t in a.policy_state.items() if not torch.equal(t, b.policy_state[n])]


def check(name: str, batch: int, n: int, steps: int) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(11)
    configs = [rf.RaaSConfig(budget=2048, page_size=16, policy=name, overlap_bookkeeping=o)
               for o in (True, False)]
    policies = [rf.make_policy(c) for c in configs]
    cache, step = seen_cache(policies[0], batch, 8, 128, n, 4096, torch.bfloat16, "cuda", gen)
    caches = [cache, clone_cache(cache)]
    q, k, v = decode_inputs(batch, gen)
    outs: list[torch.Tensor | None] = [None, None]
    compiled = compile_decode_step(None)

    def runner(i: int):
        def run() -> None:
            outs[i] = compiled(q, k, v, caches[i], policies[i], step, 128 ** -0.5)
        return run

    graphs = [capture(runner(i)) for i in (0, 1)]  # 3 warm-up steps each, same inputs
    first = differing(*caches)
    differ, worst = [], 0.0
    for i in range(steps):
        q2, k2, v2 = decode_inputs(batch, gen)
        q.copy_(q2), k.copy_(k2), v.copy_(v2)
        step += 1
        for g in graphs:
            g.replay()
        torch.cuda.synchronize()
        bad = differing(*caches)
        if bad:
            differ.append((i, bad))
            for f in FIELDS:  # resync so later steps are compared from one state again
                getattr(caches[1], f).copy_(getattr(caches[0], f))
            for key, t in caches[0].policy_state.items():
                caches[1].policy_state[key].copy_(t)
        worst = max(worst, float((outs[0].float() - outs[1].float()).abs().max()))
    evictions = int((caches[0].page_id >= n // 16).sum())
    return dict(policy=name, batch=batch, N=n, steps=steps, differ_after_warmup=first,
                steps_differing=len(differ), first_differ=str(differ[:3]),
                max_abs_out_diff=worst, new_pages_held=evictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    rows = []
    for name in ("raas", "raas_guard", "h2o"):
        for batch in (1, 8):
            rows.append(check(name, batch, 4096, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    result = dict(rows=rows, device=torch.cuda.get_device_name(), torch=torch.__version__,
                  command="python -m bench.latency.overlap_check --steps "
                  f"{args.steps}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    bad = [r for r in rows if r["steps_differing"] or r["differ_after_warmup"]]
    print("OVERLAP CHECK", "FAILED" if bad else "passed", f"({len(rows)} cases)")


if __name__ == "__main__":
    main()
