"""Opening a page and writing the step's token as one custom op (one Triton kernel on CUDA).

Why: open_page_if_needed then append_token are ~10 small writes (the opened slot's
metadata, its summary rows, the K/V row, fill, the running min / max), each its own kernel
once compiled because Inductor does not fuse across index_put_ mutations; on the H200 each
costs ~1.2-1.9 µs plus a launch gap, more than the work (B·H rows of D values). The op
does them in one program per (sequence, kv head). Its torch body is those two functions
(cache/append.py), which stay the reference; the CUDA body is append_triton.py. Same writes,
bit for bit (the summaries are a min / max of keys in the model's dtype, so no rounding).
A quantized pool keeps the torch path (its tokens are quantized on the way in).
"""

from __future__ import annotations

import torch

from raas_flex.cache.append import (
    append_token, open_page_if_needed, open_slot, opened_slots, write_token,
)
from raas_flex.cache.pool import LayerCache
from raas_flex.cache.slots import choose_slot

_MUTATED = ("k_pool", "v_pool", "fill", "timestamp", "pinned", "page_id", "kmin", "kmax",
            "current", "overflow")


@torch.library.custom_op("raas_flex::open_and_write_token", mutates_args=_MUTATED)
def open_and_write_token(k_pool: torch.Tensor, v_pool: torch.Tensor, fill: torch.Tensor,
                         timestamp: torch.Tensor, pinned: torch.Tensor, page_id: torch.Tensor,
                         kmin: torch.Tensor, kmax: torch.Tensor, current: torch.Tensor,
                         overflow: torch.Tensor, visible: torch.Tensor, length: torch.Tensor,
                         slot: torch.Tensor, has_room: torch.Tensor, step: torch.Tensor,
                         k: torch.Tensor, v: torch.Tensor, page_size: int) -> None:
    """cache/append.open_slot then write_token over a plain pool's tensors (LayerCache's
    fields; visible and length are read only). slot, has_room [B, H]; k, v [B, H, D]."""
    cache = LayerCache(k=k_pool, v=v_pool, fill=fill, visible=visible, timestamp=timestamp,
                       pinned=pinned, page_id=page_id, kmin=kmin, kmax=kmax, current=current,
                       length=length, overflow=overflow, page_size=page_size)
    open_slot(cache, slot, has_room, step)
    write_token(cache, k, v)


@open_and_write_token.register_kernel("cuda")
def _(k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax, current, overflow,
      visible, length, slot, has_room, step, k, v, page_size):
    from raas_flex.cache.append_triton import open_and_write_token_cuda
    open_and_write_token_cuda(k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax,
                              current, overflow, length, slot, has_room, step, k, v,
                              page_size)


def open_and_append(cache: LayerCache, eviction_key: torch.Tensor | None,
                    k: torch.Tensor, v: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """open_page_if_needed then append_token (k, v [B, H, 1, D]); returns the opened
    slots [B, H, S] bool. Policies' on_open only touch their own state, so they may run
    after the token is written."""
    if cache.quantized:
        opened = open_page_if_needed(cache, eviction_key, step)
        append_token(cache, k, v)
        return opened
    slot, has_room = choose_slot(cache, eviction_key)  # [B, H]
    opened = opened_slots(cache, slot)  # from the length before this token
    open_and_write_token(cache.k, cache.v, cache.fill, cache.timestamp, cache.pinned,
                         cache.page_id, cache.kmin, cache.kmax, cache.current,
                         cache.overflow, cache.visible, cache.length, slot, has_room,
                         step, k[:, :, 0], v[:, :, 0], cache.page_size)
    cache.length.add_(1)
    return opened
