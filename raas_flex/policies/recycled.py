"""recycled: Recycled Attention (arXiv 2411.05787), fixed schedule, per page.

Source rule: keep the full cache; every S steps run full attention and remember its
attention scores; on the steps between, attend only the K tokens the last full step
attended most (scores max-pooled over a window of 7 tokens, max over the GQA group),
plus the tokens generated since that full step. The paper evaluates S in {5, 10}; the
default here is period = 10. K = input length / 8 in the paper; here
pages, default budget // page_size pages (the budget in tokens).
Here: the policy counts its own decode steps (policy_state "recycled_step", starting at
0 after prefill), so decode steps 0, S, 2S, ... are full steps whatever numbering the
caller uses for `step`. A full step attends every page and stores each page's exact
attention mass (scores.page_mass, max over the GQA group) in policy_state
"recycled_mass"; a recycled step attends the top `pages` pages by that stored
mass (ties: the older page) plus every page opened since the last full step (their
stored mass is +inf) and the current page: the paper's "tokens generated since".
Deviations [project choices]: page granularity (a page's mass is the sum over its tokens,
instead of max-pooling token scores over a 7-token window); fixed schedule only (the
paper's query-similarity schedule is not implemented); keeps every page (O(N) memory).
Cost: a recycled step reads no token data. The exact page mass is one custom op
(gated_mass.page_log_mass) that always launches, so the step stays one branch-free,
sync-free graph that CUDA graphs can replay, and reads the keys only when the device flag
"this is a full step" is set (on CUDA its Triton programs skip every load otherwise; on
the CPU it is plain torch, computed and discarded). The top pages are a select over the S
stored masses (keep_all_ops.select_top_slots: Triton on CUDA) and the kernel's block list
is the chosen pages (masks.chosen_blocks): O(S log S) over page data, no sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import ConfigView, Policy, PolicyOptions, check_int
from raas_flex.policies.gated_mass import gated_page_mass
from raas_flex.policies.keep_all_ops import select_top_slots

MASS = "recycled_mass"  # [B, H, S] float32: page mass at the last full step
STEP = "recycled_step"  # [] int64: decode steps taken so far by this layer


@dataclass(frozen=True)
class RecycledOptions(PolicyOptions):
    """period: full attention every `period` steps. pages: pages attended between full
    steps (besides the pages opened since the last full step); None means budget //
    page_size."""

    prefix = "recycled_"
    keeps_all = True
    reads_exact_keys = True  # exact page mass on full steps
    period: int = 10
    pages: int | None = None

    def __post_init__(self) -> None:
        check_int("recycled_period", self.period, 1, " (1 = full attention every step)")
        if self.pages is not None:
            check_int("recycled_pages", self.pages, 1, ", or None for budget // page_size")

    def top_pages(self, config: ConfigView) -> int:
        """Pages attended between full steps (besides its new pages)."""
        return config.slots if self.pages is None else self.pages


class RecycledPolicy(Policy):
    name = "recycled"
    Options = RecycledOptions

    def init_state(self, cache: LayerCache) -> None:
        cache.policy_state[MASS] = torch.zeros_like(cache.fill, dtype=torch.float32)
        cache.policy_state[STEP] = torch.zeros((), dtype=torch.int64, device=cache.fill.device)

    def is_full_step(self, cache: LayerCache) -> torch.Tensor:
        """[] bool: this (not yet counted) decode step runs full attention."""
        return cache.policy_state[STEP] % self.options.period == 0

    def on_open(self, cache: LayerCache, opened: torch.Tensor, step: torch.Tensor) -> None:
        cache.policy_state[MASS].masked_fill_(opened, float("inf"))

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        # NaN unless this is a full step: select keeps the stored mass then.
        return gated_page_mass(q, cache, scale, self.is_full_step(cache))

    def select(self, cache: LayerCache, scores: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        full = self.is_full_step(cache)
        mass = cache.policy_state[MASS]
        mass.copy_(torch.where(full, scores, mass))
        live = cache.fill > 0
        new = torch.isinf(mass)  # opened since the last full step
        slots = torch.arange(cache.num_slots, device=mass.device)
        current = slots == cache.current[..., None]
        # The top pages among the live, not new ones (ties: the older page); a top-k over
        # S page masses. Equal to rank_descending over those pages < top_pages.
        top, _ = select_top_slots(mass, cache.page_id, live & ~new,
                                  self.options.top_pages(self.config))
        chosen = live & (full | top | new | current)
        cache.policy_state[STEP].add_(1)
        return torch.where(chosen, cache.fill, 0)
