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
dtype (as summary_keys), K/V are cast to the pool's. An 8-bit pool (QUANT) gets the token's
codes and per-token scales, computed as cache/quant.quantize computes them with torchao:
int8 scale = max|x| / 127 (at least SCALE_FLOOR), codes = round-half-even(x · (1 / scale))
clamped to ±127; fp8 scale = max(max|x|, SCALE_FLOOR · 448) / 448, codes = x / scale
clamped to ±448, rounded to nearest even. Bit for bit as torch on the device it runs on:
torch divides a tensor by a Python number as a multiply by the number's fp32 reciprocal on
CUDA (ATen's div_true_kernel) but divides on the CPU, so the scale's division follows the
device (the interpreter stands for the CPU); tensor-by-tensor divisions are IEEE (div_rn)
on both; the rounding multiply is kept out of an FMA (rint on CUDA). V's scale is stored as
its log (libdevice's logf, as torch's CUDA log). Imported on first CUDA use only.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import triton
import triton.language as tl

from triton.language.extra import libdevice

from raas_flex.cache.pool import FREE
from raas_flex.cache.quant import FP8_MAX, INT8_MAX, SCALE_FLOOR
from raas_flex.triton_pdl import pdl_options, wait_for_prior_grid

_FREE = tl.constexpr(FREE)  # a kernel reads globals only as constexpr
_INT8_MAX = tl.constexpr(float(INT8_MAX))
_FP8_MAX = tl.constexpr(float(FP8_MAX))
_SCALE_FLOOR = tl.constexpr(SCALE_FLOOR)
_FP8_FLOOR = tl.constexpr(SCALE_FLOOR * FP8_MAX)
# fp32 reciprocals of the two divisors, as ATen computes them (1.0f / d)
_INV_INT8_MAX = tl.constexpr(float(np.float32(1) / np.float32(INT8_MAX)))
_INV_FP8_MAX = tl.constexpr(float(np.float32(1) / np.float32(FP8_MAX)))
_ROUNDER = tl.constexpr(12582912.0)  # 1.5 * 2^23: (y + it) - it rounds half to even
PLAIN, INT8, FP8 = 0, 1, 2  # the kernel's QUANT: how the pool stores K/V
_QUANT_OF = {torch.int8: INT8, torch.float8_e4m3fn: FP8}


@triton.jit
def _over_number(x, d: tl.constexpr, inv_d: tl.constexpr, INTERPRET: tl.constexpr):
    """x / d as torch computes a tensor over a Python number: times d's fp32 reciprocal on
    CUDA, an IEEE division on the CPU (the interpreter)."""
    if INTERPRET:
        return tl.math.div_rn(x, d)
    return x * inv_d


@triton.jit
def _round_half_even(y, INTERPRET: tl.constexpr):
    """torch.round of fp32 y (|y| < 2^22). On CUDA rint; the interpreter has no libdevice,
    and numpy never fuses the add into the multiply that made y, so the 1.5 · 2^23 trick is
    exact there (on CUDA the compiler would fuse it into an FMA: another rounding)."""
    if INTERPRET:
        return (y + _ROUNDER) - _ROUNDER
    return libdevice.rint(y)


@triton.jit
def _quantize(x, valid, QUANT: tl.constexpr, INTERPRET: tl.constexpr):
    """Rows x [BLOCK_H, BLOCK_D] fp32 (valid: the real entries) -> (codes in fp32, exact
    in the 8-bit dtype, and the rows' scales [BLOCK_H]), as cache/quant.quantize."""
    amax = tl.max(tl.where(valid, tl.abs(x), 0.0), axis=1)
    if QUANT == 1:
        scale = tl.maximum(_over_number(amax, _INT8_MAX, _INV_INT8_MAX, INTERPRET),
                           _SCALE_FLOOR)
        inv = tl.math.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale)  # reciprocal
        y = _round_half_even(x * inv[:, None], INTERPRET)
        codes = tl.minimum(tl.maximum(y, -_INT8_MAX), _INT8_MAX)
    else:
        scale = _over_number(tl.maximum(amax, _FP8_FLOOR), _FP8_MAX, _INV_FP8_MAX, INTERPRET)
        codes = tl.minimum(tl.maximum(tl.math.div_rn(x, scale[:, None]), -_FP8_MAX), _FP8_MAX)
    return codes, scale


@triton.jit
def _log(x, INTERPRET: tl.constexpr):
    """logf as torch's CUDA log (libdevice); numpy's under the interpreter."""
    if INTERPRET:
        return tl.log(x)
    return libdevice.log(x)


@triton.jit
def _open_and_append_kernel(k_pool, v_pool, fill, timestamp, pinned, page_id, kmin, kmax,
                            current, overflow, length, slot_ptr, has_room_ptr, step, k_new,
                            v_new, k_scale, v_logscale, H, S, P, kp_sb, kp_sh, kp_sn, kp_sd,
                            vp_sb, vp_sh, vp_sn, vp_sd, k_sb, k_sh, k_sd, v_sb, v_sh, v_sd,
                            D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
                            KEEP_ALL: tl.constexpr, QUANT: tl.constexpr,
                            INTERPRET: tl.constexpr, PDL: tl.constexpr):
    wait_for_prior_grid(PDL)
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
    if QUANT != 0:  # 8-bit pool: codes, and per-token scales ([B, H, S*P] contiguous)
        k_codes, k_sc = _quantize(k.to(tl.float32), tile, QUANT, INTERPRET)
        v_codes, v_sc = _quantize(v.to(tl.float32), tile, QUANT, INTERPRET)
        scale_at = row * (S * P) + cur * P + n % P  # [BLOCK_H]
        tl.store(k_scale + scale_at, k_sc, mask=heads)
        tl.store(v_logscale + scale_at, _log(v_sc, INTERPRET), mask=heads)
    else:
        k_codes, v_codes = k, v
    tl.store(k_pool + b64 * kp_sb + h2 * kp_sh + token * kp_sn + d2 * kp_sd,
             k_codes.to(k_pool.dtype.element_ty), mask=tile)
    tl.store(v_pool + b64 * vp_sb + h2 * vp_sh + token * vp_sn + d2 * vp_sd,
             v_codes.to(v_pool.dtype.element_ty), mask=tile)
    tl.store(length + b, n + 1)


def open_and_append_token_cuda(k_pool: torch.Tensor, v_pool: torch.Tensor,
                               fill: torch.Tensor, timestamp: torch.Tensor,
                               pinned: torch.Tensor, page_id: torch.Tensor,
                               kmin: torch.Tensor, kmax: torch.Tensor, current: torch.Tensor,
                               overflow: torch.Tensor, length: torch.Tensor,
                               slot: torch.Tensor | None, has_room: torch.Tensor | None,
                               step: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               page_size: int, k_scale: torch.Tensor | None = None,
                               v_logscale: torch.Tensor | None = None) -> None:
    """Launch B programs. Shapes as LayerCache (the metadata contiguous, as
    allocate_layer_cache makes it); slot, has_room [B, H], or None for a keep-all pool;
    k, v [B, H, 1, D], any strides (a fused QKV projection leaves k and v with different
    ones); k_scale, v_logscale [B, H, S*P] for an 8-bit pool, else None."""
    B, H, S = fill.shape
    D = kmin.shape[-1]
    quant = _QUANT_OF.get(k_pool.dtype, PLAIN)
    if quant != PLAIN and (k_scale is None or v_logscale is None):
        raise ValueError("open_and_append_token: an 8-bit pool needs its k_scale and "
                         "v_logscale; pass the pool's.")
    metadata = (fill, timestamp, pinned, page_id, kmin, kmax, current)
    metadata += (k_scale, v_logscale) if quant != PLAIN else ()
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
        k_scale if quant != PLAIN else kmin, v_logscale if quant != PLAIN else kmin,
        H, S, page_size, *k_pool.stride(), *v_pool.stride(), *k.stride(), *v.stride(),
        D=D, BLOCK_H=triton.next_power_of_2(H), BLOCK_D=triton.next_power_of_2(D),
        KEEP_ALL=keep_all, QUANT=quant, INTERPRET=os.environ.get("TRITON_INTERPRET") == "1",
        num_warps=4 if H * D >= 2048 else 1, **pdl_options(k_pool.device))
