"""raas_flex::restamp_top_fraction's Triton body (restamp_triton.restamp_cuda) against its
torch body (restamp_op.restamp_torch, i.e. scores.top_fraction): exactly the same
timestamps over tied scores (the older page decides), -0.0 against +0.0, rows with no,
few or only live pages, ratios whose product with the live count is an integer, and rows
of 1 to 700 slots. Runs on CUDA, or on the CPU under TRITON_INTERPRET=1 with Triton
installed; skipped otherwise."""

from __future__ import annotations

import pytest
import torch

from raas_flex.policies.restamp_op import restamp_torch
from tests.gpu.kernel_device import DEVICE, needs_kernel_device

pytestmark = needs_kernel_device


@pytest.mark.parametrize("seed,B,H,S,live_share,ratio,integer_scores", [
    (0, 1, 8, 137, 1.0, (1, 2), False), (1, 2, 3, 137, 0.7, (3, 5), True),
    (2, 2, 2, 17, 0.3, (1, 1), True), (3, 1, 2, 1, 1.0, (1, 2), False),
    (4, 3, 1, 700, 0.9, (999999999999, 10**12), True), (5, 1, 4, 40, 0.0, (1, 2), False),
])
def test_kernel_restamps_as_torch_rule(seed, B, H, S, live_share, ratio, integer_scores):
    from raas_flex.policies.restamp_triton import restamp_cuda
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.randint(-3, 4, (B, H, S), generator=gen).float() if integer_scores
              else torch.randn(B, H, S, generator=gen))
    if S > 2:
        scores[..., 1], scores[..., 2] = -0.0, 0.0  # equal when ranked: the older page first
    live = torch.rand(B, H, S, generator=gen) < live_share
    fill = torch.where(live, torch.randint(1, 17, (B, H, S), generator=gen), 0).int()
    page_id = torch.stack([torch.randperm(4 * S, generator=gen)[:S] for _ in range(B * H)])
    page_id = torch.where(live, page_id.view(B, H, S), -1)
    scores = torch.where(live, scores, float("-inf"))  # the bound of an empty slot
    stamps = torch.randint(0, 50, (B, H, S), generator=gen)
    step = torch.tensor(77)
    args = [t.to(DEVICE) for t in (scores, page_id, fill)]
    want, got = stamps.to(DEVICE).clone(), stamps.to(DEVICE).clone()
    restamp_torch(*args, want, step.to(DEVICE), *ratio)
    restamp_cuda(*args, got, step.to(DEVICE), *ratio)
    assert torch.equal(got, want)
    if live_share > 0:
        assert bool((got == 77).any()), "no page restamped"
