"""Applying a raas_flex policy to a model for the duration of a run, and budget arithmetic.

The harness talks to raas_flex only through `apply_raas(model, budget=, page_size=, policy=,
**config) -> model` and `remove_raas(model)`. They are looked up when a run starts, so this
module imports even where the HF integration is not installed yet, and fails with a clear
message when it is actually needed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

from raas_flex.config import RaaSConfig
from raas_flex.policies import available_policies, policy_class

# Every registered policy but raas_hsr, which has no accuracy run yet (bench/results/accuracy holds
# the eight measured here); pass --policies raas_hsr to measure it.
PEER_POLICIES = tuple(name for name in available_policies() if name != "raas_hsr")
FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)


@dataclass(frozen=True)
class Applier:
    """The two calls the harness needs; tests pass stand-ins."""

    apply: Callable
    remove: Callable


def raas_applier() -> Applier:
    """raas_flex's apply_raas/remove_raas, or a RuntimeError that says what is missing."""
    import raas_flex

    missing = [n for n in ("apply_raas", "remove_raas") if not hasattr(raas_flex, n)]
    if missing:
        raise RuntimeError(
            f"raas_flex ({raas_flex.__file__}) has no {' / '.join(missing)}: the HF integration "
            f"is not merged in this checkout. Merge the apply_raas branch (issue: apply_raas) "
            f"or run with PYTHONPATH pointing at a checkout that has it."
        )
    return Applier(raas_flex.apply_raas, raas_flex.remove_raas)


def budget_tokens(fraction: float, decode_tokens: int, page_size: int) -> int:
    """L = fraction x decode length, rounded to the nearest whole page (at least one page)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"budget fraction {fraction} must lie in (0, 1].")
    return max(page_size, round(fraction * decode_tokens / page_size) * page_size)


def budget_problem(budget: int, prompt_tokens: int, page_size: int,
                   policy: str | None = None, policy_config: dict | None = None) -> str | None:
    """Why a budget cannot run with this prompt (fewer than two decode pages) or, given a
    policy, with that policy's options: its defaults overridden by the flat names in
    `policy_config` (a named variant's settings; e.g. R-KV's default 128-token buffer needs
    a budget of at least 10 pages of 16), or None."""
    prompt_pages = -(-prompt_tokens // page_size)
    if budget // page_size - prompt_pages < 2:
        return (f"budget {budget} leaves {budget // page_size - prompt_pages} decode pages beside "
                f"a {prompt_tokens}-token prompt; the policies need at least 2")
    if policy is not None:
        try:
            flat = policy_class(policy).Options.flat_names()
            own = {k: v for k, v in (policy_config or {}).items() if k in flat}
            RaaSConfig.from_fields(budget=budget, page_size=page_size, policy=policy, **own)
        except ValueError as err:
            return str(err)
    return None


@contextlib.contextmanager
def policy_applied(model, applier: Applier, policy: str, budget: int, page_size: int, **config):
    """Yield the model decoding with `policy`; always undo it, even when generation fails."""
    patched = applier.apply(model, budget=budget, page_size=page_size, policy=policy, **config)
    try:
        yield patched if patched is not None else model
    finally:
        applier.remove(model)
