"""h2o: heavy hitters plus a recent window (H2O, NeurIPS 2023), per page.

Source rule: keep a fixed budget made of the "heavy hitters" -- the tokens with the largest
attention scores accumulated over the decode steps -- and a window of the most recent
tokens, split 1:1 by default; when over budget, evict the token with the lowest
accumulated score outside the recent window.
Here, per page: each step adds every held page's exact attention mass (scores.page_mass
over all held tokens, the max over the GQA group, from one pass over the keys:
gated_mass.held_page_mass) to the page's accumulator; when a page needs room, the unpinned
page with the lowest accumulated mass among those outside the recent window is evicted
(ties: the older page). The window is the most recent max(1, round(recent_ratio · budget
pages)) pages held, recent_ratio = 0.5 by default (the paper's 1:1); with recent_tokens > 0
the window is instead that many tokens' pages, ceil(recent_tokens / page_size), still at most
round(recent_ratio · budget pages) (a span fixed in tokens; issue 17's window sweeps). If
every unpinned page lies in the window, the oldest goes.
Every held token is attended, so a step costs O(L) time and memory.
Deviations [project choices]: page granularity (one accumulator per page, not per
token); the GQA group's mass is reduced by max; accumulation starts at the first
decode step (the prefill's attention is not counted); a page's accumulator starts at zero when it
is opened (newer pages have had fewer steps to collect mass, as in the paper); with
keep_prefill=True (default) the prompt is pinned like RaaS, while the paper lets prompt
tokens be evicted (set keep_prefill=False for that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import Policy, PolicyOptions, check_int
from raas_flex.policies.gated_mass import held_page_mass
from raas_flex.sizing import pages

ACCUMULATED = "h2o_accumulated"  # [B, H, S] float32 accumulated attention mass
# A finite key above any reachable accumulated mass: keeps the recent window out of
# eviction without making it tie with pinned slots (choose_slot maps those to +inf).
PROTECTED = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class H2OOptions(PolicyOptions):
    """recent_ratio: share of the budget's pages kept as the recent window, the rest heavy
    hitters; 0.5 is the paper's 1:1 split. recent_tokens: 0 (the paper's rule), or the
    window as a span of tokens, capped at recent_ratio of the budget's pages."""

    prefix = "h2o_"
    reads_exact_keys = True  # exact attention mass over the pool
    recent_ratio: float = 0.5
    recent_tokens: int = 0

    def __post_init__(self) -> None:
        check_int(f"{self.prefix}recent_tokens", self.recent_tokens, 0,
                  " (0 sizes the window by recent_ratio alone)")
        if not 0.0 < self.recent_ratio < 1.0:
            raise ValueError(f"{self.prefix}recent_ratio={self.recent_ratio} must lie in (0, 1); "
                             "the paper splits heavy:recent 1:1 (0.5).")


class H2OPolicy(Policy):
    name = "h2o"
    Options = H2OOptions

    @property
    def recent_pages(self) -> int:
        share = round(self.options.recent_ratio * self.config.slots)
        if self.options.recent_tokens:
            share = min(share, pages(self.options.recent_tokens, self.config.page_size))
        return max(1, share)

    def init_state(self, cache: LayerCache) -> None:
        cache.policy_state[ACCUMULATED] = torch.zeros_like(cache.fill, dtype=torch.float32)

    def in_recent_window(self, cache: LayerCache) -> torch.Tensor:
        """[B, H, S] bool: held pages among the `recent_pages` newest."""
        newest = cache.page_id.amax(-1, keepdim=True)
        return (cache.page_id >= 0) & (cache.page_id > newest - self.recent_pages)

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        accumulated = cache.policy_state[ACCUMULATED]
        return torch.where(self.in_recent_window(cache), PROTECTED, accumulated)

    def on_open(self, cache: LayerCache, opened: torch.Tensor, step: torch.Tensor) -> None:
        cache.policy_state[ACCUMULATED].masked_fill_(opened, 0.0)

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        return held_page_mass(q, cache, scale)  # scores.page_mass over the held tokens

    def update(self, cache: LayerCache, scores: torch.Tensor, step: torch.Tensor) -> None:
        cache.policy_state[ACCUMULATED].add_(scores)
