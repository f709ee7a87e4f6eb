"""recycled: Recycled Attention (arXiv 2411.05787), fixed schedule, per page.

Source rule: keep the full cache; every S steps run full attention and remember its
attention scores; on the steps between, attend only the K tokens the last full step
attended most (scores max-pooled over a window of 7 tokens, max over the GQA group),
plus the tokens generated since that full step. The paper evaluates S in {5, 10}; the
default here is period = 10. K = input length / 8 in the paper; here
pages, default budget // page_size pages (the budget in tokens).
Here: the policy counts its own decode steps (policy_state "recycled_step", starting at
0 after prefill), so decode steps 0, S, 2S, ... are full steps whatever numbering the
caller uses for `step`. A full step attends every page, ranks the pages by their exact
attention mass (scores.page_mass, max over the GQA group) and keeps the top `pages` of
them (ties: the older page) with their list in policy_state; a recycled step attends
those pages plus every page opened since the last full step and the current page: the
paper's "tokens generated since".
Deviations [project choices]: page granularity (a page's mass is the sum over its tokens,
instead of max-pooling token scores over a 7-token window); fixed schedule only (the
paper's query-similarity schedule is not implemented); keeps every page (O(N) memory).
Cost: a recycled step reads no token data and ranks nothing. The exact page mass is one
custom op (gated_mass.page_log_mass) that always launches, so the step stays one
branch-free, sync-free graph that CUDA graphs can replay, and reads the keys only when the
device flag "this is a full step" is set (on CUDA its Triton programs skip every load
otherwise; on the CPU it is plain torch, computed and discarded). The top pages are chosen
on the full step only (keep_all_ops.select_top_slots_into, gated by the same flag: Triton
on CUDA) and kept with their list; between full steps the kernel's block list is that list
followed by the pages opened since, a contiguous range of slots because a keep-all pool
opens page p in slot p (cache.slots.next_keep_all_slot): O(S) pointwise, no select, no
prefix sum (issue 15, lever 26).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import Blocks, ConfigView, Policy, PolicyOptions, check_int
from raas_flex.policies.gated_mass import gated_page_mass
from raas_flex.policies.keep_all_ops import select_top_slots_into

TOP = "recycled_top"  # [B, H, S] bool: the pages the last full step chose
TOP_INDEX = "recycled_top_index"  # [B, H, k] int64: those pages first, in rank order
FULL_CURRENT = "recycled_full_current"  # [B, H] int64: the current slot at that step
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
        state = cache.policy_state
        state[TOP] = torch.zeros_like(cache.fill, dtype=torch.bool)
        B, H = cache.current.shape
        state[TOP_INDEX] = cache.current.new_zeros((B, H, self.top_pages(cache)))
        state[FULL_CURRENT] = torch.zeros_like(cache.current)
        state[STEP] = torch.zeros((), dtype=torch.int64, device=cache.fill.device)

    def top_pages(self, cache: LayerCache) -> int:
        """k: pages chosen on a full step, capped at the pool's slots."""
        return min(self.options.top_pages(self.config), cache.num_slots)

    def is_full_step(self, cache: LayerCache) -> torch.Tensor:
        """[] bool: this (not yet counted) decode step runs full attention."""
        return cache.policy_state[STEP] % self.options.period == 0

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        # NaN unless this is a full step, when nothing reads it.
        return gated_page_mass(q, cache, scale, self.is_full_step(cache))

    def select(self, cache: LayerCache, scores: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        return self.select_blocks(cache, scores, step)[0]

    def select_blocks(self, cache: LayerCache, scores: torch.Tensor,
                      step: torch.Tensor) -> tuple[torch.Tensor, Blocks]:
        """A full step: every held page (slots 0 .. current), and it chooses the top k by
        this step's mass (ties: the older page) for the steps up to the next one. A recycled
        step: those k, then the pages opened since (slots after the full step's current
        one), and the full step's current page while it is still current. Both as visible
        and as the kernel's block list (count [B, H, 1], index [B, H, 1, S] int32), built
        from the same slot ranges so that they list the same pages."""
        state = cache.policy_state
        full = self.is_full_step(cache)
        live = cache.fill > 0
        S, k = cache.num_slots, self.top_pages(cache)
        select_top_slots_into(scores, cache.page_id, live, k, full, state[TOP],
                              state[TOP_INDEX])
        state[FULL_CURRENT].copy_(torch.where(full, cache.current, state[FULL_CURRENT]))
        at_full = state[FULL_CURRENT]  # [B, H]
        current = cache.current
        top = state[TOP]
        # Pages after the top list: the full step's current page while it is current and
        # not among the top, then every page opened since.
        kept = top.gather(-1, at_full[..., None])[..., 0]
        start = at_full + 1 - ((current == at_full) & ~kept).long()  # [B, H]
        listed_top = torch.clamp(at_full + 1, max=k)  # held pages at the full step, capped
        slots = torch.arange(S, device=live.device)  # [S]
        later = (slots >= start[..., None]) & (slots <= current[..., None])  # [B, H, S]
        chosen = live & (full | top | later)
        top_index = torch.nn.functional.pad(state[TOP_INDEX], (0, S - k))  # [B, H, S]
        recycled = torch.where(slots < listed_top[..., None], top_index,
                               start[..., None] + slots - listed_top[..., None])
        index = torch.where(full, slots, recycled).clamp(0, S - 1)
        count = torch.where(full, current + 1, listed_top + current + 1 - start)
        state[STEP].add_(1)
        return (torch.where(chosen, cache.fill, 0),
                (count[..., None].to(torch.int32), index.to(torch.int32)[:, :, None, :]))
