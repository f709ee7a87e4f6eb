"""raas_hsr: RaaS eviction with HSR's certified threshold selection inside the budget.

Memory and eviction are RaaS's (raas.py: timestamps refreshed by importance, oldest
timestamp evicted, prompt pinned; O(L) memory). Attention is HSR's (hsr.py): of the held
pages, only those whose bound lies within log(1/hsr_epsilon) of the largest, plus the
current page, and policy_state["dropped_mass_bound"] certifies the mass dropped.
Deviation [project choice]: a separate registered name rather than a flag on "raas". The
certificate covers the held pages only: tokens RaaS has evicted are outside any bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.hsr import HSROptions, certify, hsr_visible, init_hsr_state
from raas_flex.policies.raas import RaaSPolicy


@dataclass(frozen=True)
class RaaSHSROptions(HSROptions):
    """HSR's epsilon (flat name hsr_epsilon); RaaS's rule from the core config."""

    keeps_all = False  # RaaS evicts: O(L) memory


class RaaSHSRPolicy(RaaSPolicy):
    name = "raas_hsr"
    Options = RaaSHSROptions

    def init_state(self, cache: LayerCache) -> None:
        super().init_state(cache)
        init_hsr_state(cache)

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        certify(q, cache, scale, self.options.epsilon)
        return super().score(q, cache, scale)  # RaaS's own scores drive its timestamps

    def select(self, cache: LayerCache, scores: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        return hsr_visible(cache)
