"""Fidelity under teacher forcing: how far a policy's next-token distribution drifts from
dense attention on the same text, step by step, for any local causal LM.

Both runs decode through model.generate() (so the policy's cache is the one used), with a
logits processor that records each step's scores and then forces the reference token. With
greedy settings and no other processors, the recorded scores are the raw logits. Sequences
run one at a time (B = 1), so texts of any length need no padding.
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
    """Hands each step's scores [1, V] to on_step(t, scores), then forces targets[t]."""

    def __init__(self, prompt_len: int, targets: torch.Tensor, on_step) -> None:
        self.prompt_len, self.targets, self.on_step = prompt_len, targets, on_step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1] - self.prompt_len
        self.on_step(t, scores.float())
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.targets[t]] = 0.0
        return forced


@torch.no_grad()
def forced_decode(model, prompt: list[int], targets: list[int], on_step) -> None:
    ids = torch.tensor([prompt], device=model.device)
    tgt = torch.tensor(targets, device=model.device)
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(targets),
                   min_new_tokens=0, do_sample=False,
                   pad_token_id=model.generation_config.pad_token_id or 0,
                   logits_processor=LogitsProcessorList([_Forcer(len(prompt), tgt, on_step)]))


def dense_logprobs(model, prompt, targets) -> torch.Tensor:
    """[T, V] log-probabilities of the plain model (no raas_flex) along the forced text."""
    steps = []
    forced_decode(model, prompt, targets, lambda t, s: steps.append(torch.log_softmax(s[0], -1)))
    return torch.stack(steps)


def compare(model, prompt, targets, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step: KL(dense || this model) [T] and top-1 agreement [T] (bool)."""
    kls, agree = [], []

    def on_step(t, scores):
        logq = torch.log_softmax(scores[0], -1)
        logp = reference[t]
        kls.append((logp.exp() * (logp - logq)).sum().clamp_min(0.0))
        agree.append(logp.argmax() == logq.argmax())

    forced_decode(model, prompt, targets, on_step)
    return torch.stack(kls).cpu(), torch.stack(agree).cpu()


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
                budget, max(len(p) for p, _ in pairs), s.page_size, policy)
            (skipped if why else units).append(
                {"policy": policy, "budget_fraction": frac, "reason": why} if why
                else (policy, frac, budget))
    bar = tqdm(total=len(pairs) * (1 + len(units)), disable=not progress, desc="fidelity")
    results = {u: ([], []) for u in units}
    for prompt, targets in pairs:
        reference = dense_logprobs(model, prompt, targets)
        bar.update(1)
        for unit in units:
            policy, _, budget = unit
            bar.set_postfix(policy=policy, L=budget)
            with policy_applied(model, applier, policy, budget, s.page_size, **s.policy_config) as m:
                kl, agree = compare(m, prompt, targets, reference)
            results[unit][0].append(kl)
            results[unit][1].append(agree)
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
