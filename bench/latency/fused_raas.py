"""RaaS decode step for CUDA with its cache bookkeeping fused into one Triton kernel.

The generic compiled step (raas_flex.compile.step) lowers the bookkeeping (victim choice,
append, Quest bounds, top-r ranks, timestamps, block-mask compaction) to ~11 small Inductor
kernels, each paying a launch and a gap inside the CUDA graph: ~20 us for work worth
~2 us. Here one program per (sequence, kv head) does all of it in registers and writes
the block-mask buffers in place, so a step is: this kernel, a one-element length update,
and flex_attention over a BlockMask built once on those buffers.

Same decisions as RaaSPolicy with importance="top_ratio", score_source="bound" (bounds are
summed in a different order, so a near-tie may rank differently). GPU only; the generic
step is the reference and the CPU path.
"""

from __future__ import annotations

from typing import Callable

import torch
import triton
import triton.language as tl
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from raas_flex.cache import LayerCache
from raas_flex.masks import visible_tokens_mask_mod
from raas_flex.masks.decode import QUERY_BLOCK
from raas_flex.policies.raas import RaaSPolicy

BIG: tl.constexpr = tl.constexpr(1 << 62)  # "never" for int64 victim keys


@triton.jit
def _raas_manage(q_ptr, k_ptr, v_ptr, kpool_ptr, vpool_ptr, kmin_ptr, kmax_ptr,
                 fill_ptr, visible_ptr, ts_ptr, pinned_ptr, page_ptr, current_ptr,
                 length_ptr, overflow_ptr, step_ptr,
                 part_n_ptr, part_idx_ptr, full_n_ptr, full_idx_ptr,
                 scale, ratio,
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

    # Victim: a free slot, else the unpinned slot with the oldest timestamp, ties -> oldest page.
    free = (page == -1) & ok
    primary = tl.where(free, -BIG, tl.where(pinned == 0, ts, BIG))
    primary = tl.where(ok, primary, BIG + 1)
    best = tl.min(primary, axis=0)
    oldest = tl.where((primary == best) & ok, page, BIG + 1)
    slot = tl.argmin(oldest, axis=0, tie_break_left=True)
    has_room = tl.max(tl.where(ok & (pinned == 0), 1, 0), axis=0) > 0
    stuck = need & (has_room == 0)  # no slot may be evicted: raise the sticky flag
    tl.store(overflow_ptr, stuck, mask=stuck)
    opened = (s == slot) & need
    fill = tl.where(opened, 0, fill)
    ts = tl.where(opened, step, ts)
    pinned = tl.where(opened, 0, pinned)
    page = tl.where(opened, length // P, page)
    current = tl.where(need, slot, current)

    # Append k, v at the next position of the current page.
    position = current * P + length % P
    d = tl.arange(0, D)
    kv_in = pid * D + d
    kv_out = (pid * S * P + position) * D + d
    tl.store(kpool_ptr + kv_out, tl.load(k_ptr + kv_in))
    tl.store(vpool_ptr + kv_out, tl.load(v_ptr + kv_in))
    fill = tl.where(s == current, fill + 1, fill)

    # The current row's min/max, then a barrier so every thread's tile loads below see it;
    # the tile loop then holds only loads, which the compiler can keep in flight together
    # (the first version stored inside the loop, serialising ~16 DRAM round trips).
    key = tl.load(k_ptr + kv_in).to(tl.float32)
    cur_row = (pid * S + current) * D + d
    lo = tl.minimum(tl.where(need, float("inf"), tl.load(kmin_ptr + cur_row)), key)
    hi = tl.maximum(tl.where(need, float("-inf"), tl.load(kmax_ptr + cur_row)), key)
    tl.store(kmin_ptr + cur_row, lo)
    tl.store(kmax_ptr + cur_row, hi)
    tl.debug_barrier()

    # Quest bounds, max over the GQA group.
    g = tl.arange(0, GB)
    g_ok = g < G
    acc = tl.zeros((GB, SB), dtype=tl.float32)
    for c in tl.static_range(0, D, DC):
        dc = c + tl.arange(0, DC)
        tile = (pid * S + s[:, None]) * D + dc[None, :]
        kmin = tl.load(kmin_ptr + tile, mask=ok[:, None], other=0.0)
        kmax = tl.load(kmax_ptr + tile, mask=ok[:, None], other=0.0)
        kmin = tl.where(kmin == float("inf"), 0.0, kmin)
        kmax = tl.where(kmax == float("-inf"), 0.0, kmax)
        qc = tl.load(q_ptr + (pid * G + g[:, None]) * D + dc[None, :], mask=g_ok[:, None],
                     other=0.0).to(tl.float32)  # [GB, DC]
        qe = qc[:, None, :]
        part = tl.maximum(qe, 0.0) * kmax[None, :, :] + tl.minimum(qe, 0.0) * kmin[None, :, :]
        acc += tl.sum(part, axis=2)
    acc = tl.where(g_ok[:, None], acc, float("-inf"))
    score = tl.max(acc, axis=0) * scale
    live = (fill > 0) & ok
    score = tl.where(live, score, float("-inf"))

    # Top ceil(ratio * live) pages get the current step as timestamp.
    count = tl.ceil(tl.sum(live.to(tl.int32), axis=0).to(tl.float32) * ratio).to(tl.int32)
    t = s  # the other slot, along axis 1
    sc_t, sc_s = score[None, :], score[:, None]
    pg_t, pg_s = page[None, :], page[:, None]
    older = (pg_t < pg_s) | ((pg_t == pg_s) & (t[None, :] < s[:, None]))
    before = ((sc_t > sc_s) | ((sc_t == sc_s) & older)) & ok[None, :]
    rank = tl.sum(before.to(tl.int32), axis=1)
    ts = tl.where(live & (rank < count), step, ts)

    # RaaS attends every retained token: visible = fill. Block lists, chosen slots first.
    full = (fill == P) & ok
    partial = (fill > 0) & (fill < P) & ok
    cnt = full.to(tl.int32)
    n = tl.sum(cnt, axis=0)
    prior = tl.cumsum(cnt, axis=0) - cnt
    tl.store(full_idx_ptr + pid * S + tl.where(full, prior, n + s - prior), s, mask=ok)
    tl.store(full_n_ptr + pid, n)
    cnt = partial.to(tl.int32)
    n = tl.sum(cnt, axis=0)
    prior = tl.cumsum(cnt, axis=0) - cnt
    tl.store(part_idx_ptr + pid * S + tl.where(partial, prior, n + s - prior), s, mask=ok)
    tl.store(part_n_ptr + pid, n)

    tl.store(fill_ptr + row, fill, mask=ok)
    tl.store(visible_ptr + row, fill, mask=ok)
    tl.store(ts_ptr + row, ts, mask=ok)
    tl.store(pinned_ptr + row, pinned != 0, mask=ok)
    tl.store(page_ptr + row, page, mask=ok)
    tl.store(current_ptr + pid, current)


MUTATED = ("kpool", "vpool", "kmin", "kmax", "fill", "visible", "ts", "pinned", "page",
           "current", "overflow", "part_n", "part_idx", "full_n", "full_idx")


@torch.library.triton_op("raas_flex::raas_manage", mutates_args=MUTATED)
def raas_manage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kpool: torch.Tensor,
                vpool: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor,
                fill: torch.Tensor, visible: torch.Tensor, ts: torch.Tensor,
                pinned: torch.Tensor, page: torch.Tensor, current: torch.Tensor,
                length: torch.Tensor, overflow: torch.Tensor, step: torch.Tensor,
                part_n: torch.Tensor, part_idx: torch.Tensor, full_n: torch.Tensor,
                full_idx: torch.Tensor, scale: float, ratio: float, page_size: int) -> None:
    """The fused bookkeeping as a custom op, so torch.compile keeps it inside one graph.
    q [B, Hq, 1, D], k, v [B, H, 1, D] contiguous, in the pool's dtype."""
    B, H, S = fill.shape
    Hq, D = q.shape[1], q.shape[3]
    G = Hq // H
    torch.library.wrap_triton(_raas_manage)[(B * H,)](
        q, k, v, kpool, vpool, kmin, kmax, fill, visible, ts, pinned, page, current,
        length, overflow, step, part_n, part_idx, full_n, full_idx, scale, ratio,
        H=H, S=S, SB=triton.next_power_of_2(S), P=page_size, D=D, DC=min(D, 16), G=G,
        GB=max(triton.next_power_of_2(G), 2), num_warps=8)


def fused_step_tensors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       cache: LayerCache, step: torch.Tensor, scale: float, ratio: float,
                       buffers: tuple[torch.Tensor, ...], mask: BlockMask,
                       kernel_options: dict | None, attend: Callable = flex_attention
                       ) -> torch.Tensor:
    """Bookkeeping kernel, length update, attention (`attend`, flex_attention by default):
    the whole step, compilable."""
    c = cache
    B, Hq, _, D = q.shape
    H = c.fill.shape[1]
    q = q.contiguous().to(c.k.dtype)
    raas_manage(q, k.contiguous().to(c.k.dtype), v.contiguous().to(c.v.dtype), c.k, c.v,
                c.kmin, c.kmax, c.fill, c.visible, c.timestamp, c.pinned, c.page_id,
                c.current, c.length, c.overflow, step, *buffers, scale, ratio, c.page_size)
    c.length.add_(1)
    out = attend(q.view(B, H, Hq // H, D), c.k, c.v, block_mask=mask, scale=scale,
                 kernel_options=kernel_options)
    return out.reshape(B, Hq, 1, D)


_compiled_fused = torch.compile(fused_step_tensors, fullgraph=True, dynamic=False)
_compiled_flex = torch.compile(flex_attention, fullgraph=True, dynamic=False)


def _eager_step(q, k, v, cache, step, scale, ratio, buffers, mask, kernel_options):
    """The same step with only flex compiled (the kernel launched eagerly); for comparison."""
    return fused_step_tensors(q, k, v, cache, step, scale, ratio, buffers, mask,
                              kernel_options, attend=_compiled_flex)


class FusedRaaSStep:
    """A RaaS decode step bound to one layer cache: fused bookkeeping + flex_attention,
    the whole step one torch.compile(fullgraph=True) graph.

    Build once per cache (it owns the block-mask buffers), then call
    step(q [B, Hq, 1, D], k, v [B, H, 1, D], step 0-d int64, scale) -> [B, Hq, 1, D]
    (in the pool's dtype).
    """

    def __init__(self, cache: LayerCache, policy: RaaSPolicy,
                 kernel_options: dict | None = None, compiled: bool = True) -> None:
        if not isinstance(policy, RaaSPolicy) or policy.config.importance != "top_ratio" \
                or policy.config.score_source != "bound":
            raise ValueError("FusedRaaSStep implements policy='raas' with importance="
                             "'top_ratio' and score_source='bound'; use compile_decode_step.")
        if cache.quantized or policy.config.kv_dtype is not None:
            raise ValueError("FusedRaaSStep writes full-precision K/V; with kv_dtype="
                             f"{policy.config.kv_dtype!r} use compile_decode_step.")
        if cache.k.device.type != "cuda":
            raise ValueError("FusedRaaSStep runs on CUDA; use compile_decode_step on CPU.")
        B, H, S = cache.fill.shape
        self.cache, self.policy, self.kernel_options = cache, policy, kernel_options
        self.run = _compiled_fused if compiled else _eager_step
        ints = dict(dtype=torch.int32, device=cache.k.device)
        # (partial count, partial indices, full count, full indices), rewritten every step.
        self.buffers = (torch.zeros(B, H, 1, **ints), torch.zeros(B, H, 1, S, **ints),
                        torch.zeros(B, H, 1, **ints), torch.zeros(B, H, 1, S, **ints))
        self.mask: BlockMask | None = None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 step: torch.Tensor, scale: float) -> torch.Tensor:
        c = self.cache
        if self.mask is None:  # one BlockMask on the persistent buffers, reused every step
            G, S = q.shape[1] // c.fill.shape[1], c.num_slots
            self.mask = BlockMask.from_kv_blocks(
                *self.buffers, BLOCK_SIZE=(QUERY_BLOCK, c.page_size),
                mask_mod=visible_tokens_mask_mod(c.visible, c.page_size),
                seq_lengths=(G, S * c.page_size), compute_q_blocks=False)
        return self.run(q, k, v, c, step, scale, self.policy.config.top_ratio,
                               self.buffers, self.mask, self.kernel_options)
