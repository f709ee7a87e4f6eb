"""Fidelity under teacher forcing: how far a policy's next-token distribution drifts from
dense attention on the same text, step by step, for any local causal LM.

Both runs decode through model.generate() (so the policy's cache is the one used), with a
logits processor that records each step's scores and then forces the reference token. With
greedy settings and no other processors, the recorded scores are the raw logits. Sequences
whose prompt and continuation lengths agree run as one batch (every task family's test
problems do), so no padding is ever needed; others run one at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from bench.accuracy.harness.policies import (
    FRACTIONS, PEER_POLICIES, Applier, budget_problem, budget_tokens, policy_applied,
)


@dataclass(frozen=True)
class FidelitySettings:
    prompt_tokens: int = 128
    decode_tokens: int = 1024
    n: int = 8
    policies: tuple[str, ...] = PEER_POLICIES
    fractions: tuple[float, ...] = FRACTIONS
    page_size: int = 16
    bin_tokens: int = 64  # KL curve resolution
    policy_config: dict = field(default_factory=dict)


def load_sequences(path: str | Path, encode: Callable[[str], list[int]], s: FidelitySettings
                   ) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, continuation ids) pairs from a .txt (cut into windows) or .jsonl file
    (each line {"text": ...}, or {"prompt": ..., "completion": ...})."""
    path, pairs = Path(path), []
    window = s.prompt_tokens + s.decode_tokens
    if path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if "prompt" in rec and "completion" in rec:
                pairs.append((encode(rec["prompt"]), encode(rec["completion"])[: s.decode_tokens]))
            elif "text" in rec:
                ids = encode(rec["text"])[:window]
                pairs.append((ids[: s.prompt_tokens], ids[s.prompt_tokens:]))
            else:
                raise ValueError(f"{path}: each jsonl line needs 'text' or 'prompt'+'completion'.")
    else:
        ids = encode(path.read_text())
        pairs = [(ids[i: i + s.prompt_tokens], ids[i + s.prompt_tokens: i + window])
                 for i in range(0, max(0, len(ids) - window) + 1, window)]
    pairs = [p for p in pairs if p[0] and len(p[1]) >= 2][: s.n]
    if not pairs:
        raise ValueError(f"{path} gave no sequence of >= {s.prompt_tokens} + 2 tokens.")
    return pairs


class _Forcer(LogitsProcessor):
    """Hands each step's scores [B, V] to on_step(t, scores), then forces targets[:, t]."""

    def __init__(self, prompt_len: int, targets: torch.Tensor, on_step) -> None:
        self.prompt_len, self.targets, self.on_step = prompt_len, targets, on_step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1] - self.prompt_len
        self.on_step(t, scores.float())
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, self.targets[:, t: t + 1], 0.0)
        return forced


@torch.no_grad()
def forced_decode(model, prompts: list[list[int]], targets: list[list[int]], on_step) -> None:
    """Decode a batch of equal-length prompts, forcing equal-length targets."""
    ids = torch.tensor(prompts, device=model.device)  # [B, P]
    tgt = torch.tensor(targets, device=model.device)  # [B, T]
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tgt.shape[1],
                   min_new_tokens=0, do_sample=False,
                   pad_token_id=model.generation_config.pad_token_id or 0,
                   logits_processor=LogitsProcessorList([_Forcer(ids.shape[1], tgt, on_step)]))


@torch.no_grad()
def dense_logprobs(model, prompts, targets) -> torch.Tensor:
    """[B, T, V] log-probabilities of the plain model (no raas_flex) along the forced text.

    One causal forward over prompt + targets: position P - 1 + t predicts target t, which is
    what a dense step-by-step decode computes (same weights, same causal attention), in one
    pass instead of T eager steps (the reference used to dominate a fidelity run's time).
    Only kernel rounding differs from a step-by-step decode (tested in fp32)."""
    ids = torch.tensor([p + t for p, t in zip(prompts, targets)], device=model.device)  # [B, P+T]
    P, T = len(prompts[0]), len(targets[0])
    logits = model(ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    return torch.log_softmax(logits[:, P - 1: P - 1 + T].float(), -1)


def compare(model, prompts, targets, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row and step: KL(dense || this model) [B, T] and top-1 agreement [B, T] (bool)."""
    kls, agree = [], []

    def on_step(t, scores):
        logq = torch.log_softmax(scores, -1)  # [B, V]
        logp = reference[:, t]
        kls.append((logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0))
        agree.append(logp.argmax(-1) == logq.argmax(-1))

    forced_decode(model, prompts, targets, on_step)
    return torch.stack(kls, 1).cpu(), torch.stack(agree, 1).cpu()


def same_length_groups(pairs) -> list[tuple[list[list[int]], list[list[int]]]]:
    """(prompts, targets) batches of pairs whose prompt and target lengths agree."""
    groups: dict[tuple[int, int], tuple[list, list]] = {}
    for prompt, target in pairs:
        g = groups.setdefault((len(prompt), len(target)), ([], []))
        g[0].append(prompt)
        g[1].append(target)
    return list(groups.values())


def run_fidelity(model, pairs, s: FidelitySettings, applier: Applier, progress: bool = True) -> dict:
    """Rows {policy, budget_fraction, budget_tokens, mean_kl, p95_kl, max_kl, top1_agreement,
    n_sequences, n_steps} and mean-KL curves by position bin."""
    units, skipped = [], []
    for policy in s.policies:
        fracs = (1.0,) if policy == "dense" else s.fractions
        for frac in fracs:
            decode = max(len(t) for _, t in pairs)
            budget = budget_tokens(frac, decode, s.page_size)
            if policy == "dense":
                budget = -(-(max(len(p) for p, _ in pairs) + decode) // s.page_size) * s.page_size
            why = None if policy == "dense" else budget_problem(
                budget, max(len(p) for p, _ in pairs), s.page_size, policy, s.policy_config)
            (skipped if why else units).append(
                {"policy": policy, "budget_fraction": frac, "reason": why} if why
                else (policy, frac, budget))
    groups = same_length_groups(pairs)
    bar = tqdm(total=len(groups) * (1 + len(units)), disable=not progress, desc="fidelity")
    results = {u: ([], []) for u in units}
    for prompts, targets in groups:
        reference = dense_logprobs(model, prompts, targets)
        bar.update(1)
        for unit in units:
            policy, _, budget = unit
            bar.set_postfix(policy=policy, L=budget)
            with policy_applied(model, applier, policy, budget, s.page_size, **s.policy_config) as m:
                kl, agree = compare(m, prompts, targets, reference)
            results[unit][0].extend(kl.unbind(0))  # one [T] tensor per sequence
            results[unit][1].extend(agree.unbind(0))
            bar.update(1)
    bar.close()
    rows, curves = [], {}
    for (policy, frac, budget), (kls, agrees) in results.items():
        flat, hits = torch.cat(kls), torch.cat(agrees).float()
        rows.append({"policy": policy, "budget_fraction": frac, "budget_tokens": budget,
                     "mean_kl": flat.mean().item(), "p95_kl": flat.quantile(0.95).item(),
                     "max_kl": flat.max().item(), "top1_agreement": hits.mean().item(),
                     "n_sequences": len(kls), "n_steps": flat.numel()})
        curves[f"{policy}@{frac:g}"] = _binned(kls, s.bin_tokens)
    return {"rows": rows, "curves": curves, "skipped": skipped}


def _binned(kls: list[torch.Tensor], width: int) -> list[float]:
    """Mean KL per block of `width` decode positions, over sequences that reach it."""
    longest = max(k.numel() for k in kls)
    out = []
    for lo in range(0, longest, width):
        parts = [k[lo: lo + width] for k in kls if k.numel() > lo]
        out.append(torch.cat(parts).mean().item())
    return out
