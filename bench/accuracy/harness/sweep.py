"""Accuracy vs budget: every policy x budget fraction on the same held-out problems.

All problems of a sweep belong to one task family and have the same chain length
(decode_tokens), so the budget fractions mean the same thing for each, and batches need no
padding; a run over several families (cli.py --families) is one sweep per family.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from bench.accuracy.harness.policies import (
    FRACTIONS, PEER_POLICIES, Applier, budget_problem, budget_tokens, policy_applied,
)
from bench.accuracy.harness.stats import wilson
from bench.accuracy.reasoner import greedy_outputs, score_outputs
from bench.accuracy.tasks import TaskSpec, WordTokenizer, family, make_problems

KEEP_ALL = ("dense",)  # policies that run once, at budget_fraction 1.0


@dataclass(frozen=True)
class SweepSettings:
    """What to run. reference adds a row 'hf': plain transformers generate, no raas_flex."""

    decode_tokens: int = 2048
    family: str = "registers"
    n: int = 128
    seed: int = 0
    policies: tuple[str, ...] = PEER_POLICIES
    fractions: tuple[float, ...] = FRACTIONS
    page_size: int = 16
    batch_size: int = 64
    slack: float = 1.25  # max_new_tokens = slack x the correct chain's length
    reference: bool = True
    policy_config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        family(self.family)  # a clear error for an unknown family
        if self.n < 1 or self.batch_size < 1:
            raise ValueError("n and batch_size must be >= 1.")
        if self.slack < 1.0:
            raise ValueError(f"slack={self.slack}; use >= 1 so a correct chain can finish.")
        bad = [f for f in self.fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"budget fractions {bad} must lie in (0, 1].")


def _units(s: SweepSettings, prompt_tokens: int, max_new: int) -> tuple[list, list]:
    """(policy, fraction, budget) runs, and the skipped ones with the reason."""
    units, skipped = [], []
    if s.reference:
        units.append(("hf", 1.0, None))
    full = -(-(prompt_tokens + max_new) // s.page_size) * s.page_size
    for policy in s.policies:
        if policy in KEEP_ALL:
            units.append((policy, 1.0, full))
            continue
        for frac in s.fractions:
            budget = budget_tokens(frac, s.decode_tokens, s.page_size)
            why = budget_problem(budget, prompt_tokens, s.page_size, policy, s.policy_config)
            if why:
                skipped.append({"policy": policy, "budget_fraction": frac, "reason": why})
            else:
                units.append((policy, frac, budget))
    return units, skipped


def run_accuracy(model, tok: WordTokenizer, spec: TaskSpec, s: SweepSettings,
                 applier: Applier | None, progress: bool = True) -> dict:
    """Rows of {policy, budget_fraction, accuracy, ci_low, ci_high, n, ...}; see module doc."""
    problems = make_problems("test", s.n, s.decode_tokens, seed=s.seed, spec=spec, family=s.family)
    max_new = int(s.slack * len(problems[0].chain.split()))
    units, skipped = _units(s, spec.prompt_tokens, max_new)
    if applier is None and any(u[0] != "hf" for u in units):
        raise RuntimeError("policies other than the 'hf' reference need an applier (apply_raas).")
    batches = [problems[i: i + s.batch_size] for i in range(0, s.n, s.batch_size)]
    bar = tqdm(total=len(units) * len(batches), disable=not progress, desc="accuracy")
    rows = []
    for policy, frac, budget in units:
        bar.set_postfix(policy=policy, L=budget or "all")
        start, records = time.perf_counter(), []
        with _maybe_applied(model, applier, policy, budget, s) as m:
            for chunk in batches:  # one apply per run: compiled state is reused across batches
                records += score_outputs(chunk, greedy_outputs(m, tok, chunk, max_new), tok, spec)
                bar.update(1)
        row = _row(policy, frac, budget, records, time.perf_counter() - start)
        rows.append({"family": s.family, **row, "dtype": dtype_name(model.dtype)})
    bar.close()
    skipped = [{"family": s.family, **x} for x in skipped]
    return {"rows": rows, "skipped": skipped, "max_new_tokens": max_new,
            "correct_decode_tokens": len(problems[0].chain.split()),
            "prompt_tokens": spec.prompt_tokens}


def _maybe_applied(model, applier, policy: str, budget, s: SweepSettings):
    """The plain model for the 'hf' reference, else the model under the policy."""
    if policy == "hf":
        return contextlib.nullcontext(model)
    return policy_applied(model, applier, policy, budget, s.page_size, **s.policy_config)


def _row(policy: str, frac: float, budget: int | None, records: list[dict], seconds: float) -> dict:
    n, k = len(records), sum(r["correct"] for r in records)
    lo, hi = wilson(k, n)
    errors = [r["first_error_step"] for r in records if r["first_error_step"] is not None]
    kinds = [r["first_error_phoenix"] for r in records if r["first_error_phoenix"] is not None]
    return {
        "policy": policy, "budget_fraction": frac, "budget_tokens": budget,
        "accuracy": k / n, "ci_low": lo, "ci_high": hi, "n": n, "correct": k,
        "chain_accuracy": sum(r["chain_ok"] for r in records) / n,
        "mean_generated_tokens": sum(r["generated_tokens"] for r in records) / n,
        "mean_first_error_step": sum(errors) / len(errors) if errors else None,
        # share of broken chains whose first wrong step reads a prompt fact (a phoenix read);
        # ~1/fact_every when errors fall anywhere, near 1 when a policy loses the prompt
        "phoenix_error_share": sum(kinds) / len(kinds) if kinds else None,
        # the step kind (families.py) of each broken chain's first wrong step, counted
        "first_error_kinds": dict(Counter(r["first_error_kind"] for r in records
                                          if r.get("first_error_kind"))),
        "seconds": round(seconds, 2),
    }


def dtype_name(dtype) -> str:
    """'float32' for torch.float32: the dtype column of a row."""
    return str(dtype).removeprefix("torch.")
