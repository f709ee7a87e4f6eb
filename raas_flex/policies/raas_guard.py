"""raas_guard: RaaS with a recency guard [ours] (docs/algorithms.md).

Rule: RaaS's (raas.py: timestamps restamped by the same importance rule, stalest unpinned
page evicted, prompt pinned, every held page attended), except that the newest W pages of
each (sequence, kv head) are never evicted: W = floor(recent_ratio x budget pages),
recent_ratio = 0.5 by default (W counts budget pages, the pinned prompt's included). The
victim is the stalest page outside the guard; should the guard cover every unpinned page (a
long prompt or a tiny budget), the oldest page goes, as in streaming, and the pool holds the
newest pages that fit.

Why: RaaS's importance is an estimate, and a page that was written recently but has not been
read yet (a register's new value, read again eight steps later) looks stale to it: in the
accuracy task, the victim was often the page just filled. A recent window never loses such
pages; RaaS's timestamps keep what is read again and again far outside any window (a
milestone). The guard gives each its half of the budget: the union of StreamingLLM's held
set (at half the budget) and RaaS's (at the other half). O(L) memory and time, as RaaS.
Deviations from raas [project choice]: the guard, nothing else (importance, top_ratio, alpha
and score_source are the core config's, as for raas).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import FREE, LayerCache
from raas_flex.policies.base import ConfigView, PolicyOptions, check_float
from raas_flex.policies.raas import RaaSPolicy


@dataclass(frozen=True)
class RaaSGuardOptions(PolicyOptions):
    """recent_ratio: share of the budget's pages (rounded down) kept as a recency guard;
    0 gives plain raas."""

    prefix = "raas_guard_"
    recent_ratio: float = 0.5

    def __post_init__(self) -> None:
        check_float("raas_guard_recent_ratio", self.recent_ratio)
        if not 0.0 <= self.recent_ratio < 1.0:
            raise ValueError(f"raas_guard_recent_ratio={self.recent_ratio} must lie in [0, 1).")

    def guard_pages(self, config: ConfigView) -> int:
        """W: pages never evicted, newest first."""
        return int(self.recent_ratio * config.slots)


class RaaSGuardPolicy(RaaSPolicy):
    name = "raas_guard"
    Options = RaaSGuardOptions

    def __init__(self, config: ConfigView) -> None:
        super().__init__(config)
        self.guard = self.options.guard_pages(config)  # a constant of the compiled graph

    def guarded(self, cache: LayerCache) -> torch.Tensor:
        """[B, H, S] bool: the slot holds one of the newest `guard` pages."""
        newest = cache.page_id.amax(-1, keepdim=True)  # [B, H, 1]
        return (cache.page_id != FREE) & (cache.page_id > newest - self.guard)

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        # +inf keeps a guarded page out of reach; when every unpinned page is guarded, they
        # all tie at +inf and the slot chooser takes the oldest page.
        return torch.where(self.guarded(cache), float("inf"), cache.timestamp.double())
