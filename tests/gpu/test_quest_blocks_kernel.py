"""raas_flex::quest_blocks's Triton body (keep_all_triton.quest_blocks_cuda) against its
torch body (keep_all_ops.quest_blocks_torch): the same `visible`, count, and block list (the
chosen slots, in any order, then slots that hold nothing, then zeros), over ties in the
bound (the older page decides), the current page with a low bound, rows with fewer held
pages than k, 9,217-slot rows and bounds a binade or two wide, as Quest's. Runs on CUDA,
or on the CPU under TRITON_INTERPRET=1 with Triton installed; skipped otherwise."""

from __future__ import annotations

import pytest
import torch

from raas_flex.policies.keep_all_ops import quest_blocks_torch
from tests.gpu.kernel_device import DEVICE, needs_kernel_device

pytestmark = needs_kernel_device


@pytest.mark.parametrize("seed,B,H,S,k,held_share,kind", [
    (0, 1, 8, 9217, 128, 0.999, "normal"), (1, 2, 3, 9217, 128, 0.9, "integer"),
    (2, 2, 2, 130, 8, 0.5, "integer"), (3, 3, 1, 17, 16, 0.3, "normal"),
    (4, 1, 2, 40, 40, 1.0, "integer"), (5, 1, 4, 3000, 128, 0.95, "bounds"),
])
def test_kernel_selects_as_torch_rule(seed, B, H, S, k, held_share, kind):
    from raas_flex.policies.keep_all_triton import quest_blocks_cuda
    gen = torch.Generator().manual_seed(seed)
    scores = {"integer": lambda: torch.randint(-3, 4, (B, H, S), generator=gen).float(),
              "normal": lambda: torch.randn(B, H, S, generator=gen),
              # like Quest's bounds: a binade or two wide
              "bounds": lambda: 16 + 2 * torch.randn(B, H, S, generator=gen)}[kind]()
    held = torch.rand(B, H, S, generator=gen) < held_share
    fill = torch.where(held, torch.randint(1, 17, (B, H, S), generator=gen), 0).int()
    page_id = torch.stack([torch.randperm(4 * S, generator=gen)[:S] for _ in range(B * H)])
    page_id = torch.where(held, page_id.view(B, H, S), -1)
    scores = torch.where(held, scores, float("-inf"))  # the bound of an empty slot
    current = torch.stack([torch.multinomial(h.float().flatten(), 1) for h in held.view(B * H, S)])
    current = current.view(B, H)  # a held slot, whatever its bound
    scores.view(B * H, S)[torch.arange(B * H), current.flatten()] = -1e6
    args = [t.to(DEVICE) for t in (scores, page_id, fill, current)]
    want_visible = torch.full((B, H, S), 7, dtype=torch.int32, device=DEVICE)
    got_visible = want_visible.clone()
    want_count, want_index = quest_blocks_torch(*args, want_visible, k)
    got_count, got_index = quest_blocks_cuda(*args, got_visible, min(k, S))
    assert torch.equal(got_visible, want_visible)
    assert torch.equal(got_count, want_count)
    k = min(k, S)
    chosen = got_visible > 0
    assert bool(chosen.gather(-1, current.to(DEVICE)[..., None]).all()), "current first"
    listed = got_index[:, :, 0].long()
    for row in range(B * H):
        b, h = divmod(row, H)
        n = int(chosen[b, h].sum())
        assert set(listed[b, h, :n].tolist()) == set(chosen[b, h].nonzero().flatten().tolist())
        assert bool((got_visible[b, h, listed[b, h, n:k]] == 0).all())
        assert bool((listed[b, h, k:] == 0).all())
