"""The narrow interface every policy implements: score, update, select, eviction_key."""

from __future__ import annotations

from typing import ClassVar

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.config import RaaSConfig
from raas_flex.masks.decode import pool_blocks

Blocks = tuple[torch.Tensor, torch.Tensor]  # (count [B, H, 1], index [B, H, 1, K]) int32


class Policy:
    """Decisions for one layer's cache, as pure tensor code (no host sync, no branching on
    tensor values), so the whole decode step compiles into one graph.

    Per decode step the engine calls, in order: `eviction_key` (only used if a page must
    be opened), `on_open`, then, after the new token is appended, `score`, `update` and
    `select`. Subclasses override what they need; the defaults are "dense".
    """

    name: ClassVar[str] = "base"
    keeps_all: ClassVar[bool] = False  # pool holds every token; never evicts

    def __init__(self, config: RaaSConfig) -> None:
        self.config = config

    def init_state(self, cache: LayerCache) -> None:
        """Allocate per-slot policy tensors in `cache.policy_state` (once, at prefill)."""

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor | None:
        """[B, H, S]: lower is evicted first; None for a keep-all policy."""
        return None

    def on_open(self, cache: LayerCache, opened: torch.Tensor, step: torch.Tensor) -> None:
        """Reset per-slot state where `opened` ([B, H, S] bool) starts a new page."""

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor | None:
        """Per-slot scores for the current query q [B, H, G, D]; [B, H, S] or None."""
        return None

    def update(self, cache: LayerCache, scores: torch.Tensor | None, step: torch.Tensor) -> None:
        """Update timestamps / accumulated statistics from this step's scores."""

    def select(self, cache: LayerCache, scores: torch.Tensor | None,
               step: torch.Tensor) -> torch.Tensor:
        """Tokens of each slot to attend this step, [B, H, S] int32 (a prefix of the page)."""
        return cache.fill

    def select_blocks(self, cache: LayerCache, scores: torch.Tensor | None,
                      step: torch.Tensor) -> tuple[torch.Tensor, Blocks | None]:
        """`select`, plus the attention kernel's block list: (count, index) naming every
        page the selection makes visible (masks.listed_block_mask), or None to have the
        step compact the selection into block lists (masks.decode_block_mask)."""
        return self.select(cache, scores, step), self.attend_blocks(cache)

    def attend_blocks(self, cache: LayerCache) -> Blocks | None:
        """An evicting pool holds at most the budget: list all of it, a constant of the
        graph (no per-step compaction; unselected pages are masked by `visible`). A
        keep-all pool: None (compact), since listing all of it would read O(N)."""
        return None if self.keeps_all else pool_blocks(cache.visible)
