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
                           H, S, P, pool_sb, pool_sh, pool_sn, new_sb, new_sh,
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
    k = tl.load(k_new + b * new_sb + h * new_sh + d, mask=inside)
    v = tl.load(v_new + b * new_sb + h * new_sh + d, mask=inside)
    key = k.to(kmax.dtype.element_ty).to(tl.float32)
    summary = meta * D + d
    low = tl.load(kmin + summary, mask=inside).to(tl.float32)
    high = tl.load(kmax + summary, mask=inside).to(tl.float32)
    low = tl.where(need, key, tl.minimum(low, key))
    high = tl.where(need, key, tl.maximum(high, key))
    tl.store(kmin + summary, low.to(kmin.dtype.element_ty), mask=inside)
    tl.store(kmax + summary, high.to(kmax.dtype.element_ty), mask=inside)
    token = b.to(tl.int64) * pool_sb + h * pool_sh + (cur * P + n % P) * pool_sn + d
    tl.store(k_pool + token, k.to(k_pool.dtype.element_ty), mask=inside)
    tl.store(v_pool + token, v.to(v_pool.dtype.element_ty), mask=inside)


def open_and_write_token_cuda(k_pool: torch.Tensor, v_pool: torch.Tensor, fill: torch.Tensor,
                              timestamp: torch.Tensor, pinned: torch.Tensor,
                              page_id: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor,
                              current: torch.Tensor, overflow: torch.Tensor,
                              length: torch.Tensor, slot: torch.Tensor, has_room: torch.Tensor,
                              step: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              page_size: int) -> None:
    """Launch B·H programs. Shapes as LayerCache; slot, has_room [B, H]; k, v [B, H, D]
    with the same strides (as slices of the step's [B, H, 1, D] inputs)."""
    B, H, S = fill.shape
    D = kmin.shape[-1]
    metadata = (fill, timestamp, pinned, page_id, kmin, kmax, current)
    if not all(t.is_contiguous() for t in metadata) or k.stride() != v.stride() \
            or k.stride(-1) != 1 or k_pool.stride() != v_pool.stride() or k_pool.stride(-1) != 1:
        raise ValueError("open_and_write_token: the pool's metadata must be contiguous and "
                         "k / v (and the K / V pools) share strides with unit last stride; "
                         "allocate the pool with allocate_layer_cache.")
    slot = slot.to(torch.int64).contiguous()
    has_room = has_room.contiguous()
    _open_and_write_kernel[(B * H,)](
        k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax, current, overflow,
        length, slot, has_room, step, k, v, H, S, page_size,
        k_pool.stride(0), k_pool.stride(1), k_pool.stride(2), k.stride(0), k.stride(1),
        D=D, BLOCK_D=triton.next_power_of_2(D), num_warps=1)
