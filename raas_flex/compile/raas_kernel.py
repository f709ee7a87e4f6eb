"""The RaaS decode step on CUDA: one Triton kernel for the bookkeeping, no mask compaction.

Opt-in: with `raas_flex.functional.RAAS_KERNEL = True`, `decode_step_tensors` sends the
default policy (RaaSPolicy, importance="top_ratio", score_source="bound",
attention_kernel="flex") here on CUDA. Off by default because it measured slower on the
H200 (kernel 20.7 us, step 66 us vs 37.7 us generic at batch 1; bench/NOTES.md, issue 15).
A step is:
  1. `_raas_bookkeep`, one program per (sequence, kv head): victim slot and page open,
     fill count, the current page's min/max row, Quest bounds of every slot (max over the
     GQA group; the current row's new min/max substituted in registers, so the tile loads
     wait on no store), the top ceil(top_ratio * live) ranking by a bitonic sort of int64
     keys (score bits, then the older page: rank_descending's order) and a threshold, the
     timestamps, visible = fill;
  2. the K/V append at the slot the kernel chose (store_tokens: index_put_, in place, also
     for 8-bit pools), the length update;
  3. flex_attention over a block list that lists the whole pool (masks.pool_blocks, a
     constant of the graph): RaaS attends every held token, so nothing is compacted.
Same decisions as the generic step (raas_flex.functional): bounds are summed in another
order, so a near-tie of two bounds may rank differently, as between eager and Inductor.
tests/compile/test_raas_kernel.py checks it against the generic step in Triton's
interpreter; bench/latency/decode_probe.py on the GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from raas_flex.attention import attend_visible, fold_gqa
from raas_flex.cache import LayerCache
from raas_flex.cache.append import _rows, store_tokens
from raas_flex.masks import pool_blocks

BIG: tl.constexpr = tl.constexpr(1 << 62)  # "never" for int64 victim keys


@triton.jit
def _raas_bookkeep(q_ptr, k_ptr, kmin_ptr, kmax_ptr, fill_ptr, visible_ptr, ts_ptr,
                   pinned_ptr, page_ptr, current_ptr, length_ptr, overflow_ptr, step_ptr,
                   consts_ptr,
                   H: tl.constexpr, S: tl.constexpr, SB: tl.constexpr, P: tl.constexpr,
                   D: tl.constexpr, DC: tl.constexpr, G: tl.constexpr, GB: tl.constexpr):
    pid = tl.program_id(0)  # one (sequence b, kv head h)
    b = pid // H
    s = tl.arange(0, SB)
    ok = s < S
    row = pid * S + s
    fill = tl.load(fill_ptr + row, mask=ok, other=0)
    ts = tl.load(ts_ptr + row, mask=ok, other=0)
    pinned = tl.load(pinned_ptr + row, mask=ok, other=1).to(tl.int32)
    page = tl.load(page_ptr + row, mask=ok, other=-1)
    current = tl.load(current_ptr + pid)
    length = tl.load(length_ptr + b)
    step = tl.load(step_ptr)
    need = (length % P) == 0

    # Victim (cache.slots.choose_slot): a free slot, else the unpinned slot with the oldest
    # timestamp; ties -> the oldest page, then the lowest slot.
    free = (page == -1) & ok
    primary = tl.where(free, -BIG, tl.where(pinned == 0, ts, BIG))
    primary = tl.where(ok, primary, BIG + 1)
    best = tl.min(primary, axis=0)
    oldest = tl.where((primary == best) & (pinned == 0) & ok, page, BIG + 1)
    slot = tl.argmin(oldest, axis=0, tie_break_left=True)
    has_room = tl.max(tl.where(ok & (pinned == 0), 1, 0), axis=0) > 0
    stuck = need & (has_room == 0)
    tl.store(overflow_ptr, stuck, mask=stuck)
    opened = (s == slot) & need
    fill = tl.where(opened, 0, fill)
    ts = tl.where(opened, step, ts)
    pinned = tl.where(opened, 0, pinned)
    page = tl.where(opened, length // P, page)
    current = tl.where(need, slot, current)
    fill = tl.where(s == current, fill + 1, fill)
    is_current = (s == current)[:, None]

    # Quest bounds q+·kmax + q-·kmin, max over the GQA group. The current row is read with
    # this token's key folded in (in registers); its new min/max is stored after the loop,
    # so the loop holds loads only and the compiler can keep them in flight together.
    d = tl.arange(0, D)
    key_row = tl.load(k_ptr + pid * D + d).to(tl.float32)
    cur_row = (pid * S + current) * D + d
    lo = tl.minimum(tl.where(need, float("inf"), tl.load(kmin_ptr + cur_row)), key_row)
    hi = tl.maximum(tl.where(need, float("-inf"), tl.load(kmax_ptr + cur_row)), key_row)
    g = tl.arange(0, GB)
    g_ok = g < G
    acc = tl.zeros((GB, SB), dtype=tl.float32)
    for c in tl.static_range(0, D, DC):
        dc = c + tl.arange(0, DC)
        tile = (pid * S + s[:, None]) * D + dc[None, :]
        kmin = tl.load(kmin_ptr + tile, mask=ok[:, None], other=0.0)
        kmax = tl.load(kmax_ptr + tile, mask=ok[:, None], other=0.0)
        key = tl.load(k_ptr + pid * D + dc).to(tl.float32)[None, :]
        kmin = tl.where(is_current, tl.where(need, key, tl.minimum(kmin, key)), kmin)
        kmax = tl.where(is_current, tl.where(need, key, tl.maximum(kmax, key)), kmax)
        kmin = tl.where(kmin == float("inf"), 0.0, kmin)  # empty slots: masked below
        kmax = tl.where(kmax == float("-inf"), 0.0, kmax)
        qc = tl.load(q_ptr + (pid * G + g[:, None]) * D + dc[None, :], mask=g_ok[:, None],
                     other=0.0).to(tl.float32)  # [GB, DC]
        qe = qc[:, None, :]
        part = tl.maximum(qe, 0.0) * kmax[None, :, :] + tl.minimum(qe, 0.0) * kmin[None, :, :]
        acc += tl.sum(part, axis=2)
    tl.store(kmin_ptr + cur_row, lo)
    tl.store(kmax_ptr + cur_row, hi)
    acc = tl.where(g_ok[:, None], acc, float("-inf"))
    # scale and ratio come as float32 values in memory: Inductor would pass Python floats
    # as float64, and the generic step multiplies float32 tensors by them in float32.
    scale = tl.load(consts_ptr)
    ratio = tl.load(consts_ptr + 1)
    score = tl.max(acc, axis=0) * scale
    live = (fill > 0) & ok

    # Top ceil(ratio * live) live slots get the step as timestamp. Keys in rank order
    # (largest first): the score's bits made monotone, then the older page; distinct for
    # held slots, so the count-th largest key is an exact threshold.
    score = tl.where(score == 0.0, 0.0, score)  # -0.0 ties +0.0
    bits = score.to(tl.int32, bitcast=True)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)
    key = ordered * 4294967296 + (2147483647 - page)
    key = tl.where(live, key, -BIG * 2)
    count = tl.ceil(tl.sum(live.to(tl.int32), axis=0).to(tl.float32) * ratio).to(tl.int32)
    ranked = tl.sort(key, descending=True)
    threshold = tl.sum(tl.where(s == count - 1, ranked, 0), axis=0)
    ts = tl.where(live & (key >= threshold) & (count > 0), step, ts)

    tl.store(fill_ptr + row, fill, mask=ok)
    tl.store(visible_ptr + row, fill, mask=ok)
    tl.store(ts_ptr + row, ts, mask=ok)
    tl.store(pinned_ptr + row, pinned != 0, mask=ok)
    tl.store(page_ptr + row, page, mask=ok)
    tl.store(current_ptr + pid, current)


def raas_bookkeep(query: torch.Tensor, key: torch.Tensor, cache: LayerCache,
                  step: torch.Tensor, scale: float, ratio: float) -> None:
    """Launch `_raas_bookkeep`: query [B, H, G, D] and key [B, H, 1, D] contiguous (key
    as the summaries bound it: raas_flex.cache.append.summary_keys' dtype)."""
    c = cache
    B, H, S = c.fill.shape
    G, D = query.shape[2], query.shape[3]
    torch.library.wrap_triton(_raas_bookkeep)[(B * H,)](
        query, key, c.kmin, c.kmax, c.fill, c.visible, c.timestamp, c.pinned, c.page_id,
        c.current, c.length, c.overflow, step,
        torch.tensor([scale, ratio], dtype=torch.float32, device=c.fill.device),
        H=H, S=S, SB=triton.next_power_of_2(S), P=c.page_size, D=D, DC=min(D, 16), G=G,
        GB=max(triton.next_power_of_2(G), 2), num_warps=4)


def raas_decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache,
                     policy, step: torch.Tensor, scale: float) -> torch.Tensor:
    """decode_step_tensors for the default RaaS policy on CUDA (see the module note)."""
    B, Hq, _, D = q.shape
    H = k.shape[1]
    compute = q.dtype if cache.quantized else cache.k.dtype
    query = fold_gqa(q, H).to(compute).contiguous()
    key = (k if cache.quantized else k.to(cache.k.dtype)).contiguous()
    raas_bookkeep(query, key, cache, step, scale, policy.config.top_ratio)
    position = cache.current * cache.page_size + (cache.length % cache.page_size)[:, None]
    b, h, _ = _rows(cache, cache.current)
    store_tokens(cache, (b, h, position), k[:, :, 0], v[:, :, 0])
    cache.length.add_(1)
    out = attend_visible(query, cache, scale, "flex", pool_blocks(cache.visible))
    return out.reshape(B, Hq, 1, D).to(q.dtype)
