"""The keep-all policies' per-step selection as custom ops: Quest's bound over every page
and the top-k slots by (score, older page).

Quest ranks all S = N/P pages every step (recycled on its full steps), so its selection is
the only O(N/P) work of its step and must run near bandwidth. Compiled, the bound was an
Inductor reduction at ~3x its bytes and the top-k was torch's radix select (three
gatherTopK launches of ~16 µs each whatever the row length, plus copies): 57 + 53 µs of a
169 µs quest step at 128k on the H200 (issue 15, bench/NOTES.md lever 12). On CUDA the
bound and recycled's select are Triton kernels (keep_all_triton.py) and quest's select is one
CUDA C++ kernel (quest_select_cuda.py; the Triton select for rows longer than it holds);
elsewhere, and on CUDA for rows with more candidates than the Triton select holds in
registers, they are the torch rules of scores.py, which are also the kernels' references. Same decisions either way: the chosen slots are exactly the
k held slots first by (score desc, older page). The bound is also raas's score
(page_bound).
"""

from __future__ import annotations

from typing import Optional

import torch

from raas_flex.cache.pool import LayerCache
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


def page_bound(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """Quest's upper bound on max_{k in page} q·k·scale, max over the GQA group, for every
    slot of the pool (q [B, H, G, D] -> [B, H, S] float32, -inf for empty slots): the score
    of quest and raas, as quest_bound (on CUDA one Triton pass spread over (sequence, kv
    head, keep_all_triton.BOUND_SLOTS slots)). For raas at batch 32 Inductor's reduction
    took 22.7 µs where the summaries' bytes take ~4, the kernel 9.9 (issue 15, lever 19,
    H200: the step 192.1 -> 177.2 µs; batch 1 unchanged within run-to-run noise)."""
    return quest_bound(q, cache.kmax, cache.kmin, cache.fill, scale, cache.softcap)


@torch.library.custom_op("raas_flex::select_top_slots_into", mutates_args=("chosen", "index"))
def select_top_slots_into(scores: torch.Tensor, page_id: torch.Tensor, held: torch.Tensor,
                          k: int, due: torch.Tensor, chosen: torch.Tensor,
                          index: torch.Tensor) -> None:
    """scores.top_slots written into chosen [B, H, S] bool and index [B, H, k] int64 when
    the device flag `due` ([] bool) is set; both left as they are otherwise. scores
    [B, H, S] float32, page_id [B, H, S] int64, held [B, H, S] bool, k <= S. index lists
    the chosen slots first, then (fewer than k held) slots that hold nothing. Gated on the
    device so that a policy that selects only on some steps (recycled) stays one
    branch-free graph: on CUDA the kernels' programs return at once when `due` is 0."""
    _top_slots_into(scores, page_id, held, k, due, chosen, index)


def _top_slots_into(scores, page_id, held, k, due, chosen, index) -> None:
    """select_top_slots_into by the torch rule: its body off CUDA and on CUDA for rows the
    kernels do not hold (computed, then kept only where `due`)."""
    new_chosen, new_index = top_slots(scores, page_id, held, k)
    chosen.copy_(torch.where(due, new_chosen, chosen))
    index.copy_(torch.where(due, new_index, index))


@select_top_slots_into.register_fake
def _(scores, page_id, held, k, due, chosen, index):
    return None


@select_top_slots_into.register_kernel("cuda")
def _(scores, page_id, held, k, due, chosen, index):
    from raas_flex.policies.keep_all_triton import select_fits, select_top_slots_into_cuda
    if not select_fits(scores.shape[-1], k):
        return _top_slots_into(scores, page_id, held, k, due, chosen, index)
    select_top_slots_into_cuda(scores, page_id, held, k, due, chosen, index)


@torch.library.custom_op("raas_flex::quest_blocks", mutates_args=("visible",))
def quest_blocks(scores: torch.Tensor, page_id: torch.Tensor, fill: torch.Tensor,
                 current: torch.Tensor, visible: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Quest's whole selection from its bound: the current slot first, then the held
    slots (fill > 0) by (score desc, older page), k of them (capped at S). Writes
    visible [B, H, S] (fill where chosen, else 0) and returns the kernel's block list:
    count [B, H, 1] int32 (= k) and index [B, H, 1, S] int32 (the chosen slots, then
    slots that hold nothing where fewer than k are held, then zeros). One op so that on
    CUDA the two select kernels also write visible and the list (no pointwise kernels of
    their own around them)."""
    return quest_blocks_torch(scores, page_id, fill, current, visible, k)


def quest_blocks_torch(scores: torch.Tensor, page_id: torch.Tensor, fill: torch.Tensor,
                       current: torch.Tensor, visible: torch.Tensor, k: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """quest_blocks by the torch rule (scores.top_slots): its body off CUDA, its CUDA
    body's reference, and its CUDA body for rows the kernels do not hold."""
    S = scores.shape[-1]
    slots = torch.arange(S, device=scores.device)
    ranked = torch.where(slots == current[..., None], float("inf"), scores)
    chosen, index = top_slots(ranked, page_id, fill > 0, k)
    visible.copy_(torch.where(chosen, fill, 0))
    B, H, k = index.shape
    count = torch.full((B, H, 1), k, dtype=torch.int32, device=index.device)
    # Padded to S entries (the kernel reads the first `count`): Inductor's CPU flex checks
    # that the index is as wide as the pool.
    return count, torch.nn.functional.pad(index.to(torch.int32), (0, S - k))[:, :, None]


@quest_blocks.register_fake
def _(scores, page_id, fill, current, visible, k):
    B, H, S = scores.shape
    return fill.new_empty((B, H, 1)), fill.new_empty((B, H, 1, S))


@quest_blocks.register_kernel("cuda")
def _(scores, page_id, fill, current, visible, k):
    from raas_flex.policies import quest_select_cuda
    S = scores.shape[-1]
    k = min(k, S)
    if quest_select_cuda.ENABLED and quest_select_cuda.select_fits(S) and k >= 1:
        return quest_select_cuda.quest_blocks_one_launch(scores, page_id, fill, current,
                                                         visible, k)
    from raas_flex.policies.keep_all_triton import quest_blocks_cuda, select_fits
    if not select_fits(S, k):
        return quest_blocks_torch(scores, page_id, fill, current, visible, k)
    return quest_blocks_cuda(scores, page_id, fill, current, visible, k)
