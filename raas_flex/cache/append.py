"""Writing one decode token into the pool, opening (and so evicting) a page when needed.

Branch-free: sequences that do not need a new page this step run the same arithmetic with
their masks false, so the step has one shape and no host synchronisation.
"""

from __future__ import annotations

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.cache.slots import choose_slot


def open_page_if_needed(
    cache: LayerCache, eviction_key: torch.Tensor | None, step: torch.Tensor
) -> torch.Tensor:
    """Give every sequence whose current page is full a fresh slot for its next page.

    Returns the [B, H, S] bool mask of slots that were (re)opened this step, so a policy
    can reset its own per-slot state there.
    """
    P = cache.page_size
    need = (cache.length % P == 0)[:, None]  # [B, 1]: the next token starts a page
    slot, has_room = choose_slot(cache, eviction_key)  # [B, H]
    cache.overflow.logical_or_((need & ~has_room).any())
    slots = torch.arange(cache.num_slots, device=slot.device)
    opened = (slots == slot[..., None]) & need[..., None]  # [B, H, S]
    new_page = (cache.length // P)[:, None, None]  # [B, 1, 1]
    cache.fill.masked_fill_(opened, 0)
    cache.timestamp.copy_(torch.where(opened, step, cache.timestamp))
    cache.pinned.masked_fill_(opened, False)
    cache.page_id.copy_(torch.where(opened, new_page, cache.page_id))
    cache.kmin.masked_fill_(opened[..., None], float("inf"))
    cache.kmax.masked_fill_(opened[..., None], float("-inf"))
    cache.current.copy_(torch.where(need, slot, cache.current))
    return opened


def append_token(cache: LayerCache, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write k, v ([B, H, 1, D]) at the next position of each sequence's current page."""
    B, H, _, D = k.shape
    offset = (cache.length % cache.page_size)[:, None]  # [B, 1]
    position = cache.current * cache.page_size + offset  # [B, H]
    index = position[..., None, None].expand(B, H, 1, D)
    cache.k.scatter_(2, index, k.to(cache.k.dtype))
    cache.v.scatter_(2, index, v.to(cache.v.dtype))
    cache.fill.scatter_add_(2, cache.current[..., None], torch.ones_like(cache.fill[..., :1]))
    here = (torch.arange(cache.num_slots, device=k.device) == cache.current[..., None])[..., None]
    key = k.to(torch.float32)  # [B, H, 1, D] broadcasts over slots
    cache.kmin.copy_(torch.where(here, torch.minimum(cache.kmin, key), cache.kmin))
    cache.kmax.copy_(torch.where(here, torch.maximum(cache.kmax, key), cache.kmax))
    cache.length.add_(1)
