"""One `raas-flex generate` run: check every argument, load, decode, report.

The checks (`plan_run`) run before a model is built, so a bad argument costs no load time;
what is shown during and after the run lives in raas_flex.cli_report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from raas_flex.cli_report import (
    DecodeClock, Timing, dense_kv_bytes, print_summary, print_texts, warnings_above_bar,
)
from raas_flex.compile.step import refuse_quantized_off_cuda
from raas_flex.config import RaaSConfig
from raas_flex.hf.families import FAMILIES
from raas_flex.policies import policy_class
from raas_flex.sizing import check_prompt_fits

# A checkpoint run without --prompt continues this (random ids are for random weights only).
DEFAULT_PROMPT = ("Question: a train covers 120 km in 1.5 hours. What is its average speed? "
                  "Think step by step.")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
BUILTIN_HELP = (f"<family>-tiny or <family>-small, family in {', '.join(FAMILIES)}: random "
                "weights, no download")


def tensor_parallel_ranks() -> int:
    """Processes torchrun started (WORLD_SIZE); > 1 loads the checkpoint with tp_plan="auto"."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_first_rank() -> bool:
    """Only rank 0 prints: every rank decodes the same tokens."""
    return int(os.environ.get("RANK", "0")) == 0


class UsageError(ValueError):
    """A bad command-line argument, found before any model is built (exit status 2)."""


@dataclass(frozen=True)
class Plan:
    """What the arguments decide, all checked before a model is built."""

    builtin: tuple[str, str] | None  # (family, size) of a built-in model; None: a checkpoint
    device: torch.device
    dtype: torch.dtype
    config: RaaSConfig
    tokenizer: object | None  # the checkpoint's tokenizer, None for a built-in model
    prompt_ids: torch.Tensor | None  # [B, T] the tokenized prompt; None: random ids


def run_generate(args: argparse.Namespace) -> dict:
    """Decode as the arguments say, print the text (if any) and the summary; return it."""
    plan = plan_run(args)
    model = load_model(args, plan)
    from raas_flex.hf import apply_raas
    from raas_flex.hf.cache_stats import stats
    from raas_flex.hf.compat import returned_cache

    apply_raas(model, plan.config, compile=args.compile)
    torch.manual_seed(args.seed)
    ids = plan.prompt_ids
    if ids is None:
        ids = torch.randint(2, model.config.vocab_size, (args.batch, args.prompt_len))
    ids = ids.to(model.device)  # under tensor parallelism, this rank's device
    out, clock = decode(model, ids, args, pad_token_id(model, plan.tokenizer))
    report = stats(returned_cache(out))
    summary = summarize(args, plan, model, out, clock.timing(), report)
    if is_first_rank():
        if plan.tokenizer is not None:
            print_texts(plan.tokenizer, out.sequences)
        print_summary(summary, str(report))
    return summary


def plan_run(args: argparse.Namespace) -> Plan:
    """Every check that needs no model: names, device, dtype, the RaaS config, the prompt."""
    builtin = builtin_model(args.model)
    if builtin is not None and args.prompt is not None:
        raise UsageError(f"--prompt needs --model PATH, a checkpoint with its tokenizer: the "
                         f"built-in {args.model} has random weights and no tokenizer (it "
                         "decodes random ids of --prompt-len tokens).")
    if builtin is None:
        check_checkpoint(Path(args.model))
    elif tensor_parallel_ranks() > 1:
        raise UsageError(f"under torchrun ({tensor_parallel_ranks()} processes) the model is "
                         "sharded as it loads, so --model must be a checkpoint folder: save a "
                         "model with model.save_pretrained(DIR) (and its tokenizer), then "
                         "pass --model DIR.")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = raas_config(args, device)
    tokenizer = ids = None
    if builtin is None:
        tokenizer = load_tokenizer(args.model)
        ids = tokenize(tokenizer, args.prompt or DEFAULT_PROMPT, args.batch)
    prompt_tokens = args.prompt_len if ids is None else ids.shape[1]
    if not policy_class(config.policy).Options.keeps_all:
        _as_usage(check_prompt_fits, config, prompt_tokens)
    return Plan(builtin, device, dtype, config, tokenizer, ids)


def builtin_model(name: str) -> tuple[str, str] | None:
    """(family, size) if `name` is a built-in model such as llama-small, else None."""
    from raas_flex.hf.tiny import SIZES

    family, _, size = name.rpartition("-")
    return (family, size) if family in FAMILIES and size in SIZES else None


def check_checkpoint(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise UsageError(f"--model {str(path)!r} is neither a built-in model ({BUILTIN_HELP}) "
                         "nor a checkpoint folder with a config.json; raas-flex never "
                         "downloads: fetch one first, e.g. `hf download ORG/NAME --local-dir "
                         "DIR`, and pass --model DIR.")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UsageError(f"{str(path)!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})"
                         f"; save the model's tokenizer there: tokenizer.save_pretrained(DIR).")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda if torch sees a GPU, else cpu; refuse a device torch cannot use."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or "
                         "cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: raas-flex runs on cpu and cuda devices.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: torch {torch.__version__} sees no CUDA device; "
                         "use --device cpu (or auto).")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) "
                         "visible; use cuda:0 .. cuda:N-1.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto -> bfloat16 on CUDA, float32 on the CPU (where bf16 matmuls are slow)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def raas_config(args: argparse.Namespace, device: torch.device) -> RaaSConfig:
    """The validated RaaSConfig, with the kernel resolved for the device."""
    kernel = args.attention_kernel
    if kernel == "auto":  # a quantized pool is dequantized inside flex only
        kernel = "flex" if device.type == "cuda" or args.kv_dtype else "sdpa"
    _as_usage(refuse_quantized_off_cuda, bool(args.kv_dtype and args.compile), device,
              "Drop --compile, or use --device cuda.")
    return _as_usage(RaaSConfig, budget=args.budget, page_size=args.page_size,
                     policy=args.policy, dense_layers=args.dense_layers,
                     attention_kernel=kernel, kv_dtype=args.kv_dtype)


def _as_usage(check, *args, **kwargs):
    """Call `check`; its ValueError/TypeError is a bad argument (UsageError)."""
    try:
        return check(*args, **kwargs)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from error


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def tokenize(tokenizer, text: str, batch: int) -> torch.Tensor:
    ids = tokenizer([text] * batch, return_tensors="pt")["input_ids"]  # [B, T]
    if ids.shape[1] == 0:
        raise UsageError("--prompt tokenizes to no tokens; give some text.")
    return ids


def load_model(args: argparse.Namespace, plan: Plan) -> torch.nn.Module:
    """A built-in random-weight model, or the checkpoint (local files only), on the device."""
    if plan.builtin is not None:
        from raas_flex.hf.tiny import tiny_model

        model = tiny_model(*plan.builtin, seed=args.seed)
    else:
        from transformers import AutoModelForCausalLM

        sharded = tensor_parallel_ranks() > 1
        model = AutoModelForCausalLM.from_pretrained(
            args.model, local_files_only=True, dtype=plan.dtype,
            **({"tp_plan": "auto"} if sharded else {}))
        if args.ignore_eos:
            model.generation_config.eos_token_id = None
        if sharded:  # each rank's shards already sit on its own device
            return model.eval()
    return model.to(device=plan.device, dtype=plan.dtype).eval()


def pad_token_id(model: torch.nn.Module, tokenizer) -> int:
    """The tokenizer's pad id, else the model's pad or end-of-sequence id, else 0."""
    config = model.generation_config
    for candidate in (getattr(tokenizer, "pad_token_id", None), config.pad_token_id,
                      config.eos_token_id):
        if isinstance(candidate, list):
            candidate = candidate[0] if candidate else None
        if candidate is not None:
            return candidate
    return 0


def decode(model: torch.nn.Module, ids: torch.Tensor, args: argparse.Namespace,
           pad_id: int):
    """generate() with the clock as streamer; warnings print above the progress bar."""
    clock = DecodeClock(args.max_new_tokens, progress=is_first_rank() and not args.no_progress)
    with warnings_above_bar():
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                             pad_token_id=pad_id, streamer=clock,
                             return_dict_in_generate=True)
    return out, clock


def summarize(args: argparse.Namespace, plan: Plan, model: torch.nn.Module, out,
              timing: Timing, report) -> dict:
    """The run's figures (the JSON line): settings, timing, memory, eviction statistics."""
    from raas_flex.hf.compat import returned_cache

    prompt_len = (args.prompt_len if plan.prompt_ids is None else plan.prompt_ids.shape[1])
    steps = out.sequences.shape[1] - prompt_len
    kv_bytes, meta_bytes = returned_cache(out).nbytes()
    rate = timing.tokens_per_s(args.batch)
    return {
        "model": args.model, "device": str(model.device), "dtype": str(plan.dtype)[6:],
        "tensor_parallel": tensor_parallel_ranks(),
        "policy": plan.config.policy, "attention_kernel": plan.config.attention_kernel,
        "kv_dtype": plan.config.kv_dtype, "compile": args.compile,
        "budget": plan.config.budget, "page_size": plan.config.page_size,
        "batch": args.batch, "prompt_len": prompt_len, "new_tokens": args.batch * steps,
        "seconds": round(timing.total_s, 3), "prefill_s": round(timing.prefill_s, 3),
        "warmup_steps": timing.warmup_steps, "warmup_s": round(timing.warmup_s, 3),
        "decode_steps": timing.decode_steps, "decode_s": round(timing.decode_s, 3),
        "tokens_per_s": None if rate is None else round(rate, 2),
        "kv_bytes": kv_bytes, "metadata_bytes": meta_bytes, "kv_preallocated": True,
        # under tensor parallelism both count this rank's kv heads only
        "dense_kv_bytes": dense_kv_bytes(model, args.batch, out.sequences.shape[1] - 1,
                                         tensor_parallel_ranks()),
        "stats": dataclasses.asdict(report),
    }
