"""End-to-end generate() on a Llama-3.2-1B-shaped random-weight model (bf16, GPU): tokens/s
and per-token latency as the decode grows, KV-cache bytes and GPU memory, for dense (SDPA,
static cache, compiled by generate()) vs RaaS (apply_raas(compile=True, cuda_graph=True),
L = 1024 and 2048). Run from the repository root:

    python -m bench.e2e.generate                 # H100: batch 8, up to 32k tokens
    python -m bench.e2e.generate --tiny --device cpu --max-new-tokens 96 --no-compile

Writes bench/results/e2e/generate_<device>.json (rows: method, L, batch, decode_len, tokens_per_s,
per_token_ms, kv_bytes, allocated_bytes, ...) and PNGs (tokens/s and memory vs decode length).
Each method stops at --max-new-tokens or after --time-cap seconds of decoding, whichever comes
first; the rows say how far it got. The model's eos_token_id is unset, so no sequence ends
early.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from bench.e2e.models import build_llama
from raas_flex.hf.compat import returned_cache

PROMPT_LEN = 128
CHECK_TOKENS = 48  # warm-up length; also the graph-vs-direct token comparison


def llama_1b(device: str, tiny: bool):
    """Llama-3.2-1B shapes (16 layers, 2048 hidden, 32 q / 8 kv heads, head_dim 64), bf16."""
    return build_llama("tiny" if tiny else "llama-3.2-1b", device)


class Clock:
    """StoppingCriteria: marks (tokens, time, allocated bytes) every `window` tokens; stops
    every sequence once `cap_s` seconds have passed since the first decoded token."""

    def __init__(self, device: torch.device, cap_s: float, window: int) -> None:
        self.device, self.cap_s, self.window = device, cap_s, window
        self.marks: list[tuple[int, float, int]] = []
        self.start_len: int | None = None
        self.capped = False

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        length = input_ids.shape[1]
        if self.start_len is None:
            self.start_len = length - 1
        done = length - self.start_len
        stop = False
        if done == 1 or done % self.window == 0:
            _sync(self.device)
            now = time.perf_counter()
            self.marks.append((done, now, _allocated(self.device)))
            stop = self.capped = now - self.marks[0][1] > self.cap_s
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated() if device.type == "cuda" else 0


def kv_bytes(cache) -> int:
    """K/V bytes the cache holds (RaaS: pool + its page metadata; dense: static K/V)."""
    if hasattr(cache, "nbytes") and callable(cache.nbytes):  # RaaSCache
        return sum(cache.nbytes())
    return sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))


class StopAfter:
    """StoppingCriteria: stop after `n` new tokens (the warm-up keeps the full run's
    max_new_tokens, so the dense static cache and its compiled graphs have the same shapes)."""

    def __init__(self, prompt_len: int, n: int) -> None:
        self.limit = prompt_len + n

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        done = input_ids.shape[1] >= self.limit
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _generate(model, ids, new_tokens: int, method: str, clock=None):
    from transformers import StoppingCriteriaList
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  return_dict_in_generate=True)
    if method == "dense":
        kwargs["cache_implementation"] = "static"  # generate() compiles the forward on CUDA
    if clock is not None:
        kwargs["stopping_criteria"] = StoppingCriteriaList([clock])
    return model.generate(ids, **kwargs)


def run_one(model, method: str, budget: int | None, args, ids: torch.Tensor,
            graphs: bool) -> tuple[list, dict]:
    """Rows for one method, and facts about the run (warm-up checks, KV bytes, stop reason)."""
    import raas_flex
    device = ids.device
    if method == "raas":
        raas_flex.apply_raas(model, budget=budget, page_size=args.page_size, policy="raas",
                             compile=not args.no_compile, cuda_graph=graphs)
    facts: dict = {"method": method, "L": budget, "cuda_graph": graphs}
    try:
        t0 = time.perf_counter()
        check = StopAfter(ids.shape[1], CHECK_TOKENS)
        warm = _generate(model, ids, args.max_new_tokens, method, check).sequences  # compiles
        _sync(device)
        facts["warmup_s"] = round(time.perf_counter() - t0, 1)
        # generate() compiles a static-cache forward on CUDA (CUDA graphs, reduce-overhead)
        facts["hf_compiled_forward"] = getattr(model, "_compiled_call", None) is not None
        if method == "raas" and graphs:  # replayed graph vs the compiled step called directly
            compiled = raas_flex.hf.patch.raas_state(model).compiled
            facts["graph_captures"] = compiled.graphed.captures
            graphed, compiled.graphed = compiled.graphed, None
            direct = _generate(model, ids, args.max_new_tokens, method, check).sequences
            compiled.graphed = graphed
            facts["graph_vs_direct_tokens_equal"] = bool(torch.equal(direct, warm))
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        clock = Clock(device, args.time_cap, args.window)
        out = _generate(model, ids, args.max_new_tokens, method, clock)
        _sync(device)
        facts.update(kv_bytes=kv_bytes(returned_cache(out)), capped=clock.capped,
                     decoded=out.sequences.shape[1] - ids.shape[1],
                     peak_bytes=torch.cuda.max_memory_allocated() if device.type == "cuda" else 0)
    finally:
        if method == "raas":
            raas_flex.remove_raas(model)
    rows = []
    for (n0, t0, _), (n1, t1, mem) in zip(clock.marks, clock.marks[1:]):
        rows.append(dict(method=method, L=budget, page_size=args.page_size if budget else None,
                         cuda_graph=graphs, batch=ids.shape[0], decode_len=n1,
                         tokens_per_s=ids.shape[0] * (n1 - n0) / (t1 - t0),
                         per_token_ms=(t1 - t0) / (n1 - n0) * 1e3, allocated_bytes=mem,
                         kv_bytes=facts["kv_bytes"], peak_bytes=facts["peak_bytes"]))
    return rows, facts


def plot(rows: list[dict], prefix: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for key, label, suffix in (("tokens_per_s", "tokens/s (whole batch)", "tps"),
                               ("allocated_bytes", "GPU memory allocated (GiB)", "memory")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in sorted({(r["method"], r["L"]) for r in rows}, key=str):
            pts = [(r["decode_len"], r[key] / (2**30 if suffix == "memory" else 1))
                   for r in rows if (r["method"], r["L"]) == name]
            ax.plot(*zip(*pts), label=f"{name[0]}" + (f" L={name[1]}" if name[1] else ""))
        ax.set_xlabel("decoded tokens")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{prefix}_{suffix}.png", dpi=120)
        plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=32768)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2048, 1024])
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time-cap", type=float, default=120.0,
                        help="seconds of decoding per method before it is stopped")
    parser.add_argument("--window", type=int, default=512, help="tokens per measurement")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (CPU smoke run)")
    parser.add_argument("--no-compile", action="store_true", help="eager RaaS (CPU smoke run)")
    parser.add_argument("--methods", default="dense,raas", help="comma-separated: dense, raas")
    parser.add_argument("--autotuned-reductions", action="store_true",
                        help="compile RaaS's decode without raas_flex's Inductor config "
                             "(compile.step.DECODE_INDUCTOR_CONFIG): reduction configs "
                             "timed at first launch, as before lever 37")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import transformers
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    out = args.out or f"bench/results/e2e/generate_{name.split()[-1].lower()}.json"
    torch.manual_seed(0)
    model = llama_1b(args.device, args.tiny)
    weights = _allocated(device)
    vocab = model.config.vocab_size
    ids = torch.randint(1, vocab - 1, (args.batch, PROMPT_LEN), device=device)
    result = dict(device=name, torch=torch.__version__, transformers=transformers.__version__,
                  triton=_triton_version(), weights_bytes=weights, prompt_len=PROMPT_LEN,
                  command="python -m bench.e2e.generate " + " ".join(sys.argv[1:]),
                  args=vars(args), runs=[], rows=[], errors=[])
    if args.autotuned_reductions:  # read by apply_raas's compile backend at compile time
        from raas_flex.compile import step
        step.DECODE_INDUCTOR_CONFIG = {}
    methods = args.methods.split(",")
    runs = [("dense", None)] * ("dense" in methods) + [("raas", b) for b in args.budgets] * (
        "raas" in methods)
    for method, budget in runs:
        t0 = time.time()
        graphs = method == "raas" and device.type == "cuda" and not args.no_compile
        try:
            rows, facts = run_one(model, method, budget, args, ids, graphs)
        except Exception as error:  # recorded, and RaaS retried without graphs, labelled so
            result["errors"].append(f"{method} L={budget} cuda_graph={graphs}: {error!r}")
            print("FAILED:", result["errors"][-1], flush=True)
            if not graphs:
                continue
            rows, facts = run_one(model, method, budget, args, ids, False)
        result["rows"] += rows
        result["runs"].append(facts)
        last = rows[-1] if rows else {}
        print(f"{method:>6} L={budget}: {last.get('tokens_per_s', 0):.0f} tok/s at "
              f"{last.get('decode_len')} tokens, KV {facts['kv_bytes'] / 2**20:.1f} MiB, "
              f"peak {facts['peak_bytes'] / 2**30:.2f} GiB {facts} [{time.time() - t0:.0f}s]",
              flush=True)
        _write(out, result)  # after every method: a later failure keeps the earlier rows
        if device.type == "cuda":
            torch.cuda.empty_cache()
    plot(result["rows"], out.replace(".json", ""),
         f"{name}: Llama-3.2-1B shapes, random weights, bf16, batch {args.batch}")
    return result


def _triton_version() -> str | None:
    try:
        import triton
        return triton.__version__
    except ImportError:
        return None


def _write(path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
