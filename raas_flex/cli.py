"""`raas-flex generate`: decode with a RaaS budget from the command line.

With no --model it builds a small random-weight Llama (no downloads), so the first command
of the README runs on a fresh machine. Prompts are random token ids (random-weight models
have no tokenizer); the point is the budget's effect on speed and memory, not the text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from tqdm import tqdm
from transformers.generation.streamers import BaseStreamer

from raas_flex.config import ATTENTION_KERNELS, KV_DTYPES
from raas_flex.hf.families import FAMILIES
from raas_flex.policies import available_policies


class ProgressStreamer(BaseStreamer):
    """tqdm bar over generated tokens; generate() first sends the prompt, then each step."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, unit="step", desc="decode")
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.bar.update(1)

    def end(self) -> None:
        self.bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raas-flex", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate with a fixed KV budget")
    gen.add_argument("--model", default="llama-small",
                     help="a local checkpoint path or a built-in config name "
                          f"(<family>-tiny / <family>-small, family in {', '.join(FAMILIES)}); "
                          "default llama-small")
    gen.add_argument("--budget", type=int, default=256, help="tokens kept per sequence, "
                     "prompt included (multiple of --page-size)")
    gen.add_argument("--page-size", type=int, default=16, help="tokens per page")
    gen.add_argument("--policy", default="raas", choices=available_policies())
    gen.add_argument("--dense-layers", type=int, default=0,
                     help="first N layers keep every token")
    gen.add_argument("--max-new-tokens", type=int, default=512)
    gen.add_argument("--batch", type=int, default=1)
    gen.add_argument("--prompt-len", type=int, default=32)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy")
    gen.add_argument("--attention-kernel", default="auto", choices=("auto", *ATTENTION_KERNELS),
                     help="decode kernel over the selected pages; auto = flex on CUDA, and "
                          "sdpa (same selection, materialised mask) on CPU, where eager "
                          "FlexAttention costs ~10-50 ms a call; flex whenever --kv-dtype "
                          "is set)")
    gen.add_argument("--kv-dtype", default=None, choices=[d for d in KV_DTYPES if d],
                     help="store the K/V pool in 8 bits with per-token scales")
    gen.add_argument("--compile", action="store_true", help="compile the decode forward")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def generate(args: argparse.Namespace) -> dict:
    """Run one generation and return the summary printed at the end."""
    from raas_flex.hf import apply_raas
    from raas_flex.hf.compat import returned_cache
    from raas_flex.hf.tiny import model_from_name

    model = model_from_name(args.model, seed=args.seed)
    kernel = args.attention_kernel
    if kernel == "auto":
        quantized = args.kv_dtype is not None  # dequantized inside flex only
        kernel = "flex" if model.device.type == "cuda" or quantized else "sdpa"
    apply_raas(model, budget=args.budget, page_size=args.page_size, policy=args.policy,
               compile=args.compile, dense_layers=args.dense_layers,
               attention_kernel=kernel, kv_dtype=args.kv_dtype)
    torch.manual_seed(args.seed)
    vocab = model.config.vocab_size
    ids = torch.randint(2, vocab, (args.batch, args.prompt_len), device=model.device)
    streamer = None if args.no_progress else ProgressStreamer(args.max_new_tokens)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids),
                         max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                         eos_token_id=None, pad_token_id=0, streamer=streamer,
                         return_dict_in_generate=True)
    seconds = time.perf_counter() - start
    new_tokens = args.batch * (out.sequences.shape[1] - args.prompt_len)
    kv_bytes, meta_bytes = returned_cache(out).nbytes()
    return {
        "model": args.model, "policy": args.policy, "attention_kernel": kernel,
        "kv_dtype": args.kv_dtype,
        "budget": args.budget,
        "page_size": args.page_size, "batch": args.batch, "prompt_len": args.prompt_len,
        "new_tokens": new_tokens, "seconds": round(seconds, 3),
        "tokens_per_s": round(new_tokens / seconds, 2),
        "kv_bytes": kv_bytes, "metadata_bytes": meta_bytes,
        "dense_kv_bytes": dense_kv_bytes(model, args.batch, out.sequences.shape[1] - 1),
        "device": str(model.device),
    }


def dense_kv_bytes(model: torch.nn.Module, batch: int, tokens: int) -> int:
    """Bytes a dense cache (K and V of every token, every layer) would hold."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    itemsize = next(model.parameters()).element_size()
    return (2 * config.num_hidden_layers * batch * config.num_key_value_heads * tokens
            * head_dim * itemsize)


def print_summary(summary: dict) -> None:
    held, meta, dense = (summary[k] / 2**20 for k in ("kv_bytes", "metadata_bytes",
                                                         "dense_kv_bytes"))
    print(f"{summary['new_tokens']} tokens in {summary['seconds']:.2f} s: "
          f"{summary['tokens_per_s']:.1f} tokens/s on {summary['device']} "
          f"({summary['policy']} policy, {summary['attention_kernel']} kernel)")
    print(f"KV held: {held:.2f} MiB (+{meta:.2f} MiB metadata) vs {dense:.2f} MiB dense "
          f"({held / max(dense, 1e-12):.1%})")
    print(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        print_summary(generate(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
