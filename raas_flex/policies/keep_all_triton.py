"""CUDA bodies of raas_flex::quest_bound and raas_flex::select_top_slots (keep_all_ops.py).

quest_bound: one program per (sequence·kv head, chunk of SLOTS pages) reads that chunk's
fp32 summaries once and reduces q⁺·kmax + q⁻·kmin over D for every query head of the
group in registers (the bytes are the summaries: 8 B·D per page and kv head).

select_top_slots: one program per (sequence, kv head) holds its row of S ≤ 16,384 keys
in registers and finds the k-th largest by a greedy bit search, two bits per pass: the
three candidate counts of a pass share one reduction (packed into 16-bit fields of an
int64). The key is scores.order_key split in two words: the score's monotone bits (hi),
then the older page (lo), which only the ties at the threshold need, so the 16 passes
over lo run only when such a tie exists. Then one scan compacts the chosen slots into
the index list. Imported on first CUDA use only (no Triton on the CPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from raas_flex.policies.triton_logits import softcap

BOUND_SLOTS = 32  # pages per bound program: a [32, D] tile of each summary


@triton.jit
def _quest_bound_kernel(q_ptr, kmax_ptr, kmin_ptr, fill_ptr, out_ptr, S, scale, cap,
                        sq_b, sq_h, sq_g, sk_b, sk_h, sk_s, sf_b, sf_h, so_b, so_h,
                        H: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
                        DP: tl.constexpr, SLOTS: tl.constexpr, HAS_CAP: tl.constexpr):
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    s = tl.program_id(1) * SLOTS + tl.arange(0, SLOTS)
    d = tl.arange(0, DP)
    held = tl.load(fill_ptr + b * sf_b + h * sf_h + s, mask=s < S, other=0) > 0
    tile = held[:, None] & (d[None, :] < D)
    offsets = b * sk_b + h * sk_h + s[:, None] * sk_s + d[None, :]
    kmax = tl.load(kmax_ptr + offsets, mask=tile, other=0.0).to(tl.float32)  # [SLOTS, DP]
    kmin = tl.load(kmin_ptr + offsets, mask=tile, other=0.0).to(tl.float32)
    best = tl.full((SLOTS,), float("-inf"), tl.float32)
    for g in tl.static_range(G):
        qg = tl.load(q_ptr + b * sq_b + h * sq_h + g * sq_g + d, mask=d < D,
                     other=0.0).to(tl.float32)
        bound = tl.sum(tl.maximum(qg, 0.0)[None, :] * kmax
                       + tl.minimum(qg, 0.0)[None, :] * kmin, axis=1)
        best = tl.maximum(best, bound)
    best = softcap(best * scale, cap, HAS_CAP)
    tl.store(out_ptr + b * so_b + h * so_h + s, tl.where(held, best, float("-inf")),
             mask=s < S)


def quest_bound_cuda(q: torch.Tensor, kmax: torch.Tensor, kmin: torch.Tensor,
                     fill: torch.Tensor, scale: float, softcap: float | None) -> torch.Tensor:
    """raas_flex::quest_bound on CUDA, shapes as there; no host sync."""
    B, H, G, D = q.shape
    S = fill.shape[-1]
    if kmax.stride() != kmin.stride() or kmax.stride(-1) != 1 or q.stride(-1) != 1 \
            or fill.stride(-1) != 1:
        raise ValueError("quest_bound needs q, kmax, kmin and fill contiguous in their last "
                         "dim and kmax, kmin laid out alike; pass the pool tensors as allocated.")
    out = torch.empty((B, H, S), dtype=torch.float32, device=q.device)
    grid = (B * H, triton.cdiv(S, BOUND_SLOTS))
    _quest_bound_kernel[grid](
        q, kmax, kmin, fill, out, S, float(scale),
        float(softcap) if softcap is not None else 1.0,
        q.stride(0), q.stride(1), q.stride(2), kmax.stride(0), kmax.stride(1), kmax.stride(2),
        fill.stride(0), fill.stride(1), out.stride(0), out.stride(1),
        H=H, G=G, D=D, DP=triton.next_power_of_2(D), SLOTS=BOUND_SLOTS,
        HAS_CAP=softcap is not None, num_warps=4)
    return out


@triton.jit
def _kth_largest(x, valid, need, BITS: tl.constexpr):
    """The largest t with #(valid & x >= t) >= need, for x in [0, 2^BITS) (int64) and
    need >= 1: t is built from the top bit down, two bits per pass."""
    t = tl.sum(tl.zeros_like(x), axis=0)  # int64 scalar 0
    for i in tl.static_range(BITS // 2):
        step = t * 0 + (1 << (BITS - 2 - 2 * i))  # an int64 scalar, not a uint32 constant
        packed = ((valid & (x >= t + step)).to(tl.int64)
                  + ((valid & (x >= t + 2 * step)).to(tl.int64) << 16)
                  + ((valid & (x >= t + 3 * step)).to(tl.int64) << 32))
        counts = tl.sum(packed, axis=0)  # each count <= S <= 2^14 fits its 16 bits
        t = tl.where((counts >> 32) >= need, t + 3 * step,
                     tl.where(((counts >> 16) & 0xFFFF) >= need, t + 2 * step,
                              tl.where((counts & 0xFFFF) >= need, t + step, t)))
    return t


@triton.jit
def _select_top_slots_kernel(score_ptr, page_ptr, held_ptr, chosen_ptr, index_ptr, S, k,
                             SB: tl.constexpr):
    row = tl.program_id(0)
    s = tl.arange(0, SB)
    inside = s < S
    score = tl.load(score_ptr + row * S + s, mask=inside, other=0.0)
    page = tl.load(page_ptr + row * S + s, mask=inside, other=0)
    held = (tl.load(held_ptr + row * S + s, mask=inside, other=0) != 0) & inside
    # scores.order_key's two words, each as a non-negative int64 in [0, 2^32)
    score = tl.where(score == 0.0, 0.0, score)  # -0.0 ties +0.0
    bits = score.to(tl.int32, bitcast=True)
    hi = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64) + 2147483648
    lo = 2147483647 - tl.maximum(page, -1)
    need = tl.minimum(tl.sum(held.to(tl.int32), axis=0), k)
    t_hi = _kth_largest(hi, held, tl.maximum(need, 1), 32)
    above = held & (hi > t_hi)
    tie = held & (hi == t_hi)
    rest = need - tl.sum(above.to(tl.int32), axis=0)  # >= 1 ties to take when need >= 1
    t_lo = tl.sum(tl.zeros_like(lo), axis=0)
    if rest < tl.sum(tie.to(tl.int32), axis=0):  # a tie at the threshold: older pages first
        t_lo = _kth_largest(lo, tie, rest, 32)
    chosen = (above | (tie & (lo >= t_lo))) & (need > 0)
    tl.store(chosen_ptr + row * S + s, chosen, mask=inside)
    # index: the chosen slots, then empty ones up to k (callers mask those)
    spare = inside & ~held
    first = tl.cumsum(chosen.to(tl.int32), axis=0) - 1
    then = need + tl.cumsum(spare.to(tl.int32), axis=0) - 1
    dest = tl.where(chosen, first, then)
    tl.store(index_ptr + row * k + dest, s.to(tl.int64), mask=(chosen | spare) & (dest < k))


def select_top_slots_cuda(scores: torch.Tensor, page_id: torch.Tensor, held: torch.Tensor,
                          k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """raas_flex::select_top_slots on CUDA for S <= MAX_SELECT_SLOTS and k <= S; no host
    sync."""
    B, H, S = scores.shape
    scores, page_id, held = (t.contiguous() for t in (scores.float(), page_id, held))
    chosen = torch.empty((B, H, S), dtype=torch.bool, device=scores.device)
    index = torch.empty((B, H, k), dtype=torch.int64, device=scores.device)
    SB = max(16, triton.next_power_of_2(S))
    _select_top_slots_kernel[(B * H,)](scores, page_id, held, chosen, index, S, k, SB=SB,
                                       num_warps=4 if SB <= 2048 else 8 if SB <= 8192 else 16)
    return chosen, index
