"""CUDA body of raas_flex::restamp_top_fraction (restamp_op.py): one program per
(sequence, kv head) holds the row's S slots, counts its live pages, takes the first
ceil(live · numerator / denominator) of them by (score desc, older page) with the keep-all
select's radix search (keep_all_triton._first_by_key: live pages have distinct page ids,
so their keys are distinct and the choice is exact) and writes the step into their
timestamps. Imported on first CUDA use only (no Triton on the CPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from raas_flex.policies.keep_all_triton import _first_by_key, _order_words

MAX_SLOTS = 8192  # slots per row one program holds in registers


@triton.jit
def _restamp_kernel(score_ptr, page_ptr, fill_ptr, stamp_ptr, step_ptr, S, numerator,
                    denominator, SP: tl.constexpr):
    row = tl.program_id(0)
    s = tl.arange(0, SP)
    inside = s < S
    live = (tl.load(fill_ptr + row * S + s, mask=inside, other=0) > 0) & inside
    score = tl.load(score_ptr + row * S + s, mask=inside, other=0.0)
    page = tl.load(page_ptr + row * S + s, mask=inside, other=0)
    stamp = tl.load(stamp_ptr + row * S + s, mask=inside, other=0)
    n = tl.sum(live.to(tl.int64), axis=0)
    count = (n * numerator + (denominator - 1)) // denominator  # exact, in int64
    hi, lo = _order_words(score, page)
    fresh, _ = _first_by_key(hi, lo, live, count, True)
    step = tl.load(step_ptr)
    tl.store(stamp_ptr + row * S + s, tl.where(fresh, step, stamp), mask=inside)


def restamp_fits(S: int) -> bool:
    """Whether one program holds a row of S slots."""
    return S <= MAX_SLOTS


def restamp_cuda(scores: torch.Tensor, page_id: torch.Tensor, fill: torch.Tensor,
                 timestamp: torch.Tensor, step: torch.Tensor, numerator: int,
                 denominator: int) -> None:
    """raas_flex::restamp_top_fraction on CUDA where restamp_fits(S); no host sync."""
    B, H, S = scores.shape
    if not all(t.is_contiguous() for t in (page_id, fill, timestamp)):
        raise ValueError("restamp_top_fraction: page_id, fill and timestamp must be "
                         "contiguous; allocate the pool with allocate_layer_cache.")
    SP = max(16, triton.next_power_of_2(S))
    _restamp_kernel[(B * H,)](scores.float().contiguous(), page_id, fill, timestamp, step,
                              S, int(numerator), int(denominator), SP=SP,
                              num_warps=4 if SP <= 512 else 8 if SP <= 2048 else 16)
