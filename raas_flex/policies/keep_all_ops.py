"""The keep-all policies' per-step selection as custom ops: Quest's bound over every page
and the top-k slots by (score, older page).

A keep-all policy (quest, recycled) ranks all S = N/P pages every step, so its selection is
the only O(N/P) work of its step and must run near bandwidth. Compiled, the bound was an
Inductor reduction at ~3x its bytes and the top-k was torch's radix select (three
gatherTopK launches of ~16 µs each whatever the row length, plus copies): 57 + 53 µs of a
169 µs quest step at 128k on the H200 (issue 15, bench/NOTES.md lever 12). On CUDA both
ops are Triton kernels (keep_all_triton.py); elsewhere, and on CUDA for rows with more
candidates than the select kernel holds in registers, they are the torch rules of scores.py,
which are also the kernels' references. Same decisions either way: the chosen slots are exactly the
k held slots first by (score desc, older page).
"""

from __future__ import annotations

from typing import Optional

import torch

from raas_flex.policies.scores import summary_bound, top_slots


@torch.library.custom_op("raas_flex::quest_bound", mutates_args=())
def quest_bound(q: torch.Tensor, kmax: torch.Tensor, kmin: torch.Tensor, fill: torch.Tensor,
                scale: float, softcap: Optional[float]) -> torch.Tensor:
    """scores.summary_bound: q [B, H, G, D], kmax/kmin [B, H, S, D], fill [B, H, S] ->
    [B, H, S] float32, -inf for empty slots."""
    return summary_bound(q, kmax, kmin, fill, scale, softcap)


@quest_bound.register_fake
def _(q, kmax, kmin, fill, scale, softcap):
    return fill.new_empty(fill.shape, dtype=torch.float32)


@quest_bound.register_kernel("cuda")
def _(q, kmax, kmin, fill, scale, softcap):
    from raas_flex.policies.keep_all_triton import quest_bound_cuda
    return quest_bound_cuda(q, kmax, kmin, fill, scale, softcap)


@torch.library.custom_op("raas_flex::select_top_slots", mutates_args=())
def select_top_slots(scores: torch.Tensor, page_id: torch.Tensor, held: torch.Tensor,
                     k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores.top_slots: scores [B, H, S] float32, page_id [B, H, S] int64, held [B, H, S]
    bool -> (chosen [B, H, S] bool, index [B, H, min(k, S)] int64). index lists the chosen
    slots, then (when fewer than k are held) slots that hold nothing, which callers mask
    (on CUDA one such slot, repeated)."""
    return top_slots(scores, page_id, held, k)


@select_top_slots.register_fake
def _(scores, page_id, held, k):
    B, H, S = scores.shape
    return (held.new_empty((B, H, S)),
            page_id.new_empty((B, H, min(k, S)), dtype=torch.int64))


@select_top_slots.register_kernel("cuda")
def _(scores, page_id, held, k):
    from raas_flex.policies.keep_all_triton import select_fits, select_top_slots_cuda
    k = min(k, scores.shape[-1])
    if not select_fits(scores.shape[-1], k):
        return top_slots(scores, page_id, held, k)
    return select_top_slots_cuda(scores, page_id, held, k)
