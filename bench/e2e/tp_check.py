"""The greedy token check of bench/e2e/tensor_parallel.py: dense, RaaS evicting and RaaS
above the length, on one sharding; what a row's tokens_equal compares (a 1-GPU reference, or
RaaS above the length against dense); and, per step up to the first difference, the logit
margin against the logit difference, which tells a bf16 near-tie flip from a wrong attention.

Its own file because the timing harness does not need it to run (--no-check)."""

from __future__ import annotations

import json

import torch

from bench.e2e.serve import DENSE
from bench.e2e.sharded_llama import build_sharded_llama


def check_prompt(n: int, vocab: int) -> list[int]:
    return [(7 * i + 3) % (vocab - 2) + 2 for i in range(n)]


def check_tokens(model, args) -> dict:
    """Greedy new tokens (eager generate) of dense, RaaS evicting (--check-budget) and RaaS
    with a budget above prompt + new (keeps every token)."""
    import raas_flex
    ids = torch.tensor([check_prompt(args.check_prompt, model.config.vocab_size)],
                       device=model.device)
    total = args.check_prompt + args.check_new
    above = (total // args.page_size + 1) * args.page_size

    def generate() -> tuple[list[int], list[torch.Tensor]]:
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=args.check_new, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
        return out.sequences[0, args.check_prompt:].tolist(), [x[0] for x in out.logits]

    tokens, logits = {}, {}
    tokens["dense"], logits["dense"] = generate()
    for key, budget in (("raas", args.check_budget), ("raas_full", above)):
        raas_flex.apply_raas(model, budget=budget, page_size=args.page_size)
        try:
            tokens[key], logits[key] = generate()
        finally:
            raas_flex.remove_raas(model)
    upto = first_difference((tokens["raas_full"], tokens["dense"]))
    return dict(tokens=tokens, budgets={"raas": args.check_budget, "raas_full": above},
                logits_raas_full_vs_dense=logit_agreement(logits["dense"], logits["raas_full"],
                                                          upto))


def logit_agreement(dense: list[torch.Tensor], other: list[torch.Tensor],
                    upto: int | None) -> list[dict]:
    """Per new token up to the first differing one (both paths fed the same tokens so far):
    dense's top-1 minus top-2 logit, the largest |dense - other| logit difference and the
    spread (std) of dense's logits. Why: a flip where the difference stays a small share of
    the spread at every step and only beats a near-tied margin is rounding; a difference on
    the scale of the spread is a wrong attention. Each tensor: [vocab]."""
    steps = len(dense) if upto is None else upto + 1
    rows = []
    for i in range(min(steps, len(dense), len(other))):
        a, b = dense[i].float(), other[i].float()
        top = a.topk(2).values
        rows.append(dict(step=i, dense_margin=float(top[0] - top[1]),
                         max_abs_diff=float((a - b).abs().max()), dense_std=float(a.std())))
    return rows


def check_settings(args, model: str) -> dict:
    return dict(model=model, prompt=args.check_prompt, new=args.check_new,
                page_size=args.page_size, dtype=args.check_dtype)


def first_difference(*pairs: tuple[list[int], list[int]]) -> int | None:
    """The first new-token index where any pair differs (None: all equal)."""
    found = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
             for a, b in pairs if a != b]
    return min(found) if found else None


def comparisons(check: dict | None, reference: dict | None, gpus: int) -> dict:
    """{method: {tokens_equal, tokens_compared, tokens_first_difference}} for the rows."""
    if check is None:
        return {m: dict(tokens_equal=None, tokens_compared="not checked in this run "
                        "(--no-check)", tokens_first_difference=None) for m in (DENSE, "raas")}
    tokens = check["tokens"]
    if reference is not None:
        ref = reference["tokens"]
        what = (f"greedy tokens on {gpus} GPU(s) vs the reference run's "
                f"({reference['gpus']} GPU(s)), eager generate, {check['settings']}")
        pairs = {DENSE: ([(tokens["dense"], ref["dense"])], what + ": dense"),
                 "raas": ([(tokens["raas"], ref["raas"]), (tokens["raas_full"], ref["raas_full"])],
                          what + f": RaaS at L={check['budgets']['raas']} (evicting) and "
                          f"L={check['budgets']['raas_full']}")}
    else:
        what = (f"RaaS at L={check['budgets']['raas_full']} (above prompt + new) vs dense, "
                f"both on the same {gpus} GPU(s), eager generate, {check['settings']}")
        same = [(tokens["raas_full"], tokens["dense"])]
        pairs = {DENSE: (same, what), "raas": (same, what)}
    return {method: dict(tokens_equal=all(a == b for a, b in pair), tokens_compared=text,
                         tokens_first_difference=first_difference(*pair))
            for method, (pair, text) in pairs.items()}


def run_check(args, mesh, device: torch.device, world: int, model) -> dict:
    """The check's tokens on this sharding (mesh: None on one rank), on the timed model or a
    separate fp32 build."""
    settings = check_settings(args, args.model)
    if args.check_dtype == "bfloat16":
        check = check_tokens(model, args)
    else:
        fp32 = build_sharded_llama(args.model, mesh, device, torch.float32)
        check = check_tokens(fp32, args)
        del fp32
        if device.type == "cuda":
            torch.cuda.empty_cache()
    check.update(settings=settings, gpus=world)
    return check


def read_reference(path: str, args) -> dict:
    with open(path) as f:
        reference = json.load(f)
    want = check_settings(args, args.model)
    if reference.get("settings") != want:
        raise ValueError(f"--reference {path} was made with {reference.get('settings')}, this "
                         f"run checks {want}; rerun the 1-GPU launch with the same model and "
                         "--check-* options.")
    return reference


def logit_line(rows: list[dict]) -> str:
    """The console summary of logit_agreement's rows."""
    last = rows[-1]
    return (f"check logits, RaaS above the length vs dense, steps 0..{last['step']}: largest "
            f"|diff| {max(r['max_abs_diff'] for r in rows):.3g} (dense logit std "
            f"{last['dense_std']:.3g}); at step {last['step']} dense's top-2 margin "
            f"{last['dense_margin']:.3g}, |diff| {last['max_abs_diff']:.3g}")
