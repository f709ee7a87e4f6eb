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
    if eviction_key is None:
        return next_keep_all_slot(cache)
    free = cache.page_id == FREE
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


def next_keep_all_slot(cache: LayerCache) -> tuple[torch.Tensor, torch.Tensor]:
    """choose_slot for a keep-all pool without a pass over its S slots (a one-row-per-
    program argmin took 8 us at 9,217 slots on the H200): nothing is ever evicted and
    pages open in order (prefill writes page p to slot p), so the lowest free slot is
    the next page's own index, length // P. has_room also requires that slot to be free,
    so a pool that broke the invariant is reported full (overflow), never overwritten."""
    B, H, S = cache.page_id.shape
    page = (cache.length // cache.page_size)[:, None].expand(B, H)  # [B, H]
    slot = page.clamp(max=S - 1)
    free = cache.page_id.gather(-1, slot[..., None])[..., 0] == FREE
    return slot, (page < S) & free
