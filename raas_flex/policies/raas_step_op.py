"""RaaS's bookkeeping for one decode step as one custom op (one CUDA C++ kernel on CUDA).

Why: staged, a RaaS step's bookkeeping (victim, open + write, Quest's bound, the top-ratio
rank, the timestamp stamp, visible) is ~8 small kernels; at batch 1 on the H200 they and
their launch gaps took ~15 µs of a 33 µs step, more than the attention over the pool
(issue 15). All of it reads only one row's metadata and summaries and one token, so one
thread block per (sequence, kv head) does it (raas_step.cu, launched by raas_step_cuda.py).

The op's torch body is the staged code itself (choose_slot, open_slot, append_token,
summary_bound, top_fraction), so it is the kernel's reference. Same decisions; the bounds
agree to rounding (the kernel sums over D in another order). Used by RaaSPolicy.fused_step
where raas_step_layout.fused_layout holds the row on chip; elsewhere the step runs the stages.
"""

from __future__ import annotations

import torch

from raas_flex.cache.append import append_token, open_slot
from raas_flex.cache.pool import LayerCache
from raas_flex.cache.slots import choose_slot
from raas_flex.policies.raas_step_layout import fused_layout, row_blocks
from raas_flex.policies.scores import summary_bound, top_fraction

ENABLED = True  # module setting: False runs RaaS's bookkeeping stage by stage (bench/)
_MUTATED = ("k_pool", "v_pool", "fill", "visible", "timestamp", "pinned", "page_id", "kmin",
            "kmax", "current", "length", "overflow", "arrivals")


def fuses(cache: LayerCache, q: torch.Tensor) -> bool:
    """Whether the op's kernel takes this cache's step (static facts only, so a compiled
    step decides once): CUDA, ENABLED, a plain (not 8-bit) pool without a logit softcap,
    the `arrivals` counter allocated (RaaSPolicy.init_state) and a row that fits."""
    B, H, S, D = cache.kmin.shape
    return (ENABLED and cache.k.is_cuda and not cache.quantized and cache.softcap is None
            and "arrivals" in cache.policy_state
            and fused_layout(S, D, q.shape[2], cache.k.dtype,
                             row_blocks(cache.k.device, B * H)) is not None)


@torch.library.custom_op("raas_flex::raas_bookkeeping", mutates_args=_MUTATED)
def raas_bookkeeping(k_pool: torch.Tensor, v_pool: torch.Tensor, fill: torch.Tensor,
                     visible: torch.Tensor, timestamp: torch.Tensor, pinned: torch.Tensor,
                     page_id: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor,
                     current: torch.Tensor, length: torch.Tensor, overflow: torch.Tensor,
                     arrivals: torch.Tensor, step: torch.Tensor, k: torch.Tensor,
                     v: torch.Tensor, q: torch.Tensor, page_size: int, scale: float,
                     ratio_num: int, ratio_den: int) -> torch.Tensor:
    """One RaaS step's bookkeeping over a pool's tensors (LayerCache's fields; arrivals [B]
    int32, zero between calls): open a page where the token starts one (victim: the
    stalest unpinned page), write k, v [B, H, 1, D], score every slot by Quest's bound for
    q [B, H, G, D], stamp the top ratio_num / ratio_den of the live pages with `step`, set
    visible = fill. Returns the bounds [B, H, S] float32 (-inf for empty slots)."""
    return raas_bookkeeping_torch(k_pool, v_pool, fill, visible, timestamp, pinned, page_id,
                                  kmin, kmax, current, length, overflow, step, k, v, q,
                                  page_size, scale, ratio_num, ratio_den)


def raas_bookkeeping_torch(k_pool, v_pool, fill, visible, timestamp, pinned, page_id, kmin,
                           kmax, current, length, overflow, step, k, v, q, page_size, scale,
                           ratio_num, ratio_den) -> torch.Tensor:
    """The op by the staged torch rules, in the staged step's order."""
    cache = LayerCache(k=k_pool, v=v_pool, fill=fill, visible=visible, timestamp=timestamp,
                       pinned=pinned, page_id=page_id, kmin=kmin, kmax=kmax, current=current,
                       length=length, overflow=overflow, page_size=page_size)
    slot, has_room = choose_slot(cache, timestamp)  # raas's eviction key: the timestamps
    open_slot(cache, slot, has_room, step)
    append_token(cache, k, v)
    scores = summary_bound(q, kmax, kmin, fill, scale, None)
    fresh = top_fraction(scores, cache, ratio_num, ratio_den)
    timestamp.copy_(torch.where(fresh, step, timestamp))
    visible.copy_(fill)
    return scores


@raas_bookkeeping.register_fake
def _(k_pool, v_pool, fill, visible, timestamp, pinned, page_id, kmin, kmax, current, length,
      overflow, arrivals, step, k, v, q, page_size, scale, ratio_num, ratio_den):
    return fill.new_empty(fill.shape, dtype=torch.float32)


@raas_bookkeeping.register_kernel("cuda")
def _(k_pool, v_pool, fill, visible, timestamp, pinned, page_id, kmin, kmax, current, length,
      overflow, arrivals, step, k, v, q, page_size, scale, ratio_num, ratio_den):
    B, H, S, D = kmin.shape
    layout = fused_layout(S, D, q.shape[2], k_pool.dtype, row_blocks(kmin.device, B * H))
    if layout is None:  # a direct call on a row too big for the kernel
        return raas_bookkeeping_torch(k_pool, v_pool, fill, visible, timestamp, pinned,
                                      page_id, kmin, kmax, current, length, overflow, step,
                                      k, v, q, page_size, scale, ratio_num, ratio_den)
    from raas_flex.policies.raas_step_cuda import raas_bookkeeping_cuda
    return raas_bookkeeping_cuda(layout, k_pool, v_pool, fill, visible, timestamp, pinned,
                                 page_id, kmin, kmax, current, length, overflow, arrivals,
                                 step, k, v, q, page_size, scale, ratio_num, ratio_den)
