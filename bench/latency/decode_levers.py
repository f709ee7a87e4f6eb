"""Issue 15: where a decode step's time goes, lever by lever, on the GPU.

python -m bench.latency.decode_levers [--out levers.json] [--skip-checks] [--profile]
python -m bench.latency.decode_levers --peers rkv,raas [--peer-checks rkv] [--profile]
    [--batch 32] [--kv-dtype int8]
python -m bench.latency.decode_levers --variants quest,recycled,raas [--profile]
    [--context-k 4] [--budget 4096]

Checks first: for each policy changed by issue 15 (hsr, recycled, quest, raas) the compiled
step against the eager step and a float64 reference, from one state, step by step (state
differences counted), and recycled's gated page-mass kernel against scores.page_mass.
Then times, at L = 2048, P = 16, batch 1: SDPA; the RaaS step at N = 4k with stages left
out (no scores/update, no attention); flex alone; the keep-all policies and raas_hsr at
N = 4k and 128k; and profiles the captured graphs (kernels per replay).
With --peers, only the named policies at N = 128k, batch --batch: the compiled-vs-eager check
over 200 steps (past a checkpoint of rkv and lazy_eviction) of those in --peer-checks, then
SDPA and each policy's median and mean step, and its profile with --profile.
With --variants, the named policies at N = --context-k thousand tokens (default 128k) under
each of VARIANTS, side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import raas_flex as rf
from bench.latency import decode_cases as cases
from bench.latency.decode_probe import profile, reference
from bench.latency.decode_state import decode_inputs, seen_cache
from bench.latency.decode_timing import copy_bandwidth, graph_stats_ms, launch_ms
from raas_flex import functional
from raas_flex.compile import clone_cache, compile_decode_step, recompile_count
from raas_flex.functional import decode_step_tensors
from raas_flex.policies.gated_mass import gated_page_mass, page_log_mass
from raas_flex.policies.raas import RaaSPolicy
from raas_flex.policies import raas_step_layout, raas_step_op
from raas_flex.policies.rkv_scores import rkv_page_scores
from raas_flex.policies.scores import page_mass

K = 1024
STATE = ("fill", "visible", "timestamp", "pinned", "page_id", "current", "length", "kmin",
         "kmax", "k", "v", "overflow")
ROWS: list[dict] = []
_RAAS_BLOCKS = raas_step_layout.CLUSTER_BLOCKS  # the shipped setting


OUT: list[str] = []  # the JSON path, rewritten after every row (a cut-off run keeps them)


def note(**row) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)
    if OUT:
        with open(OUT[0], "w") as f:
            json.dump(dict(rows=ROWS, command="python -m bench.latency.decode_levers "
                           + " ".join(sys.argv[1:])), f, indent=1)


def _differing(cache, eager) -> tuple[list[str], float]:
    """(state that differs exactly: the pool, its metadata and the policy's integer and
    boolean state, i.e. the decisions; the largest relative difference of the policy's
    float scores, which compiled and eager code may round differently in the last bits)."""
    bad = [f for f in STATE if not torch.equal(getattr(cache, f), getattr(eager, f))]
    drift = 0.0
    for name, value in cache.policy_state.items():
        other = eager.policy_state[name]
        if not value.is_floating_point():
            if not torch.equal(value, other):
                bad.append(name)
            continue
        a, b = value.double().nan_to_num(), other.double().nan_to_num()
        if not torch.equal(a, b):
            drift = max(drift, float(((a - b).abs() / (b.abs() + 1e-30)).max()))
    return bad, drift


def check(name: str, batch: int, n: int, steps: int, staged_eager: bool = False) -> None:
    """Compiled step vs the eager step (same code, not compiled) from one state; with
    staged_eager the eager step runs raas's bookkeeping stage by stage (raas_step_op off),
    so the fused kernel's decisions are compared with the staged torch code's."""
    gen = torch.Generator(device="cuda").manual_seed(7)
    policy = rf.make_policy(rf.RaaSConfig(budget=2048, page_size=16, policy=name))
    cache, step = seen_cache(policy, batch, 8, 128, n, 4096, torch.bfloat16, "cuda", gen)
    eager = clone_cache(cache)
    compiled = compile_decode_step(None)
    worst_ref = worst_eager = worst_drift = 0.0
    differ, drifted = [], 0
    for i in range(steps):
        q, k, v = decode_inputs(batch, gen)
        out = compiled(q, k, v, cache, policy, step + i, 128 ** -0.5)
        raas_step_op.ENABLED = not staged_eager
        ref_out = decode_step_tensors(q, k, v, eager, policy, step + i, 128 ** -0.5)
        raas_step_op.ENABLED = True
        bad, drift = _differing(cache, eager)
        drifted += drift > 0
        worst_drift = max(worst_drift, drift)
        if bad or drift:  # resync, so that each step is compared from the same state
            if bad:  # decisions diverged (a rounding tie)
                differ.append((i, bad))
            eager = clone_cache(cache)
        ref = reference(q, cache)
        worst_ref = max(worst_ref, float((out.double() - ref).norm() / ref.norm()))
        worst_eager = max(worst_eager, float((out.double() - ref_out.double()).norm()
                                             / ref_out.double().norm()))
    note(kind="check", policy=name, batch=batch, N=n, steps=steps, staged_eager=staged_eager,
         rel_err_vs_f64=worst_ref, rel_err_vs_eager=worst_eager,
         steps_differing=len(differ), first_differ=str(differ[:3]),
         steps_score_drift=drifted, max_score_rel_drift=worst_drift,
         recompiles=recompile_count(compiled))


def check_gated_mass(n: int) -> None:
    """The Triton page-mass kernel against scores.page_mass (torch) on a 128k pool."""
    gen = torch.Generator(device="cuda").manual_seed(5)
    policy = rf.make_policy(rf.RaaSConfig(budget=2048, page_size=16, policy="recycled"))
    cache, _ = seen_cache(policy, 2, 8, 128, n, 4096, torch.bfloat16, "cuda", gen)
    q = decode_inputs(2, gen)[0].view(2, 8, 4, 128)
    expected = page_mass(q, cache, 128 ** -0.5, cache.fill)
    got = gated_page_mass(q, cache, 128 ** -0.5, torch.tensor(True, device="cuda"))
    skipped = page_log_mass(q, cache.k, cache.fill, torch.tensor(False, device="cuda"),
                            128 ** -0.5)
    err = float(((got - expected).abs() / expected.abs().clamp(min=1e-30)).max())
    held = cache.fill > 0
    note(kind="check", policy="gated_page_mass", N=n, max_rel_err=err,
         max_abs_err=float((got - expected).abs().max()),
         same_top_128=bool(torch.equal(
             torch.topk(torch.where(held, got, -1.0), 128).indices.sort(-1).values,
             torch.topk(torch.where(held, expected, -1.0), 128).indices.sort(-1).values)),
         skipped_all_neg_inf=bool(torch.isneginf(skipped).all()))


def timed(method: str, fn, nbytes: int, bw: float, launch: float, **extra) -> float | None:
    try:
        stats = graph_stats_ms(fn)
    except Exception as exc:  # noqa: BLE001 - record and go on
        note(kind="time", method=method, error=f"{type(exc).__name__}: {str(exc)[-400:]}",
             **extra)
        return None
    ms, floor = stats["median_ms"], nbytes / bw * 1e3
    note(kind="time", method=method, median_us=ms * 1e3, mean_us=stats["mean_ms"] * 1e3,
         floor_us=floor * 1e3, over_floor_launch=ms / (floor + launch), **extra)
    return ms


class NoScoreRaaS(RaaSPolicy):
    """RaaS with the score and the timestamp update left out (append, eviction, mask and
    attention kept): what the bound + ranking + update stages cost."""

    def score(self, q, cache, scale):
        return None

    def update(self, cache, scores, step):
        pass


def variant_step(policy, n: int, gen, no_attention: bool = False):
    """The compiled step of `policy` at N, L = 2048, P = 16, batch 1; with no_attention the
    flex call is replaced by a copy of the query (bookkeeping alone)."""
    cache, step = seen_cache(policy, 1, 8, 128, n, cases.KEEP_ALL_MARGIN, torch.bfloat16,
                             "cuda", gen)
    q, k, v = decode_inputs(1, gen)
    compiled = compile_decode_step(None)
    if not no_attention:
        return lambda: compiled(q, k, v, cache, policy, step, cases.SCALE)

    def run():
        original = functional.attend_visible
        functional.attend_visible = lambda query, *args, **kw: query.float() * 1.0
        try:
            return compiled(q, k, v, cache, policy, step, cases.SCALE)
        finally:
            functional.attend_visible = original

    return run


def rkv_scores_probe(n: int, bw: float, launch: float) -> None:
    """rkv's gated page scores alone on a 128k-token state (a 2,048-token pool): the
    Triton kernels against the torch body (on the CPU), then timed due and idle."""
    gen = torch.Generator(device="cuda").manual_seed(3)
    policy = rf.make_policy(rf.RaaSConfig(budget=2048, page_size=16, policy="rkv"))
    cache, _ = seen_cache(policy, 1, 8, 128, n, 4096, torch.bfloat16, "cuda", gen)
    ring = torch.randn(1, 8, 8, 4, 128, device="cuda", generator=gen).bfloat16().float()
    recorded = torch.ones(1, 8, dtype=torch.bool, device="cuda")
    args = (cases.SCALE, None, 0.1, 7)
    for due in (True, False):
        flag = torch.full((1,), due, device="cuda")
        got = rkv_page_scores(ring, recorded, cache.k, cache.fill, flag, None, *args)
        want = rkv_page_scores(ring.cpu(), recorded.cpu(), cache.k.cpu(), cache.fill.cpu(),
                               flag.cpu(), None, *args)
        finite = torch.isfinite(want)
        note(kind="check", policy="rkv_page_scores", due=due,
             same_finite=bool(torch.equal(torch.isfinite(got.cpu()), finite)),
             max_abs_err=float((got.cpu()[finite] - want[finite]).abs().max())
             if finite.any() else 0.0,
             same_order=bool(torch.equal(torch.argsort(got.cpu().flatten(), stable=True),
                                         torch.argsort(want.flatten(), stable=True))))
        timed(f"rkv_page_scores_{'due' if due else 'idle'}",
              lambda: rkv_page_scores(ring, recorded, cache.k, cache.fill, flag, None, *args),
              0, bw, launch, N=n, batch=1)


def peers(names: list[str], checked: list[str], bw: float, launch: float,
          do_profile: bool, batch: int = 1, kv_dtype: str | None = None) -> None:
    """The named policies at N = 128k: checks (of `checked`, batch 1), then times beside
    SDPA at `batch`, over pools of `kv_dtype` (None: bf16)."""
    n = 128 * K
    if "rkv" in names:
        rkv_scores_probe(n, bw, launch)
    for name in checked:
        check(name, 1, n, 200)
        if name == "raas":  # the fused bookkeeping against the staged code
            check(name, 1, n, 200, staged_eager=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    timed("sdpa", *cases.sdpa_dense(n, batch, gen), bw, launch, N=n, batch=batch)
    for name in names:
        (fn, nbytes), cache = cases.policy_step(name, n, 2048, 16, batch, gen, kv_dtype)
        timed(name, fn, nbytes, bw, launch, N=n, batch=batch, kv_dtype=kv_dtype or "bf16")
        if do_profile:
            profile(fn, f"{name} step N=128k B={batch} {kv_dtype or 'bf16'}")
        del cache
        torch.cuda.empty_cache()


def _set_variant(name: str) -> None:
    """Module settings of one --variants row. quest_select_cuda's and triton_pdl's are read
    when the step runs; raas_step_op's when it is traced (a guard of the compiled step, so
    the capture after a change recompiles)."""
    from raas_flex import triton_pdl
    from raas_flex.policies import quest_select_cuda
    triton_pdl.ENABLED = name != "no_pdl"
    quest_select_cuda.ENABLED = name != "triton_select"
    raas_step_op.ENABLED = name != "raas_staged"
    raas_step_layout.CLUSTER_BLOCKS = 1 if name == "raas_one_block" else _RAAS_BLOCKS


# issue 15: lever 36, raas's bookkeeping as one CUDA C++ kernel (vs its stages; with one
# block a row instead of a cluster); lever 35, quest's select in one CUDA C++ launch (vs its
# two Triton kernels); lever 28, programmatic dependent launch
VARIANTS = ("shipped", "raas_staged", "raas_one_block", "triton_select", "no_pdl")


def variants(names: list[str], bw: float, launch: float, do_profile: bool,
             batch: int = 1, n: int = 128 * K, budget: int = 2048) -> None:
    """Each named policy at context n (budget L, P = 16) timed under each of VARIANTS,
    side by side (same state, same step; only module settings change: how the library's
    kernels launch, and which kernels do quest's select and raas's bookkeeping), then
    SDPA again. (Levers 29-31, measured the same way, changed the k-th key search and were
    not kept: bench/NOTES.md.)"""
    gen = torch.Generator(device="cuda").manual_seed(0)
    timed("sdpa", *cases.sdpa_dense(n, batch, gen), bw, launch, N=n, batch=batch)
    for name in names:
        (fn, nbytes), cache = cases.policy_step(name, n, budget, 16, batch, gen)
        for variant in VARIANTS + ("shipped",):
            _set_variant(variant)
            timed(f"{name}[{variant}]", fn, nbytes, bw, launch, N=n, batch=batch,
                  budget=budget)
            if do_profile:
                profile(fn, f"{name}[{variant}] step N={n // K}k B={batch} L={budget}")
        del cache
        torch.cuda.empty_cache()
    _set_variant("shipped")
    timed("sdpa", *cases.sdpa_dense(n, batch, gen), bw, launch, N=n, batch=batch)


def levers(args, bw: float, launch: float, t0: float) -> None:
    """The issue-15 plan (module docstring)."""
    if not args.skip_checks:
        check_gated_mass(128 * K)
        check("recycled", 1, 128 * K, 25)
        check("hsr", 1, 128 * K, 12)
        check("quest", 1, 128 * K, 12)  # 9,217 slots: a keep-all pool at 128k
        check("raas", 1, 4 * K, 20)
        print(f"[checks done {time.time() - t0:.0f}s]", flush=True)

    gen = torch.Generator(device="cuda").manual_seed(0)
    L, P, B = 2048, 16, 1
    for n in (4 * K, 128 * K):
        timed("sdpa", *cases.sdpa_dense(n, B, gen), bw, launch, N=n, batch=B)
    n = 4 * K
    (step_fn, nbytes), cache = cases.policy_step("raas", n, L, P, B, gen)
    timed("raas", step_fn, nbytes, bw, launch, N=n, batch=B)
    if args.profile:
        profile(step_fn, "raas step N=4k")
    timed("flex_pool", *cases.flex_over_pool(cache, B, gen, cache.kernel_options), bw, launch,
          N=n, batch=B)
    config = rf.RaaSConfig(budget=L, page_size=P)
    timed("raas_no_score_update", variant_step(NoScoreRaaS(config), n, gen), nbytes, bw,
          launch, N=n, batch=B)
    bookkeeping = variant_step(RaaSPolicy(config), n, gen, no_attention=True)
    timed("raas_bookkeeping_only", bookkeeping, nbytes, bw, launch, N=n, batch=B)
    if args.profile:
        profile(bookkeeping, "raas bookkeeping only N=4k")
    del cache
    print(f"[{time.time() - t0:.0f}s]", flush=True)
    for name in ("quest", "hsr", "recycled", "raas_hsr"):
        for n in (4 * K, 128 * K):
            (fn, nbytes), cache = cases.policy_step(name, n, L, P, B, gen)
            timed(name, fn, nbytes, bw, launch, N=n, batch=B)
            # what the last replay attended (hsr's threshold is data-dependent)
            note(kind="attended", method=name, N=n,
                 tokens_per_head=int(cache.visible.sum()) // (B * 8))
            if args.profile and n == 128 * K:
                profile(fn, f"{name} step N=128k")
            if n == 128 * K and name in ("hsr", "recycled"):
                policy = rf.make_policy(rf.RaaSConfig(budget=L, page_size=P, policy=name))
                timed(f"{name}_bookkeeping_only", variant_step(policy, n, gen, True), 0,
                      bw, launch, N=n, batch=B)
            del cache
            torch.cuda.empty_cache()
        print(f"[{time.time() - t0:.0f}s]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="levers.json")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--peers", default="", help="comma-separated policies: only these")
    parser.add_argument("--peer-checks", default="", help="of those, the ones to check")
    parser.add_argument("--batch", type=int, default=1, help="--peers' batch")
    parser.add_argument("--kv-dtype", default=None, help="--peers' pool dtype (int8, ...)")
    parser.add_argument("--variants", default="",
                        help="comma-separated policies: each under VARIANTS (after --peers)")
    parser.add_argument("--context-k", type=int, default=128,
                        help="--variants' context, thousands of tokens")
    parser.add_argument("--budget", type=int, default=2048, help="--variants' budget L")
    args = parser.parse_args()
    OUT.append(args.out)
    import triton
    torch._dynamo.config.cache_size_limit = 512
    torch._dynamo.config.accumulated_cache_size_limit = 4096
    t0 = time.time()
    bw, launch = copy_bandwidth(), launch_ms()
    note(kind="device", device=torch.cuda.get_device_name(), torch=torch.__version__,
         triton=triton.__version__, bandwidth_GBps=bw / 1e9, launch_us=launch * 1e3)
    if args.peers:
        peers(args.peers.split(","), [p for p in args.peer_checks.split(",") if p], bw,
              launch, args.profile, args.batch, args.kv_dtype)
    if args.variants:
        variants(args.variants.split(","), bw, launch, args.profile, args.batch,
                 args.context_k * K, args.budget)
    if not (args.peers or args.variants):
        levers(args, bw, launch, t0)
    with open(args.out, "w") as f:
        json.dump(dict(rows=ROWS, wall_s=time.time() - t0,
                       command="python -m bench.latency.decode_levers " + " ".join(sys.argv[1:])),
                  f, indent=1)
    print("\nmethod                     N      us")
    for r in ROWS:
        if r.get("kind") == "time":
            print(f"{r['method']:<26} {r.get('N', 0) // K:>4}k {r.get('median_us', float('nan')):8.1f}")


if __name__ == "__main__":
    main()
