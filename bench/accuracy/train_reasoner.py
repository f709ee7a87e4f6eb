"""Train the small reasoning model on generated chains, time-boxed by wall clock.

    python -m bench.accuracy.train_reasoner --out bench/accuracy/checkpoints/reasoner --minutes 8      # H100
    python -m bench.accuracy.train_reasoner --out $OUT/reasoner_v2 --minutes 8 --greedy-n 32  # all families
    python -m bench.accuracy.train_reasoner --tiny --steps 30 --out /tmp/tiny                  # CPU smoke
    python -m bench.accuracy.train_reasoner --out $OUT/r2 --minutes 7 --init-from bench/accuracy/checkpoints/reasoner \
        --ramp 0 --lr 5e-4 --warmup 20                                               # continue

Teacher forcing on prompt + chain + answer; the loss scores the chain and answer tokens (the
prompt's facts are random, so predicting them teaches nothing). Every batch mixes the
--families (default all four: registers, lemmas, recall, mixture), each row's family drawn
uniformly; one model learns them all, told apart by the prompt's last word. Curriculum: the longest chain
grows linearly from --start-steps to the final length over the first --ramp share of training,
then stays there; every batch holds about --batch-tokens tokens. Schedule and curriculum follow
`progress` = step/--steps when --steps is given (fully determined by --seed), else elapsed
time / --minutes (determined up to where the clock stops it; the step count is logged).
Ends with teacher-forced and dense greedy accuracy on held-out test problems of every family
(--greedy-n per family; 0 skips the slow greedy part), saving the checkpoint before the
greedy check so that a cut-off run keeps it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from bench.accuracy.reasoner import count_parameters, dense_accuracy, model_config, save_checkpoint
from bench.accuracy.tasks import (
    DEFAULT_SPEC, FAMILIES, FAMILY_NAMES, WordTokenizer, fit_steps, make_problems, train_batch,
)
from bench.accuracy.tasks.families import step_kind

SEQ_MULTIPLE = 128  # round sequence lengths up to this, so few distinct shapes occur


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    p.add_argument("--minutes", type=float, default=8.0, help="training wall-clock budget")
    p.add_argument("--steps", type=int, default=None, help="fixed optimizer steps (overrides the clock)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="base", choices=["base", "small", "tiny"])
    p.add_argument("--tiny", action="store_true", help="CPU smoke settings (tiny model, short chains)")
    p.add_argument("--eval-decode-tokens", type=int, default=2048, help="test decode length")
    p.add_argument("--families", nargs="+", default=list(FAMILY_NAMES), choices=FAMILY_NAMES,
                   help="task families mixed in every batch (each row drawn uniformly)")
    p.add_argument("--eval-n", type=int, default=64,
                   help="held-out problems per family for the teacher-forced checks")
    p.add_argument("--greedy-n", type=int, default=None,
                   help="held-out problems per family for the final dense greedy check "
                        "(default --eval-n; 0 skips it: the accuracy harness's 'hf' row is the "
                        "same measurement)")
    p.add_argument("--length-margin", type=float, default=1.1, help="train up to this x the test chain")
    p.add_argument("--start-steps", type=int, default=8, help="longest chain at the start")
    p.add_argument("--ramp", type=float, default=0.5, help="share of training spent growing chains")
    p.add_argument("--batch-tokens", type=int, default=131072)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--log-every-s", type=float, default=15.0)
    p.add_argument("--eval-every-s", type=float, default=60.0, help="teacher-forced test check")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue from a checkpoint's weights (fresh optimizer); pair with "
                        "--ramp 0 to train at full length from the start")
    p.add_argument("--save-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="weights dtype of the checkpoint (and of the final checks)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    args = p.parse_args(argv)
    if args.tiny:
        args.preset, args.eval_decode_tokens, args.eval_n = "tiny", 160, 4
        args.batch_tokens, args.lr, args.warmup, args.start_steps = 4096, 1e-2, 3, 2
        args.log_every_s, args.eval_every_s = 0.0, math.inf  # log every step; check at the end
        args.threads = args.threads or 1  # tiny matmuls: thread hand-offs cost more than they save
    if args.greedy_n is None:
        args.greedy_n = args.eval_n
    return args


def chain_steps(progress: float, start: int, final: int, ramp: float) -> int:
    """Longest chain (in steps) at this point of training."""
    grow = min(1.0, progress / ramp) if ramp > 0 else 1.0
    return max(1, min(final, round(start + (final - start) * grow)))


def lr_factor(step: int, progress: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up by steps, then cosine decay by progress to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def seq_len_for(n_steps: int) -> int:
    need = DEFAULT_SPEC.prompt_tokens + DEFAULT_SPEC.decode_tokens(n_steps)
    return -(-need // SEQ_MULTIPLE) * SEQ_MULTIPLE


def masked_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of the scored targets, and their argmax hits [B, T-1]."""
    logits = model(input_ids=ids[:, :-1]).logits.float()  # (B, T-1, V)
    target, m = ids[:, 1:], mask[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    loss = (ce * m).sum() / m.sum()  # no boolean indexing: it would sync the host every step
    return loss, (logits.argmax(-1) == target) | ~m


@torch.no_grad()
def teacher_forced_check(model, ids: torch.Tensor, mask: torch.Tensor, amp) -> dict:
    """Share of problems whose every chain token is the argmax (= greedy would be exact)."""
    was_training = model.training
    model.eval()
    rows, tokens, hits = 0, 0, 0
    for i in range(0, len(ids), 32):
        with amp():
            _, ok = masked_loss(model, ids[i: i + 32], mask[i: i + 32])
        rows += int(ok.all(-1).sum())
        m = mask[i: i + 32, 1:]
        hits, tokens = hits + int((ok & m).sum()), tokens + int(m.sum())
    model.train(was_training)
    return {"tf_exact": rows / len(ids), "tf_token_acc": hits / tokens}


FIELDS = ("dest", "old", "op", "src", "val", "=", "carry", "res", ";")
KIND_LABELS = {"prev": "regular", "fact": "phoenix"}  # the registers task's names for its kinds


@torch.no_grad()
def field_accuracy(model, ids: torch.Tensor, n_steps: int, amp, family: str = "registers") -> dict:
    """Teacher-forced argmax accuracy per step field (counter digits pooled), split by step
    kind (families.py; registers' prev/fact steps are 'regular'/'phoenix'): says which
    sub-skill a model still lacks. All rows: one family, n_steps steps."""
    spec, model_was_training = DEFAULT_SPEC, model.training
    model.eval()
    hits = []
    for i in range(0, len(ids), 32):
        with amp():
            pred = model(input_ids=ids[i: i + 32, :-1]).logits.argmax(-1)
        hits.append((pred == ids[i: i + 32, 1:]).cpu())
    model.train(model_was_training)
    start = spec.prompt_tokens - 1  # logits at t predict token t + 1
    per = torch.cat(hits)[:, start: start + n_steps * spec.step_tokens]
    per = per.reshape(len(ids), n_steps, spec.step_tokens).float()  # (B, steps, fields)
    kinds = [step_kind(FAMILIES[family], k, n_steps, spec)[0] for k in range(n_steps)]
    names = ("counter",) * spec.counter_digits + FIELDS
    out = {}
    for kind in dict.fromkeys(kinds):
        sel = torch.tensor([x == kind for x in kinds])
        acc = per[:, sel].mean(dim=(0, 1))
        for name in dict.fromkeys(names):
            cols = [j for j, n in enumerate(names) if n == name]
            out[f"{KIND_LABELS.get(kind, kind)}/{name}"] = round(acc[cols].mean().item(), 5)
    return out


def test_tensors(tok, problems, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([tok.encode(p.text) for p in problems], device=device)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, DEFAULT_SPEC.prompt_tokens:] = True
    return ids, mask


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Pinned, asynchronous copy on CUDA, so the host builds the next batch while the GPU works."""
    t = torch.from_numpy(array)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def train(args: argparse.Namespace) -> dict:
    """Run training per `args` (see parse_args); returns the training log."""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _train(args)
    finally:
        torch.set_num_threads(threads)


def _train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    data_rng = np.random.default_rng([args.seed, 17])
    device, tok, spec = torch.device(args.device), WordTokenizer(), DEFAULT_SPEC
    final_steps = math.ceil(spec.steps_for(args.eval_decode_tokens) * args.length_margin)
    max_len = seq_len_for(final_steps)
    from transformers import LlamaForCausalLM

    # max_position_embeddings is metadata for default RoPE: room for the check's slack decode
    positions = max(max_len, 2 * args.eval_decode_tokens)
    config = model_config(args.preset, tok, max_positions=positions, rope_theta=args.rope_theta)
    if args.init_from:  # fp32 master weights from the (bf16) checkpoint
        model = LlamaForCausalLM.from_pretrained(args.init_from, dtype=torch.float32).to(device)
        if model.config.vocab_size != config.vocab_size:
            raise ValueError(f"{args.init_from} has another vocabulary; train from scratch.")
    else:
        model = LlamaForCausalLM(config).to(device)
    model.config.use_cache = False
    n_params = count_parameters(model)
    fwd = torch.compile(model) if args.compile else model
    cuda = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=args.weight_decay, fused=cuda)
    tests = {f: make_problems("test", args.eval_n, args.eval_decode_tokens, seed=args.seed,
                              family=f) for f in args.families}
    test_sets = {f: test_tensors(tok, p[: min(64, len(p))], device) for f, p in tests.items()}
    print(f"model: {n_params / 1e6:.2f}M parameters ({args.preset}), vocab {config.vocab_size}, "
          f"train up to {final_steps} steps = {max_len} tokens, test decode "
          f"{args.eval_decode_tokens} tokens, families {args.families}, device {device}", flush=True)

    log = {"args": {k: str(v) for k, v in vars(args).items()}, "parameters": n_params,
           "final_chain_steps": final_steps, "max_seq_len": max_len, "events": []}
    start, step, seen, scored = time.perf_counter(), 0, 0, 0
    last_log = last_eval = start
    budget_s = args.minutes * 60
    while True:
        elapsed = time.perf_counter() - start
        progress = step / args.steps if args.steps else elapsed / budget_s
        if progress >= 1.0:
            break
        n_max = chain_steps(progress, args.start_steps, final_steps, args.ramp)
        rows = max(1, args.batch_tokens // seq_len_for(n_max))
        fams = [args.families[i] for i in data_rng.integers(0, len(args.families), size=rows)]
        n_steps = data_rng.integers(max(1, n_max // 2), n_max + 1, size=rows)
        n_steps = np.array([fit_steps(FAMILIES[f], int(n), spec) for f, n in zip(fams, n_steps)])
        seq_len = seq_len_for(int(n_steps.max()))  # note families need >= 2 notes + 2 steps
        batch = train_batch(data_rng, n_steps, seq_len, tok, spec, families=fams)
        ids, mask = (_to_device(a, device) for a in (batch.ids, batch.loss_mask))
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, progress, args.warmup, args.min_lr_ratio)
        with amp():
            loss, ok = masked_loss(fwd, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step, seen, scored = step + 1, seen + ids.numel(), scored + int(batch.loss_mask.sum())
        now = time.perf_counter()
        if now - last_log >= args.log_every_s:
            last_log = now
            event = {"step": step, "time_s": round(now - start, 1), "progress": round(progress, 3),
                     "chain_steps": n_max, "seq_len": seq_len, "rows": rows,
                     "loss": round(loss.item(), 5), "lr": opt.param_groups[0]["lr"],
                     "row_exact": round(ok.all(-1).float().mean().item(), 4),
                     "tokens_per_s": round(seen / (now - start))}
            if now - last_eval >= args.eval_every_s:
                last_eval = now
                event["teacher_forced"] = {f: teacher_forced_check(model, *t, amp)
                                           for f, t in test_sets.items()}
            log["events"].append(event)
            print(json.dumps(event), flush=True)
    train_s = time.perf_counter() - start
    log.update(steps=step, train_seconds=round(train_s, 1), tokens_seen=seen,
               scored_tokens=scored, tokens_per_s=round(seen / train_s))
    # checks and checkpoint in the saved dtype: what the harness will load is what is measured
    model = model.to(getattr(torch, args.save_dtype)).eval()
    model.config.use_cache = True
    log["save_dtype"] = args.save_dtype
    log["final_teacher_forced"] = {f: teacher_forced_check(model, *t, amp)
                                   for f, t in test_sets.items()}
    log["final_field_accuracy"] = {f: field_accuracy(model, t[0], tests[f][0].n_steps, amp, f)
                                   for f, t in test_sets.items()}
    print(json.dumps({"field_accuracy": log["final_field_accuracy"]}), flush=True)
    save_checkpoint(model, tok, spec, args.out, log)  # before the slow check: a cut-off keeps it
    print(f"saved {args.out}; greedy check on {args.greedy_n} held-out problems per family...",
          flush=True)
    log["final_dense_greedy"] = {}
    for f, problems in tests.items():
        if args.greedy_n <= 0:
            break
        start = time.perf_counter()
        with amp():
            result = dense_accuracy(model, tok, spec, problems[: args.greedy_n])
        result.update(decode_tokens=args.eval_decode_tokens,
                      seconds=round(time.perf_counter() - start, 1))
        log["final_dense_greedy"][f] = result
        (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
        print(json.dumps({"family": f, "dense_greedy": result}), flush=True)
    print(json.dumps({"steps": step, "train_seconds": log["train_seconds"],
                      "tokens_per_s": log["tokens_per_s"], "parameters": n_params,
                      "teacher_forced": log["final_teacher_forced"], "out": str(args.out)}),
          flush=True)
    return log


def main(argv=None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
