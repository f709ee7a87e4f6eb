"""raas_flex::quest_blocks's CUDA bodies against its torch body
(keep_all_ops.quest_blocks_torch): the two-stage Triton select
(keep_all_triton.quest_blocks_cuda) and the one-launch CUDA C++ select
(quest_select_cuda.quest_blocks_one_launch) give the same `visible`, count, and block list
(the chosen slots, in any order, then slots that hold nothing, then zeros), over ties in
the bound (the older page decides), the current page with a low bound, rows with fewer held
pages than k, 9,217-slot rows and bounds a binade or two wide, as Quest's; and the two CUDA
bodies list the slots in the same order (so the attention's sums are the same). The Triton
body runs on CUDA or on the CPU under TRITON_INTERPRET=1 with Triton installed; the CUDA
C++ body on CUDA only; skipped otherwise."""

from __future__ import annotations

import pytest
import torch

from raas_flex.policies.keep_all_ops import quest_blocks_torch
from tests.gpu.kernel_device import DEVICE, needs_kernel_device

pytestmark = needs_kernel_device


CASES = [
    (0, 1, 8, 9217, 128, 0.999, "normal"), (1, 2, 3, 9217, 128, 0.9, "integer"),
    (2, 2, 2, 130, 8, 0.5, "integer"), (3, 3, 1, 17, 16, 0.3, "normal"),
    (4, 1, 2, 40, 40, 1.0, "integer"), (5, 1, 4, 3000, 128, 0.95, "bounds"),
    (6, 2, 2, 20000, 512, 0.97, "bounds"), (7, 1, 3, 2048, 300, 1.0, "constant"),
]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA C++ body: needs CUDA")


def _body(name: str):
    if name == "triton":
        from raas_flex.policies.keep_all_triton import quest_blocks_cuda
        return quest_blocks_cuda
    from raas_flex.policies.quest_select_cuda import quest_blocks_one_launch
    return quest_blocks_one_launch


def _case(seed, B, H, S, k, held_share, kind):
    """(scores, page_id, fill, current) on DEVICE: held slots' bounds of `kind`, -inf for
    empty ones, and a held current slot with a low bound."""
    gen = torch.Generator().manual_seed(seed)
    scores = {"integer": lambda: torch.randint(-3, 4, (B, H, S), generator=gen).float(),
              "normal": lambda: torch.randn(B, H, S, generator=gen),
              # like Quest's bounds: a binade or two wide
              "bounds": lambda: 16 + 2 * torch.randn(B, H, S, generator=gen),
              # every bound equal: the older page decides every choice
              "constant": lambda: torch.full((B, H, S), 3.5)}[kind]()
    held = torch.rand(B, H, S, generator=gen) < held_share
    fill = torch.where(held, torch.randint(1, 17, (B, H, S), generator=gen), 0).int()
    page_id = torch.stack([torch.randperm(4 * S, generator=gen)[:S] for _ in range(B * H)])
    page_id = torch.where(held, page_id.view(B, H, S), -1)
    scores = torch.where(held, scores, float("-inf"))  # the bound of an empty slot
    current = torch.stack([torch.multinomial(h.float().flatten(), 1) for h in held.view(B * H, S)])
    current = current.view(B, H)  # a held slot, whatever its bound
    scores.view(B * H, S)[torch.arange(B * H), current.flatten()] = -1e6
    return [t.to(DEVICE) for t in (scores, page_id, fill, current)]


@pytest.mark.parametrize("body", ["triton", pytest.param("one_launch", marks=needs_cuda)])
@pytest.mark.parametrize("seed,B,H,S,k,held_share,kind", CASES)
def test_kernel_selects_as_torch_rule(body, seed, B, H, S, k, held_share, kind):
    quest_blocks_cuda = _body(body)
    args = _case(seed, B, H, S, k, held_share, kind)
    current = args[3].cpu()
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


@needs_cuda
@pytest.mark.parametrize("seed,B,H,S,k,held_share,kind", CASES)
def test_both_cuda_bodies_list_in_one_order(seed, B, H, S, k, held_share, kind):
    args = _case(seed, B, H, S, k, held_share, kind)
    outputs = []
    for body in ("triton", "one_launch"):
        visible = torch.zeros(args[2].shape, dtype=torch.int32, device=DEVICE)
        count, index = _body(body)(*args, visible, min(k, S))
        outputs.append((visible, count, index))
    for got, want in zip(*outputs):
        assert torch.equal(got, want)


@needs_cuda
@pytest.mark.parametrize("S", [9217, 40000])
def test_op_selects_as_torch_rule_either_side_of_one_launch_limit(S):
    """The op's CUDA body: rows the one-launch kernel holds go to it, longer rows to the
    Triton select; both as the torch rule."""
    from raas_flex.policies import quest_select_cuda
    from raas_flex.policies.keep_all_ops import quest_blocks
    assert quest_select_cuda.select_fits(S) == (S == 9217)
    args = _case(9, 1, 2, S, 128, 0.98, "bounds")
    want_visible, got_visible = (torch.zeros(args[2].shape, dtype=torch.int32, device=DEVICE)
                                 for _ in range(2))
    quest_blocks_torch(*args, want_visible, 128)
    quest_blocks(*args, got_visible, 128)
    assert torch.equal(got_visible, want_visible)
