"""h2o_rate: h2o_horizon judged by attention mass per step held, not summed [ours] (issue 17).

Rule: h2o_horizon's (h2o_horizon.py: each held page collects its exact attention mass, max
over the GQA group, decayed by gamma = 1 - 1/(horizon x budget) each step; the lowest key
outside the recent window is evicted; the prompt pinned under keep_prefill), except that
the key is the decayed sum divided by the decayed count of steps the page has been held,
age <- gamma * age + 1: the page's mean attention per step over its (recent) life.

Why (accuracy v2, bench/results/accuracy/v2_tune3/): a sum grows with the time a page has
been held. Under attention that is spread over the whole pool, the oldest pages then hold
the largest sums whatever they contain, and a page leaving the recent window (a few hundred
steps of mass) loses to them: h2o-style pools drift towards "the oldest pages plus the
window", and the band just beyond the window (which registers at L = 1/8 needs) is what
goes. A mean compares pages of every age on the same footing. What it risks: a page read
heavily early and then only glanced at (recall's notes) keeps its sum but not its mean.
Deviations from h2o_horizon: the division only (same window, decay, page granularity, GQA
max, zero state for a newly opened page). O(L) memory (two floats per held page) and time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.h2o import ACCUMULATED, PROTECTED
from raas_flex.policies.h2o_horizon import H2OHorizonOptions, H2OHorizonPolicy

HELD_STEPS = "h2o_rate_held_steps"  # [B, H, S] float32 decayed count of steps held


@dataclass(frozen=True)
class H2ORateOptions(H2OHorizonOptions):
    """As h2o_horizon's: recent_ratio (0.5), recent_tokens (0), horizon (4.0)."""

    prefix = "h2o_rate_"


class H2ORatePolicy(H2OHorizonPolicy):
    name = "h2o_rate"
    Options = H2ORateOptions

    def init_state(self, cache: LayerCache) -> None:
        super().init_state(cache)
        cache.policy_state[HELD_STEPS] = torch.zeros_like(cache.fill, dtype=torch.float32)

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        state = cache.policy_state
        rate = state[ACCUMULATED] / state[HELD_STEPS].clamp_min(1.0)
        return torch.where(self.in_recent_window(cache), PROTECTED, rate)

    def on_open(self, cache: LayerCache, opened: torch.Tensor, step: torch.Tensor) -> None:
        super().on_open(cache, opened, step)
        cache.policy_state[HELD_STEPS].masked_fill_(opened, 0.0)

    def update(self, cache: LayerCache, scores: torch.Tensor, step: torch.Tensor) -> None:
        super().update(cache, scores, step)
        cache.policy_state[HELD_STEPS].mul_(self.gamma).add_(1.0)
