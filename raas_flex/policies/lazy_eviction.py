"""lazy_eviction: lagged eviction by recurrence intervals (LazyEviction, arXiv 2506.15969).

Source rule (paper; the authors' code Halo-949/LazyEviction as reported by a port of its
commit 051d663 -- the repository itself was not reachable here; docs/algorithms.md): each
token records the last decode step at which it was important (an attention weight >=
alpha = 1e-4 from the current query) and its maximum recurrence interval (MRI), the longest
gap seen between two such steps. Eviction is lazy: only every W decode steps (the
observation window, W = 175 in the reported code) is the cache cut back to its budget,
keeping the W most recent tokens and, of the rest, the tokens with the highest score
  2 / (1 + exp(1 + (t - last) / (MRI + 1e-5))) + [MRI > 0] * 2 / (1 + exp(MRI - 1)),
high for a token still inside its usual recurrence gap and for one that recurs often.
Here: periodic compression on the paged pool (raas_flex/policies/periodic.py) with
period = W rounded up to whole pages (11 pages of 16 = 176 tokens). Per page: `last` and
`mri` as above, where the page is important at a step when any of its tokens gets a
weight >= alpha from any query head of the kv head's group (exact softmax over the held
tokens); a page opens with last = t - 1 and MRI 0, as a new token does. A checkpoint keeps
the pinned pages, the pages opened since the last checkpoint (the recent window) and the
best-scoring other pages, and frees one window of pages. The step counter t is the
layer's own count of decode steps.
Deviations [project choices]: page granularity (a page recurs when any of its tokens
does; docs/algorithms.md gives the measured agreement with the token rule); state per
(sequence, kv head), with the group's max weight (the reported code keeps state per query
head); a fixed budget in tokens (the paper sets it as a share of the generated length);
W rounded up to whole pages, counted in the sequence's tokens (prompt included) so that a
checkpoint falls on a page boundary; with keep_prefill=True (default) the prompt is pinned
(keep_prefill=False lets it be evicted); the checkpoint step attends the compressed set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import ConfigView, PolicyOptions, check_int
from raas_flex.policies.gated_mass import page_max_weight
from raas_flex.policies.periodic import (
    FRESH, PeriodicCompressionPolicy, check_room, period_pages,
)

LAST = "lazy_last"  # [B, H, S] int64: last step the page was important
MRI = "lazy_mri"  # [B, H, S] int64: its maximum recurrence interval
STEP = "lazy_step"  # [] int64: decode steps taken by this layer


@dataclass(frozen=True)
class LazyEvictionOptions(PolicyOptions):
    """window: the observation window W in tokens (175 in the reported code), rounded up
    to whole pages; the cache is compressed once per window and keeps the last window.
    alpha: attention weight at which a token counts as important (1e-4)."""

    prefix = "lazy_"
    reads_exact_keys = True  # exact attention weights of every held token
    window: int = 175
    alpha: float = 1e-4

    def __post_init__(self) -> None:
        check_int("lazy_window", self.window, 1, " tokens")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"lazy_alpha={self.alpha} must lie in (0, 1) (the source's "
                             "threshold is 1e-4).")

    def check(self, config: ConfigView) -> None:
        # After a checkpoint: the recent window plus at least one scored page.
        check_room("lazy_window", self.window,
                   period_pages(self.window, config.page_size) + 1, config)


class LazyEvictionPolicy(PeriodicCompressionPolicy):
    name = "lazy_eviction"
    Options = LazyEvictionOptions

    def period_tokens(self) -> int:
        return self.options.window

    def init_state(self, cache: LayerCache) -> None:
        super().init_state(cache)
        cache.policy_state[LAST] = torch.zeros_like(cache.fill, dtype=torch.int64)
        cache.policy_state[MRI] = torch.zeros_like(cache.fill, dtype=torch.int64)
        cache.policy_state[STEP] = torch.zeros((), dtype=torch.int64, device=cache.fill.device)

    def protected(self, cache: LayerCache) -> torch.Tensor:
        """The recent window: pages opened since the sequence's last checkpoint."""
        return cache.policy_state[FRESH]

    def on_open(self, cache: LayerCache, opened: torch.Tensor, step: torch.Tensor) -> None:
        super().on_open(cache, opened, step)
        last, now = cache.policy_state[LAST], cache.policy_state[STEP]  # now = t - 1
        last.copy_(torch.where(opened, now, last))
        cache.policy_state[MRI].masked_fill_(opened, 0)

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        """[B, H, S]: the largest attention weight any token of the page gets from any
        query head of the group this step (0 for empty slots), from one pass over the
        pool's keys (gated_mass.page_max_weight)."""
        return page_max_weight(q, cache, scale)

    def update(self, cache: LayerCache, scores: torch.Tensor, step: torch.Tensor) -> None:
        state = cache.policy_state
        state[STEP].add_(1)
        now = state[STEP]  # t
        important = (scores >= self.options.alpha) & (cache.fill > 0)
        last = torch.where(important, now, state[LAST])
        state[MRI].copy_(torch.maximum(state[MRI], last - state[LAST]))
        state[LAST].copy_(last)
        self.compress(cache, recurrence_score(state[LAST], state[MRI], now))


def recurrence_score(last: torch.Tensor, mri: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
    """The reported code's importance of a token (here a page) at step `now`, float32."""
    mri = mri.float()
    since = (now - last).float()
    due = 2.0 / (1.0 + torch.exp(1.0 + since / (mri + 1e-5)))
    frequent = torch.where(mri == 0, 0.0, 2.0 / (1.0 + torch.exp(mri - 1.0)))
    return due + frequent
