"""Opening a page and writing the step's token as one custom op (one Triton kernel on CUDA).

Why: open_page_if_needed then append_token are ~10 small writes (the opened slot's
metadata, its summary rows, the K/V row, fill, the running min / max), each its own kernel
once compiled because Inductor does not fuse across index_put_ mutations; on the H200 each
costs ~1.2-1.9 µs plus a launch gap, more than the work (B·H rows of D values). The op
does them, a keep-all pool's slot choice and the length count in one program per
sequence. Its torch body is those functions (cache/append.py, slots.py), which stay the
reference; the CUDA body is append_triton.py. Same writes,
bit for bit (the summaries are a min / max of keys in the model's dtype, so no rounding).
An 8-bit pool's token is quantized in the same program (codes and per-token scales, as
cache/quant.quantize), where the torch path took another ~10 kernels.
"""

from __future__ import annotations

from typing import Optional

import torch

from raas_flex.cache.append import append_token, open_slot, opened_slots
from raas_flex.cache.pool import LayerCache
from raas_flex.cache.slots import choose_slot, next_keep_all_slot

_MUTATED = ("k_pool", "v_pool", "fill", "timestamp", "pinned", "page_id", "kmin", "kmax",
            "current", "overflow", "length", "k_scale", "v_logscale")


@torch.library.custom_op("raas_flex::open_and_append_token", mutates_args=_MUTATED)
def open_and_append_token(k_pool: torch.Tensor, v_pool: torch.Tensor, fill: torch.Tensor,
                          timestamp: torch.Tensor, pinned: torch.Tensor,
                          page_id: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor,
                          current: torch.Tensor, overflow: torch.Tensor,
                          visible: torch.Tensor, length: torch.Tensor,
                          slot: Optional[torch.Tensor], has_room: Optional[torch.Tensor],
                          step: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          page_size: int, k_scale: Optional[torch.Tensor],
                          v_logscale: Optional[torch.Tensor]) -> None:
    """cache/append.open_slot then append_token over a pool's tensors (LayerCache's fields;
    visible is read only; k_scale, v_logscale None unless the pool is 8-bit). slot,
    has_room [B, H] from choose_slot, or None for a keep-all pool (next_keep_all_slot's
    rule); k, v [B, H, 1, D]."""
    cache = LayerCache(k=k_pool, v=v_pool, fill=fill, visible=visible, timestamp=timestamp,
                       pinned=pinned, page_id=page_id, kmin=kmin, kmax=kmax, current=current,
                       length=length, overflow=overflow, page_size=page_size,
                       k_scale=k_scale, v_logscale=v_logscale)
    if slot is None or has_room is None:
        slot, has_room = next_keep_all_slot(cache)
    open_slot(cache, slot, has_room, step)
    append_token(cache, k, v)


@open_and_append_token.register_kernel("cuda")
def _(k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax, current, overflow,
      visible, length, slot, has_room, step, k, v, page_size, k_scale, v_logscale):
    from raas_flex.cache.append_triton import open_and_append_token_cuda
    open_and_append_token_cuda(k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax,
                               current, overflow, length, slot, has_room, step, k, v,
                               page_size, k_scale, v_logscale)


def open_and_append(cache: LayerCache, eviction_key: torch.Tensor | None,
                    k: torch.Tensor, v: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """open_page_if_needed then append_token (k, v [B, H, 1, D]); returns the opened
    slots [B, H, S] bool (unused by most policies, so it costs nothing compiled). Policies'
    on_open only touch their own state, so they may run after the token is written."""
    slot, has_room = choose_slot(cache, eviction_key)  # [B, H]
    opened = opened_slots(cache, slot)  # from the length before this token
    keep_all = eviction_key is None  # the op finds a keep-all slot itself
    open_and_append_token(cache.k, cache.v, cache.fill, cache.timestamp, cache.pinned,
                          cache.page_id, cache.kmin, cache.kmax, cache.current,
                          cache.overflow, cache.visible, cache.length,
                          None if keep_all else slot, None if keep_all else has_room,
                          step, k, v, cache.page_size, cache.k_scale, cache.v_logscale)
    return opened
