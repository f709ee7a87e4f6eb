"""End-to-end generate() on a Llama-3.2-1B-shaped random-weight model (bf16, GPU):
tokens/s and per-token latency as the decode grows, and GPU memory, for dense (SDPA, static
cache, compiled by generate()) vs RaaS (apply_raas(..., compile=True), L = 1024 and 2048).

STATUS: uses `raas_flex.apply_raas(model, budget=, page_size=, policy=, compile=)` /
`remove_raas(model)` as they are on main; NOT RUN on a GPU yet (device loans were paused):
no figures from it exist. Run from the repository root:
    PYTHONPATH=$PWD python bench/generate.py [--max-new-tokens 32768] [--out path.json]
Writes bench/results/generate_<device>.json (rows: method, L, decode_len, tokens_per_s,
per_token_ms, allocated_bytes, ...) and two PNGs (tokens/s and memory vs decode length).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

PROMPT_LEN = 128
WINDOW = 512  # tokens per tokens/s measurement window


def llama_1b(device: str = "cuda"):
    """Llama-3.2-1B shapes (16 layers, 2048 hidden, 32 q / 8 kv heads, head_dim 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         vocab_size=128256, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=True,
                         attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None  # decode exactly max_new_tokens
    model.generation_config.pad_token_id = 0
    return model


class Clock:
    """StoppingCriteria that never stops: records per-window time and allocated memory."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float, int]] = []  # (tokens generated, time, bytes)
        self.start_len: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        length = input_ids.shape[1]
        if self.start_len is None:
            self.start_len = length - 1
        done = length - self.start_len
        if done == 1 or done % WINDOW == 0:
            torch.cuda.synchronize()
            self.marks.append((done, time.perf_counter(), torch.cuda.memory_allocated()))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def run_one(model, method: str, budget: int | None, new_tokens: int,
            ids: torch.Tensor) -> list[dict]:
    from transformers import StoppingCriteriaList
    import raas_flex
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if method == "dense":
        kwargs["cache_implementation"] = "static"  # generate() compiles the forward
    else:
        raas_flex.apply_raas(model, budget=budget, page_size=16, policy="raas", compile=True)
    try:
        # Warm-up generate (compilation) kept out of the timed run.
        model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                       **({"cache_implementation": "static"} if method == "dense" else {}))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        clock = Clock()
        model.generate(ids, stopping_criteria=StoppingCriteriaList([clock]), **kwargs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    finally:
        if method != "dense":
            raas_flex.remove_raas(model)
    rows = []
    for (n0, t0, _), (n1, t1, mem) in zip(clock.marks, clock.marks[1:]):
        rows.append(dict(method=method, L=budget, decode_len=n1, batch=ids.shape[0],
                         tokens_per_s=ids.shape[0] * (n1 - n0) / (t1 - t0),
                         per_token_ms=(t1 - t0) / (n1 - n0) * 1e3, allocated_bytes=mem,
                         peak_bytes=peak))
    return rows


def plot(rows: list[dict], prefix: str, device: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for key, label, suffix in (("tokens_per_s", "tokens/s", "tps"),
                               ("allocated_bytes", "GPU memory allocated (GiB)", "memory")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in sorted({(r["method"], r["L"]) for r in rows}, key=str):
            pts = [(r["decode_len"], r[key] / (2**30 if suffix == "memory" else 1))
                   for r in rows if (r["method"], r["L"]) == name]
            ax.plot(*zip(*pts), label=f"{name[0]}" + (f" L={name[1]}" if name[1] else ""))
        ax.set_xlabel("decoded tokens")
        ax.set_ylabel(label)
        ax.set_title(f"{device}: Llama-3.2-1B shapes, random weights, bf16, batch 1")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{prefix}_{suffix}.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-new-tokens", type=int, default=32768)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import transformers
    import triton
    device = torch.cuda.get_device_name()
    out = args.out or f"bench/results/generate_{device.split()[-1].lower()}.json"
    torch.manual_seed(0)
    model = llama_1b()
    weights = torch.cuda.memory_allocated()
    ids = torch.randint(1, 128000, (1, PROMPT_LEN), device="cuda")
    rows: list[dict] = []
    for method, budget in [("dense", None)] + [("raas", b) for b in args.budgets]:
        t0 = time.time()
        rows += run_one(model, method, budget, args.max_new_tokens, ids)
        last = rows[-1]
        print(f"{method:>6} L={budget}: {last['tokens_per_s']:.0f} tok/s at "
              f"{last['decode_len']} tokens, peak {last['peak_bytes'] / 2**30:.2f} GiB "
              f"[{time.time() - t0:.0f}s]", flush=True)
        torch.cuda.empty_cache()
    result = dict(device=device, torch=torch.__version__, triton=triton.__version__,
                  transformers=transformers.__version__, weights_bytes=weights,
                  command="PYTHONPATH=$PWD python " + " ".join(sys.argv), rows=rows)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    plot(rows, out.replace(".json", ""), device)


if __name__ == "__main__":
    main()
