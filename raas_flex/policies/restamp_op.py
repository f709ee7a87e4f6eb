"""raas's timestamp update under importance="top_ratio" as one custom op.

The rule (scores.top_fraction): the top ceil(live pages · top_ratio) live pages of each
sequence and kv head, by score, ties to the older page, get the current step as their
timestamp. Compiled, Inductor ran it as a pairwise rank over S² slot pairs, a live count
and a copy: 5.6 µs for the rank alone at batch 1 and 8.9 + 2.4 µs at batch 32 on the H200
(issue 15, lever 20), where its inputs are a few KB per row. On CUDA one Triton program
per (sequence, kv head) finds the row's k-th key by radix histograms (the keep-all select's
search) and writes the timestamps (restamp_triton.py); elsewhere, and for rows wider than
that program holds, the torch rule. Same timestamps either way.
"""

from __future__ import annotations

import torch

from raas_flex.policies.scores import top_fraction


@torch.library.custom_op("raas_flex::restamp_top_fraction", mutates_args=("timestamp",))
def restamp_top_fraction(scores: torch.Tensor, page_id: torch.Tensor, fill: torch.Tensor,
                         timestamp: torch.Tensor, step: torch.Tensor, numerator: int,
                         denominator: int) -> None:
    """timestamp [B, H, S] int64 := step (0-d int64) where top_fraction(scores [B, H, S]
    float32, page_id, fill, numerator, denominator) marks the slot, else unchanged."""
    restamp_torch(scores, page_id, fill, timestamp, step, numerator, denominator)


def restamp_torch(scores: torch.Tensor, page_id: torch.Tensor, fill: torch.Tensor,
                  timestamp: torch.Tensor, step: torch.Tensor, numerator: int,
                  denominator: int) -> None:
    """The op by the torch rule: its body off CUDA and its CUDA kernel's reference."""
    fresh = top_fraction(scores, page_id, fill, numerator, denominator)
    timestamp.copy_(torch.where(fresh, step, timestamp))


@restamp_top_fraction.register_fake
def _(scores, page_id, fill, timestamp, step, numerator, denominator):
    return None


@restamp_top_fraction.register_kernel("cuda")
def _(scores, page_id, fill, timestamp, step, numerator, denominator):
    from raas_flex.policies.restamp_triton import restamp_cuda, restamp_fits
    if not restamp_fits(scores.shape[-1]):
        return restamp_torch(scores, page_id, fill, timestamp, step, numerator, denominator)
    restamp_cuda(scores, page_id, fill, timestamp, step, numerator, denominator)
