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

import torch

from raas_flex.cache.pool import LayerCache
from dataclasses import dataclass

from raas_flex.policies.base import Policy, PolicyOptions
from raas_flex.policies.scores import page_bound, rank_descending


def top_pages_with_current(cache: LayerCache, scores: torch.Tensor, pages: int) -> torch.Tensor:
    """[B, H, S] bool: the `pages` live slots ranked highest by score, current slot first."""
    slots = torch.arange(cache.num_slots, device=scores.device)
    is_current = slots == cache.current[..., None]  # [B, H, S]
    ranked = torch.where(is_current, float("inf"), scores)
    return (cache.fill > 0) & (rank_descending(ranked, cache.page_id) < pages)


@dataclass(frozen=True)
class QuestOptions(PolicyOptions):
    """No settings of its own: `budget` sets the attended pages, every page is kept."""

    keeps_all = True


class QuestPolicy(Policy):
    name = "quest"
    Options = QuestOptions

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        return page_bound(q, cache, scale)

    def select(self, cache: LayerCache, scores: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        chosen = top_pages_with_current(cache, scores, self.config.slots)
        return torch.where(chosen, cache.fill, 0)
