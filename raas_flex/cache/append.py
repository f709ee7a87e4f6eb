"""Writing one decode token into the pool, opening (and so evicting) a page when needed.

Branch-free: sequences that do not need a new page this step run the same arithmetic with
their masks false, so the step has one shape and no host synchronisation.
"""

from __future__ import annotations

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.cache.quant import quantize
from raas_flex.cache.slots import choose_slot


def open_page_if_needed(
    cache: LayerCache, eviction_key: torch.Tensor | None, step: torch.Tensor
) -> torch.Tensor:
    """Give every sequence whose current page is full a fresh slot for its next page.

    Returns the [B, H, S] bool mask of slots that were (re)opened this step, so a policy
    can reset its own per-slot state there.
    """
    slot, has_room = choose_slot(cache, eviction_key)  # [B, H]
    open_slot(cache, slot, has_room, step)
    return opened_slots(cache, slot)


def opened_slots(cache: LayerCache, slot: torch.Tensor) -> torch.Tensor:
    """[B, H, S] bool: `slot` ([B, H]) where this step opens a page (the length before
    the step's token is a multiple of P), nowhere else."""
    need = (cache.length % cache.page_size == 0)[:, None, None]  # [B, 1, 1]
    slots = torch.arange(cache.num_slots, device=slot.device)
    return (slots == slot[..., None]) & need


def open_slot(cache: LayerCache, slot: torch.Tensor, has_room: torch.Tensor,
              step: torch.Tensor) -> None:
    """Where the next token starts a page, relabel `slot` ([B, H], from choose_slot) as
    that page, empty, stamped `step`, and make it current; flag overflow where it had no
    room (the slot is still written: the overflow raises before the output is used)."""
    P = cache.page_size
    need = (cache.length % P == 0)[:, None]  # [B, 1]: the next token starts a page
    cache.overflow.logical_or_((need & ~has_room).any())
    opened = opened_slots(cache, slot)  # [B, H, S]
    new_page = (cache.length // P)[:, None, None]  # [B, 1, 1]
    cache.fill.masked_fill_(opened, 0)
    cache.timestamp.copy_(torch.where(opened, step, cache.timestamp))
    cache.pinned.masked_fill_(opened, False)
    cache.page_id.copy_(torch.where(opened, new_page, cache.page_id))
    # Reset only the chosen slot's summary row (O(B·H·D), not a pass over [B, H, S, D]).
    rows = _rows(cache, slot)
    reset = need[..., None]  # [B, 1, 1]
    cache.kmin.index_put_(rows, torch.where(reset, float("inf"), cache.kmin[rows]))
    cache.kmax.index_put_(rows, torch.where(reset, float("-inf"), cache.kmax[rows]))
    cache.current.copy_(torch.where(need, slot, cache.current))


def append_token(cache: LayerCache, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write k, v ([B, H, 1, D]) at the next position of each sequence's current page."""
    offset = (cache.length % cache.page_size)[:, None]  # [B, 1]
    position = cache.current * cache.page_size + offset  # [B, H]
    # index_put_ stays an in-place store of B·H rows under Inductor; scatter_ with an
    # expanded index became a where() over the whole pool (measured: ~25 us/step at L=2048).
    rows = _rows(cache, cache.current)
    b, h, _ = rows
    store_tokens(cache, (b, h, position), k[:, :, 0], v[:, :, 0])  # [B, H, D]
    cache.fill.scatter_add_(2, cache.current[..., None], torch.ones_like(cache.fill[..., :1]))
    key = summary_keys(cache, k[:, :, 0])  # [B, H, D]
    cache.kmin.index_put_(rows, torch.minimum(cache.kmin[rows], key))
    cache.kmax.index_put_(rows, torch.maximum(cache.kmax[rows], key))
    cache.length.add_(1)


def store_tokens(cache: LayerCache, index: tuple, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write tokens k, v ([..., D]) at pool rows `index` (index tensors, or slices),
    quantizing them (8-bit codes plus per-token scales) if the pool is quantized. In place,
    no pool-sized temporary."""
    if not cache.quantized:
        _put(cache.k, index, k.to(cache.k.dtype))
        _put(cache.v, index, v.to(cache.v.dtype))
        return
    k_codes, k_scale = quantize(k, cache.k.dtype)
    v_codes, v_scale = quantize(v, cache.v.dtype)
    # Straight into the 8-bit pool, never through a uint8 view: on CUDA, Inductor turned
    # a write through a dtype view followed by flex's read into a pool-sized copy that flex
    # then read wrongly (bench/results/latency/quant_check_h100*.json).
    _put(cache.k, index, k_codes)
    _put(cache.v, index, v_codes)
    _put(cache.k_scale, index, k_scale)
    _put(cache.v_logscale, index, torch.log(v_scale))


def _put(dst: torch.Tensor, index: tuple, src: torch.Tensor) -> None:
    if all(isinstance(i, torch.Tensor) for i in index):
        dst.index_put_(index, src)
    else:
        dst[index].copy_(src)


def summary_keys(cache: LayerCache, k: torch.Tensor) -> torch.Tensor:
    """The keys the min/max summaries bound, in the summaries' (the model's) dtype: as a
    plain pool stores them, the input keys for a quantized one (never the 8-bit codes)."""
    return k.to(cache.kmax.dtype)


def _rows(cache: LayerCache, slot: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Advanced-index tuple selecting slot[b, h] of every (b, h): ([B,1], [1,H], [B,H])."""
    B, H = slot.shape
    b = torch.arange(B, device=slot.device)[:, None]
    h = torch.arange(H, device=slot.device)[None, :]
    return b, h, slot
