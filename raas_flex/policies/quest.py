"""quest: query-aware page selection (Quest, ICML 2024), on the shared paged pool.

Source rule: keep every page (O(N) memory); each decode step rank pages by the upper bound
u_p = Σ_i max(q_i·kmin_p,i, q_i·kmax_p,i) on the page's largest logit and attend the top
pages that fill the token budget, the current page always among them.
Here: the top budget // page_size pages (the current page included, so at most `budget`
tokens are attended), ties going to the older page.
Deviations [project choices]: one selection per kv head, with the bound's max over the
GQA group's query heads (Quest selects per query head); Quest keeps the first two layers
dense (`dense_layers=2` in its code) -- a per-model setting (RaaSConfig.dense_layers) that
this single-layer policy does not apply; `budget` limits attended tokens, not memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import Blocks, Policy, PolicyOptions
from raas_flex.policies.keep_all_ops import quest_bound, select_top_slots


def top_pages_with_current(cache: LayerCache, scores: torch.Tensor, pages: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The `pages` live slots ranked highest by score (ties: the older page), current slot
    first: (chosen [B, H, S] bool, their slot indices [B, H, pages]). A top-k select over
    the S page scores (keep_all_ops.select_top_slots): nothing here reads token data or
    sorts the pool."""
    slots = torch.arange(cache.num_slots, device=scores.device)
    is_current = slots == cache.current[..., None]  # [B, H, S]
    ranked = torch.where(is_current, float("inf"), scores)
    return select_top_slots(ranked, cache.page_id, cache.fill > 0, pages)


@dataclass(frozen=True)
class QuestOptions(PolicyOptions):
    """No settings of its own: `budget` sets the attended pages, every page is kept."""

    keeps_all = True


class QuestPolicy(Policy):
    name = "quest"
    Options = QuestOptions

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        # scores.page_bound as one op: a Triton pass over the summaries on CUDA
        return quest_bound(q, cache.kmax, cache.kmin, cache.fill, scale, cache.softcap)

    def select(self, cache: LayerCache, scores: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        return self.select_blocks(cache, scores, step)[0]

    def select_blocks(self, cache: LayerCache, scores: torch.Tensor,
                      step: torch.Tensor) -> tuple[torch.Tensor, Blocks]:
        """The top pages, and the kernel's block list: exactly those k slots (a listed
        slot that holds nothing has visible 0 and is masked)."""
        chosen, index = top_pages_with_current(cache, scores, self.config.slots)
        B, H, k = index.shape
        count = torch.full((B, H, 1), k, dtype=torch.int32, device=index.device)
        # The list is padded to S entries (the kernel reads the first `count`): Inductor's
        # CPU flex checks that the index is as wide as the pool.
        index = torch.nn.functional.pad(index.to(torch.int32), (0, cache.num_slots - k))
        return torch.where(chosen, cache.fill, 0), (count, index[:, :, None])
