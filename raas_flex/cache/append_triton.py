"""CUDA body of raas_flex::open_and_append_token (append_op.py): one program per sequence
opens the page where its next token starts one, writes the token for every kv head, and
counts it in `length`.

A program reads length[b] once and, for each kv head (a [H, D] tile), touches one slot: the
opened slot's fill, timestamp, pinned and page_id, its summary rows (reset, then the running
min / max with the key, i.e. the key itself on a fresh page), the K/V row at
current·P + length % P; then writes length[b] + 1 (one program per sequence, so no other
program reads that length after it changes). A keep-all pool's slot is found here
(KEEP_ALL: slots.next_keep_all_slot's rule), an evicting pool's comes in (choose_slot).
Writes the torch body also makes, in the same dtypes: the key meets the summaries in their
dtype (as summary_keys), K/V are cast to the pool's. Imported on first CUDA use only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from raas_flex.cache.pool import FREE

_FREE = tl.constexpr(FREE)  # a kernel reads globals only as constexpr


@triton.jit
def _open_and_append_kernel(k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax,
                            current, overflow, length, slot_ptr, has_room_ptr, step, k_new,
                            v_new, H, S, P, kp_sb, kp_sh, kp_sn, kp_sd, vp_sb, vp_sh, vp_sn,
                            vp_sd, k_sb, k_sh, k_sd, v_sb, v_sh, v_sd, D: tl.constexpr,
                            BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
                            KEEP_ALL: tl.constexpr):
    b = tl.program_id(0)
    n = tl.load(length + b)  # tokens before this one
    need = (n % P) == 0
    h = tl.arange(0, BLOCK_H)
    heads = h < H
    row = b.to(tl.int64) * H + h  # metadata [B, H, S] and [B, H] are contiguous
    if KEEP_ALL:
        page = n // P
        slot = tl.minimum(page, S - 1) + tl.zeros((BLOCK_H,), tl.int64)
        free = tl.load(page_id + row * S + slot, mask=heads, other=0) == _FREE
        room = (page < S) & free
    else:
        slot = tl.load(slot_ptr + row, mask=heads, other=0)
        room = tl.load(has_room_ptr + row, mask=heads, other=1) != 0
    cur = tl.where(need, slot, tl.load(current + row, mask=heads, other=0))
    stuck = tl.max((heads & need & ~room).to(tl.int32), axis=0) > 0
    tl.store(overflow, 1, mask=stuck)
    meta = row * S + cur
    opens = heads & need
    tl.store(fill + meta, tl.where(need, 1, tl.load(fill + meta, mask=heads, other=0) + 1),
             mask=heads)
    tl.store(timestamp + meta, tl.load(step) + tl.zeros((BLOCK_H,), tl.int64), mask=opens)
    tl.store(pinned + meta, tl.zeros((BLOCK_H,), tl.int1), mask=opens)
    tl.store(page_id + meta, n // P + tl.zeros((BLOCK_H,), tl.int64), mask=opens)
    tl.store(current + row, cur, mask=heads)

    d = tl.arange(0, BLOCK_D)
    tile = heads[:, None] & (d < D)[None, :]  # [BLOCK_H, BLOCK_D]
    h2, d2 = h[:, None].to(tl.int64), d[None, :]
    k = tl.load(k_new + b * k_sb + h2 * k_sh + d2 * k_sd, mask=tile)
    v = tl.load(v_new + b * v_sb + h2 * v_sh + d2 * v_sd, mask=tile)
    key = k.to(kmax.dtype.element_ty).to(tl.float32)
    summary = meta[:, None] * D + d2
    low = tl.load(kmin + summary, mask=tile).to(tl.float32)
    high = tl.load(kmax + summary, mask=tile).to(tl.float32)
    low = tl.where(need, key, tl.minimum(low, key))
    high = tl.where(need, key, tl.maximum(high, key))
    tl.store(kmin + summary, low.to(kmin.dtype.element_ty), mask=tile)
    tl.store(kmax + summary, high.to(kmax.dtype.element_ty), mask=tile)
    token = (cur * P + n % P)[:, None]
    b64 = b.to(tl.int64)
    tl.store(k_pool + b64 * kp_sb + h2 * kp_sh + token * kp_sn + d2 * kp_sd,
             k.to(k_pool.dtype.element_ty), mask=tile)
    tl.store(v_pool + b64 * vp_sb + h2 * vp_sh + token * vp_sn + d2 * vp_sd,
             v.to(v_pool.dtype.element_ty), mask=tile)
    tl.store(length + b, n + 1)


def open_and_append_token_cuda(k_pool: torch.Tensor, v_pool: torch.Tensor,
                               fill: torch.Tensor, timestamp: torch.Tensor,
                               pinned: torch.Tensor, page_id: torch.Tensor,
                               kmin: torch.Tensor, kmax: torch.Tensor, current: torch.Tensor,
                               overflow: torch.Tensor, length: torch.Tensor,
                               slot: torch.Tensor | None, has_room: torch.Tensor | None,
                               step: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               page_size: int) -> None:
    """Launch B programs. Shapes as LayerCache (the metadata contiguous, as
    allocate_layer_cache makes it); slot, has_room [B, H], or None for a keep-all pool;
    k, v [B, H, 1, D], any strides (a fused QKV projection leaves k and v with different
    ones)."""
    B, H, S = fill.shape
    D = kmin.shape[-1]
    metadata = (fill, timestamp, pinned, page_id, kmin, kmax, current)
    if not all(t.is_contiguous() for t in metadata):
        raise ValueError("open_and_append_token: the pool's metadata must be contiguous; "
                         "allocate the pool with allocate_layer_cache.")
    keep_all = slot is None
    if not keep_all:
        slot, has_room = slot.to(torch.int64).contiguous(), has_room.contiguous()
    k, v = k[:, :, 0], v[:, :, 0]
    _open_and_append_kernel[(B,)](
        k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax, current, overflow,
        length, current if keep_all else slot, current if keep_all else has_room, step, k, v,
        H, S, page_size, *k_pool.stride(), *v_pool.stride(), *k.stride(), *v.stride(),
        D=D, BLOCK_H=triton.next_power_of_2(H), BLOCK_D=triton.next_power_of_2(D),
        KEEP_ALL=keep_all, num_warps=4 if H * D >= 2048 else 1)
