"""Choosing the slot a new page goes to: a free one if any, else the policy's victim."""

from __future__ import annotations

import torch

from raas_flex.cache.pool import FREE, LayerCache


def choose_slot(
    cache: LayerCache, eviction_key: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot per (sequence, kv head) for the next page, and whether it is a legal choice.

    A free slot wins (the lowest index); otherwise the unpinned slot with the lowest
    `eviction_key` ([B, H, S], lower = evict first), ties going to the oldest page.
    `eviction_key=None` marks a keep-all policy, which may only take free slots.
    Returns (slot [B, H] int64, has_room [B, H] bool).
    """
    free = cache.page_id == FREE
    if eviction_key is None:
        usable = free
        primary = torch.where(free, float("-inf"), float("inf"))
    else:
        usable = ~cache.pinned
        primary = torch.where(
            free,
            float("-inf"),
            torch.where(usable, eviction_key.to(torch.float64), float("inf")),
        )
    best = primary.amin(-1, keepdim=True)
    candidates = (primary == best) & usable  # a +inf key never ties a pinned slot in
    oldest = torch.where(candidates, cache.page_id, torch.iinfo(torch.int64).max)
    return oldest.argmin(-1), usable.any(-1)
