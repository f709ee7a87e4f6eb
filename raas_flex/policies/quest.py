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
from raas_flex.policies.keep_all_ops import page_bound, quest_blocks


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
        return self.select_blocks(cache, scores, step)[0]

    def select_blocks(self, cache: LayerCache, scores: torch.Tensor,
                      step: torch.Tensor) -> tuple[torch.Tensor, Blocks]:
        """The top pages (the current one first; ties: the older page), written into
        cache.visible, and the kernel's block list: exactly those k slots (a listed slot
        that holds nothing has visible 0 and is masked). A top-k select over the S page
        bounds (keep_all_ops.quest_blocks): nothing here reads token data or sorts."""
        count, index = quest_blocks(scores, cache.page_id, cache.fill, cache.current,
                                    cache.visible, self.config.slots)
        return cache.visible, (count, index)
