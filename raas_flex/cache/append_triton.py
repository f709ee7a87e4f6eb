"""CUDA body of raas_flex::open_and_write_token (append_op.py): one program per (sequence,
kv head) opens the page where the next token starts one, then writes the token.

A program reads length[b], its slot / has_room / current, and touches one slot: the
opened slot's fill, timestamp, pinned and page_id, its summary rows (reset, then the
running min / max with the key, i.e. the key itself on a fresh page), the K/V row at
current·P + length % P. Writes the torch reference also makes, in the same dtypes: the
key meets the summaries in their dtype (as summary_keys), K/V are cast to the pool's.
Imported on first CUDA use only (no Triton on the CPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _open_and_write_kernel(k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax,
                           current, overflow, length, slot, has_room, step, k_new, v_new,
                           H, S, P, kp_sb, kp_sh, kp_sn, kp_sd, vp_sb, vp_sh, vp_sn, vp_sd,
                           k_sb, k_sh, k_sd, v_sb, v_sh, v_sd,
                           D: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0)  # b * H + h; metadata [B, H, S] and [B, H] are contiguous
    b = row // H
    h = row % H
    n = tl.load(length + b)  # tokens before this one
    need = (n % P) == 0
    old = tl.load(current + row)
    cur = tl.where(need, tl.load(slot + row), old)
    no_room = tl.load(has_room + row) == 0
    tl.store(overflow, 1, mask=need & no_room)
    meta = row.to(tl.int64) * S + cur
    tl.store(fill + meta, tl.where(need, 1, tl.load(fill + meta) + 1))
    tl.store(timestamp + meta, tl.load(step), mask=need)
    tl.store(pinned + meta, 0, mask=need)
    tl.store(page_id + meta, n // P, mask=need)
    tl.store(current + row, cur)

    d = tl.arange(0, BLOCK_D)
    inside = d < D
    k = tl.load(k_new + b * k_sb + h * k_sh + d * k_sd, mask=inside)
    v = tl.load(v_new + b * v_sb + h * v_sh + d * v_sd, mask=inside)
    key = k.to(kmax.dtype.element_ty).to(tl.float32)
    summary = meta * D + d
    low = tl.load(kmin + summary, mask=inside).to(tl.float32)
    high = tl.load(kmax + summary, mask=inside).to(tl.float32)
    low = tl.where(need, key, tl.minimum(low, key))
    high = tl.where(need, key, tl.maximum(high, key))
    tl.store(kmin + summary, low.to(kmin.dtype.element_ty), mask=inside)
    tl.store(kmax + summary, high.to(kmax.dtype.element_ty), mask=inside)
    token = cur * P + n % P
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    tl.store(k_pool + b64 * kp_sb + h64 * kp_sh + token * kp_sn + d * kp_sd,
             k.to(k_pool.dtype.element_ty), mask=inside)
    tl.store(v_pool + b64 * vp_sb + h64 * vp_sh + token * vp_sn + d * vp_sd,
             v.to(v_pool.dtype.element_ty), mask=inside)


def open_and_write_token_cuda(k_pool: torch.Tensor, v_pool: torch.Tensor, fill: torch.Tensor,
                              timestamp: torch.Tensor, pinned: torch.Tensor,
                              page_id: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor,
                              current: torch.Tensor, overflow: torch.Tensor,
                              length: torch.Tensor, slot: torch.Tensor, has_room: torch.Tensor,
                              step: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              page_size: int) -> None:
    """Launch B·H programs. Shapes as LayerCache (the metadata contiguous, as
    allocate_layer_cache makes it); slot, has_room [B, H]; k, v [B, H, D], any strides
    (a fused QKV projection leaves k and v with different ones)."""
    B, H, S = fill.shape
    D = kmin.shape[-1]
    metadata = (fill, timestamp, pinned, page_id, kmin, kmax, current)
    if not all(t.is_contiguous() for t in metadata):
        raise ValueError("open_and_write_token: the pool's metadata must be contiguous; "
                         "allocate the pool with allocate_layer_cache.")
    slot = slot.to(torch.int64).contiguous()
    has_room = has_room.contiguous()
    _open_and_write_kernel[(B * H,)](
        k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax, current, overflow,
        length, slot, has_room, step, k, v, H, S, page_size, *k_pool.stride(), *v_pool.stride(),
        *k.stride(), *v.stride(),
        D=D, BLOCK_D=triton.next_power_of_2(D), num_warps=1)
