"""CUDA bodies of the keep-all ops of keep_all_ops.py: the Quest bound and the top-k select.

quest_bound: one program per (sequence·kv head, chunk of SLOTS pages) reads that chunk's
summaries once (the model's dtype, widened to fp32) and reduces q⁺·kmax + q⁻·kmin over D
for every query head of the group in registers (the bytes are the summaries: 2·D values
per page and kv head, 4 B·D in bf16).

The select (raas_flex::quest_blocks, raas_flex::select_top_slots_into), in two stages so
that a row is spread over many programs: stage 1 keeps each 1,024-slot chunk's first
min(k, held) slots as candidates (a row's first k are among them), stage 2 takes the first
k of a row's candidates. Each finds its k-th largest key digit by digit: by default 8
bits per pass from a 256-bin histogram (4 passes a word); the older search, kept for
comparison, builds it two bits per pass with the three candidate counts of a pass packed
into one int64 reduction (16 passes). The key is scores.order_key split in two words: the
score's monotone bits (hi), then the older page (lo), which only ties at the threshold
need, so the passes over lo run only when such a tie exists; a scan compacts the chosen
slots. Stage 2 is one program per row (12.6 us of quest's step at 128k on the H200,
latency-bound; ranking the candidates by counting, over many programs, was not faster in
the step: issue 15, lever 25). (A first version held a whole row of 9,217 slots in one
program: 90-130 µs per call on the H200, slower than torch.topk.)
Imported on first CUDA use only (no Triton on the CPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from raas_flex.policies.triton_logits import softcap
from raas_flex.triton_pdl import pdl_options, wait_for_prior_grid

# quest_bound's launch: 8 pages per program (an [8, D] tile of each summary), one warp; of
# 20 settings timed by bench/latency/bound_sweep.py on the H200 (bound_sweep_h200.json), the
# fastest at quest's 128k pool, batch 1 and 8 (18.8 / 92.1 us vs 22.0 / 101.7 for the former
# 32 pages and 4 warps; floor 8.9 / 71.1) and within 3 % of the fastest for raas's pool at
# batch 32 (13.0 vs 12.7 us).
BOUND_SLOTS = 8
BOUND_WARPS = 1


@triton.jit
def _quest_bound_kernel(q_ptr, kmax_ptr, kmin_ptr, fill_ptr, out_ptr, S, scale, cap,
                        sq_b, sq_h, sq_g, sk_b, sk_h, sk_s, sf_b, sf_h, so_b, so_h,
                        H: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
                        DP: tl.constexpr, SLOTS: tl.constexpr, HAS_CAP: tl.constexpr,
                        PDL: tl.constexpr):
    wait_for_prior_grid(PDL)
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
                     fill: torch.Tensor, scale: float, softcap: float | None,
                     slots: int | None = None, warps: int | None = None) -> torch.Tensor:
    """raas_flex::quest_bound on CUDA, shapes as there; no host sync. (slots and warps,
    None for the module's settings, are for bench/latency/bound_sweep.py.)"""
    slots = slots or BOUND_SLOTS
    B, H, G, D = q.shape
    S = fill.shape[-1]
    if kmax.stride() != kmin.stride() or kmax.stride(-1) != 1 or q.stride(-1) != 1 \
            or fill.stride(-1) != 1:
        raise ValueError("quest_bound needs q, kmax, kmin and fill contiguous in their last "
                         "dim and kmax, kmin laid out alike; pass the pool tensors as allocated.")
    out = torch.empty((B, H, S), dtype=torch.float32, device=q.device)
    grid = (B * H, triton.cdiv(S, slots))
    _quest_bound_kernel[grid](
        q, kmax, kmin, fill, out, S, float(scale),
        float(softcap) if softcap is not None else 1.0,
        q.stride(0), q.stride(1), q.stride(2), kmax.stride(0), kmax.stride(1), kmax.stride(2),
        fill.stride(0), fill.stride(1), out.stride(0), out.stride(1),
        H=H, G=G, D=D, DP=triton.next_power_of_2(D), SLOTS=slots,
        HAS_CAP=softcap is not None, num_warps=warps or BOUND_WARPS, **pdl_options(q.device))
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
        counts = tl.sum(packed, axis=0)  # <= 2^14 entries (a chunk, MAX_CANDIDATES): 16 bits
        t = tl.where((counts >> 32) >= need, t + 3 * step,
                     tl.where(((counts >> 16) & 0xFFFF) >= need, t + 2 * step,
                              tl.where((counts & 0xFFFF) >= need, t + step, t)))
    return t


@triton.jit
def _kth_largest_radix(x, valid, need, BITS: tl.constexpr):
    """_kth_largest by radix digits, 8 bits per pass (BITS / 8 passes, not BITS / 2): each
    pass counts the digits of the entries still matching the prefix found so far in one
    256-bin histogram, then keeps the largest digit with >= need entries at or above it."""
    t = tl.sum(tl.zeros_like(x), axis=0)  # int64 scalar 0: the threshold's bits so far
    bins = tl.arange(0, 256)
    for i in tl.static_range(BITS // 8):
        shift = BITS - 8 * (i + 1)
        digit = ((x >> shift) & 255).to(tl.int32)
        match = valid & ((x >> (shift + 8)) == (t >> (shift + 8)))
        hist = tl.histogram(digit, 256, mask=match)  # [256] int32
        at_least = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0) + hist  # #(digit >= d)
        d = tl.max(tl.where(at_least >= need, bins, 0), axis=0)
        need = need - tl.sum(tl.where(bins > d, hist, 0), axis=0)
        t = t + (d.to(tl.int64) << shift)
    return t


@triton.jit
def _kth(x, valid, need, RADIX: tl.constexpr):
    """The need-th largest valid x in [0, 2^32): by radix histograms or by bit pairs."""
    if RADIX:
        return _kth_largest_radix(x, valid, need, 32)
    return _kth_largest(x, valid, need, 32)


@triton.jit
def _order_words(score, page):
    """scores.order_key's two words, each a non-negative int64 in [0, 2^32): the score's
    monotone bits (-0.0 as +0.0), then the older page."""
    score = tl.where(score == 0.0, 0.0, score)
    bits = score.to(tl.int32, bitcast=True)
    hi = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64) + 2147483648
    return hi, 2147483647 - tl.maximum(page, -1)


@triton.jit
def _first_by_key(hi, lo, valid, k, RADIX: tl.constexpr):
    """The min(k, #valid) valid entries first by (hi, lo) descending ([n] bool), and their
    number; (hi, lo) pairs of valid entries are distinct."""
    need = tl.minimum(tl.sum(valid.to(tl.int32), axis=0), k)
    t_hi = _kth(hi, valid, tl.maximum(need, 1), RADIX)
    above = valid & (hi > t_hi)
    tie = valid & (hi == t_hi)
    counts = tl.sum(above.to(tl.int64) + (tie.to(tl.int64) << 32), axis=0)  # one reduction
    n_tie = counts >> 32
    rest = need - (counts - (n_tie << 32)).to(tl.int32)  # >= 1 ties to take when need >= 1
    t_lo = tl.sum(tl.zeros_like(lo), axis=0)
    if rest < n_tie:  # a tie at the threshold: older pages first
        t_lo = _kth(lo, tie, rest, RADIX)
    return (above | (tie & (lo >= t_lo))) & (need > 0), need


@triton.jit
def _chunk_candidates_kernel(score_ptr, page_ptr, held_ptr, chosen_ptr, cand_hi_ptr,
                             cand_lo_ptr, cand_slot_ptr, spare_ptr, current_ptr, index_ptr,
                             due_ptr, S, k, KC, index_stride, CHUNK: tl.constexpr,
                             RADIX: tl.constexpr, QUEST: tl.constexpr, GATED: tl.constexpr,
                             PDL: tl.constexpr):
    """Stage 1, one program per (row, chunk of CHUNK slots): the chunk's first min(k, held)
    slots, i.e. every slot that can be among the row's first k, as candidates [KC] (slot
    -1 pads); one slot that holds nothing (or -1) as the row's spare; chosen cleared.
    QUEST: held_ptr is the pool's fill (held = fill > 0), the current slot ranks first,
    chosen_ptr is the int32 `visible` (cleared to 0) and the index row's entries from k on
    are zeroed (its first k are stage 2's). GATED: nothing at all unless the device flag
    *due_ptr is set."""
    wait_for_prior_grid(PDL)
    if GATED:
        if tl.load(due_ptr) == 0:
            return
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    s = chunk * CHUNK + tl.arange(0, CHUNK)
    inside = s < S
    score = tl.load(score_ptr + row * S + s, mask=inside, other=0.0)
    page = tl.load(page_ptr + row * S + s, mask=inside, other=0)
    if QUEST:
        held = (tl.load(held_ptr + row * S + s, mask=inside, other=0) > 0) & inside
        score = tl.where(s == tl.load(current_ptr + row), float("inf"), score)
        tl.store(chosen_ptr + row * S + s, tl.zeros((CHUNK,), tl.int32), mask=inside)
        tl.store(index_ptr + row * index_stride + s, tl.zeros((CHUNK,), tl.int32),
                 mask=inside & (s >= k))
    else:
        held = (tl.load(held_ptr + row * S + s, mask=inside, other=0) != 0) & inside
        tl.store(chosen_ptr + row * S + s, s < 0, mask=inside)
    hi, lo = _order_words(score, page)
    first, need = _first_by_key(hi, lo, held, k, RADIX)
    base = (row * tl.num_programs(1) + chunk) * KC
    dest = tl.cumsum(first.to(tl.int32), axis=0) - 1
    tl.store(cand_hi_ptr + base + dest, hi, mask=first)
    tl.store(cand_lo_ptr + base + dest, lo, mask=first)
    tl.store(cand_slot_ptr + base + dest, s.to(tl.int64), mask=first)
    pad = tl.arange(0, CHUNK)
    tl.store(cand_slot_ptr + base + pad, tl.full((CHUNK,), -1, tl.int64),
             mask=(pad >= need) & (pad < KC))
    spare = tl.max(tl.where(inside & ~held, s, -1), axis=0)
    tl.store(spare_ptr + row * tl.num_programs(1) + chunk, spare.to(tl.int64))


@triton.jit
def _merge_candidates_kernel(chosen_ptr, cand_hi_ptr, cand_lo_ptr, cand_slot_ptr,
                             spare_ptr, index_ptr, fill_ptr, count_ptr, due_ptr, S, k, n_cand,
                             n_chunks, index_stride, CB: tl.constexpr, NC: tl.constexpr,
                             RADIX: tl.constexpr, QUEST: tl.constexpr, GATED: tl.constexpr,
                             PDL: tl.constexpr):
    """Stage 2, one program per row: the first k of the row's candidates are its chosen
    slots; index lists them, then (fewer than k held) a spare slot repeated. QUEST: a
    chosen slot's visible is its fill, and the row's count is k. GATED: as stage 1."""
    wait_for_prior_grid(PDL)
    if GATED:
        if tl.load(due_ptr) == 0:
            return
    row = tl.program_id(0)
    c = tl.arange(0, CB)
    # Every load is issued before the search (a pad's words are stale and never used): one
    # round trip to memory on the program's critical path, not three.
    slot = tl.load(cand_slot_ptr + row * n_cand + c, mask=c < n_cand, other=-1)
    hi = tl.load(cand_hi_ptr + row * n_cand + c, mask=c < n_cand, other=0)
    lo = tl.load(cand_lo_ptr + row * n_cand + c, mask=c < n_cand, other=0)
    spares = tl.load(spare_ptr + row * n_chunks + tl.arange(0, NC),
                     mask=tl.arange(0, NC) < n_chunks, other=-1)
    valid = slot >= 0
    if QUEST:
        fill = tl.load(fill_ptr + row * S + slot, mask=valid, other=0)
    first, need = _first_by_key(hi, lo, valid, k, RADIX)
    if QUEST:
        tl.store(chosen_ptr + row * S + slot, fill, mask=first)
        tl.store(count_ptr + row, k)
    else:
        tl.store(chosen_ptr + row * S + slot, first, mask=first)
    dest = tl.cumsum(first.to(tl.int32), axis=0) - 1
    tl.store(index_ptr + row * index_stride + dest, slot, mask=first)
    spare = tl.max(spares, axis=0)
    tail = tl.arange(0, CB)
    tl.store(index_ptr + row * index_stride + tail, tl.full((CB,), 0, tl.int64) + spare,
             mask=(tail >= need) & (tail < k))


# Launch settings chosen by bench/latency/select_sweep.py on the H200 (S = 9,217 slots,
# k = 128; bench/results/latency/select_sweep_h200.json): of 144 settings, each choosing
# exactly torch's slots, radix search with 1,024-slot chunks, 8 and 16 warps was within 2 %
# of the fastest at batch 1 (25.3 us) and 4 % at batch 8 (44.7 us); the bit-pair search
# with 4 and 4 warps took 39.6 / 53.3 us, torch.topk 79.3 / 136.8 us.
SELECT_CHUNK = 1024  # slots per stage-1 program
CHUNK_WARPS = 8  # stage 1's warps
MERGE_WARPS = None  # stage 2's warps; None: 4 up to 512 candidates, 8 to 1,024, then 16
MAX_CANDIDATES = 16384  # candidates per row stage 2 holds in registers
RADIX_SEARCH = True  # the k-th key by 8-bit radix histograms (4 passes a word), not bit
#                      pairs (16 passes)


def merge_warps_for(candidates: int) -> int:
    """Stage 2's warps for a row of `candidates` (padded to a power of two)."""
    return MERGE_WARPS or (4 if candidates <= 512 else 8 if candidates <= 1024 else 16)


def select_fits(S: int, k: int) -> bool:
    """Whether the two-stage select holds a row of S slots with k chosen."""
    return triton.cdiv(S, SELECT_CHUNK) * min(k, SELECT_CHUNK) <= MAX_CANDIDATES


def select_top_slots_cuda(scores: torch.Tensor, page_id: torch.Tensor, held: torch.Tensor,
                          k: int, chunk: int | None = None, chunk_warps: int | None = None,
                          merge_warps: int | None = None, radix: bool | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two stages into new tensors where select_fits(S, k), k <= S: (chosen [B, H, S]
    bool, index [B, H, k] int64) as scores.top_slots; no host sync. (chunk, the warps and
    radix, None for the module's settings, are for bench/latency/select_sweep.py.)"""
    B, H, S = scores.shape
    chosen = torch.empty((B, H, S), dtype=torch.bool, device=scores.device)
    index = torch.empty((B, H, k), dtype=torch.int64, device=scores.device)
    _select(scores, page_id, held, chosen, index, k, None, None, None,
            chunk, chunk_warps, merge_warps, radix)
    return chosen, index


def select_top_slots_into_cuda(scores: torch.Tensor, page_id: torch.Tensor,
                               held: torch.Tensor, k: int, due: torch.Tensor,
                               chosen: torch.Tensor, index: torch.Tensor) -> None:
    """raas_flex::select_top_slots_into on CUDA where select_fits(S, k), k <= S: when the
    device flag `due` ([] bool) is set, writes the select into chosen [B, H, S] bool and
    index [B, H, k] int64; otherwise every program returns at once (two launches, no
    reads)."""
    if not (chosen.is_contiguous() and index.is_contiguous()):
        raise ValueError("select_top_slots_into: chosen and index must be contiguous.")
    _select(scores, page_id, held, chosen, index, k, None, None, due)


def quest_blocks_cuda(scores: torch.Tensor, page_id: torch.Tensor, fill: torch.Tensor,
                      current: torch.Tensor, visible: torch.Tensor, k: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """raas_flex::quest_blocks on CUDA where select_fits(S, k), k <= S: the same two
    stages, which also write `visible` (fill where chosen, else 0) and the block list."""
    B, H, S = scores.shape
    if not (fill.is_contiguous() and visible.is_contiguous() and current.is_contiguous()):
        raise ValueError("quest_blocks: fill, visible and current must be contiguous; "
                         "allocate the pool with allocate_layer_cache.")
    count = torch.empty((B, H, 1), dtype=torch.int32, device=scores.device)
    index = torch.empty((B, H, 1, S), dtype=torch.int32, device=scores.device)
    _select(scores, page_id, fill, visible, index, k, current, count, None)
    return count, index


def _select(scores, page_id, held, chosen, index, k, current, count, due, chunk=None,
            chunk_warps=None, merge_warps=None, radix=None) -> None:
    """Launch both stages; `current` and `count` given: quest's form (quest_blocks_cuda);
    `due` given: the gated form (select_top_slots_into_cuda)."""
    chunk = chunk or SELECT_CHUNK
    chunk_warps = chunk_warps or CHUNK_WARPS
    radix = RADIX_SEARCH if radix is None else radix
    quest = current is not None
    B, H, S = scores.shape
    scores, page_id, held = (t.contiguous() for t in (scores.float(), page_id, held))
    n_chunks = triton.cdiv(S, chunk)
    KC = min(k, chunk)
    cand = torch.empty((3, B * H, n_chunks, KC), dtype=torch.int64, device=scores.device)
    spare = torch.empty((B * H, n_chunks), dtype=torch.int64, device=scores.device)
    index_stride = index.shape[-1]
    current = current if quest else spare  # unread unless quest
    count = count if quest else spare
    gated = due is not None
    due = due if gated else spare  # unread unless gated
    # Gated (recycled's 9 cheap steps in 10), the programs return at once and PDL cost
    # recycled's step 5 µs on the H200 (issue 15, lever 28): ordinary launches there.
    pdl = pdl_options(scores.device, allowed=not gated)
    _chunk_candidates_kernel[(B * H, n_chunks)](
        scores, page_id, held, chosen, cand[0], cand[1], cand[2], spare, current, index, due,
        S, k, KC, index_stride, CHUNK=chunk, RADIX=radix, QUEST=quest, GATED=gated,
        num_warps=chunk_warps, **pdl)
    n_cand = n_chunks * KC
    CB = max(16, triton.next_power_of_2(n_cand))
    _merge_candidates_kernel[(B * H,)](
        chosen, cand[0], cand[1], cand[2], spare, index, held, count, due, S, k, n_cand,
        n_chunks, index_stride, CB=CB, NC=max(16, triton.next_power_of_2(n_chunks)),
        RADIX=radix, QUEST=quest, GATED=gated, num_warps=merge_warps or merge_warps_for(CB),
        **pdl)
