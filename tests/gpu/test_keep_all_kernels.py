"""The keep-all policies' Triton selection (policies/keep_all_triton.py) against the torch
rules it replaces (scores.summary_bound, scores.top_slots): the Quest bound to float
rounding, and exactly the same chosen slots, over ties in the score (then the older page
decides), -0.0, +inf, rows with fewer held slots than k and rows longer than the kernel
holds (too many candidates: the torch rule then runs on CUDA too); the gated select writes
nothing when it is not due. Skipped off CUDA."""

from __future__ import annotations

import pytest
import torch

from raas_flex.policies.keep_all_ops import quest_bound, select_top_slots_into
from raas_flex.policies.scores import summary_bound, top_slots

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU check: needs CUDA")


@pytest.mark.parametrize("seed,B,H,G,D,S,cap,dtype", [
    (0, 2, 8, 4, 128, 9217, None, torch.bfloat16), (1, 1, 3, 1, 64, 33, 30.0, torch.float32),
    (2, 3, 2, 8, 256, 130, None, torch.float16), (3, 1, 8, 4, 128, 9217, 50.0, torch.float32),
])
def test_bound_kernel_equals_torch_rule(seed, B, H, G, D, S, cap, dtype):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, G, D, generator=gen).to(dtype).cuda()
    # summaries in the model's dtype, as the pool keeps them
    a, b = (torch.randn(B, H, S, D, generator=gen).to(dtype).cuda() for _ in range(2))
    kmax, kmin = torch.maximum(a, b), torch.minimum(a, b)
    fill = torch.randint(0, 17, (B, H, S), generator=gen).to(torch.int32).cuda()
    fill[..., -1] = 0
    kmax[fill == 0], kmin[fill == 0] = float("-inf"), float("inf")  # as the pool's empty slots
    want = summary_bound(q, kmax, kmin, fill, 0.1, cap)
    got = quest_bound(q, kmax, kmin, fill, 0.1, cap)
    assert torch.equal(torch.isneginf(got), fill == 0)
    held = fill > 0
    assert torch.allclose(got[held], want[held], rtol=1e-5, atol=1e-4)


def _case(seed: int, S: int, k: int, held_share: float, integer_scores: bool):
    gen = torch.Generator().manual_seed(seed)
    B, H = 2, 3
    scores = (torch.randint(-3, 4, (B, H, S), generator=gen).float() if integer_scores
              else torch.randn(B, H, S, generator=gen))
    scores[..., 0] = float("inf")  # quest's current page
    if S > 1:
        scores[..., 1] = -0.0
    page_id = torch.stack([torch.randperm(4 * S, generator=gen)[:S] for _ in range(B * H)])
    page_id = page_id.view(B, H, S)
    held = torch.rand(B, H, S, generator=gen) < held_share
    page_id[~held] = -1
    return scores.cuda(), page_id.cuda(), held.cuda(), k


@pytest.mark.parametrize("seed,S,k,held_share,integer_scores", [
    (0, 9217, 128, 0.95, False), (1, 9217, 128, 0.95, True), (2, 130, 8, 0.5, True),
    (3, 17, 16, 0.3, False), (4, 1, 1, 1.0, True), (5, 4096, 4096, 0.9, True),
    (6, 2048, 300, 0.05, False), (7, 20000, 128, 0.9, True), (8, 20000, 1024, 0.9, False),
])
@pytest.mark.parametrize("radix", [False, True])
def test_select_kernel_chooses_as_torch_rule(seed, S, k, held_share, integer_scores, radix,
                                             monkeypatch):
    from raas_flex.policies import keep_all_triton  # Triton: CUDA runs only
    monkeypatch.setattr(keep_all_triton, "RADIX_SEARCH", radix)  # either k-th key search
    scores, page_id, held, k = _case(seed, S, k, held_share, integer_scores)
    k = min(k, S)
    if seed == 8:
        assert not keep_all_triton.select_fits(S, k)  # the torch rule runs: too many candidates
    want, want_index = top_slots(scores, page_id, held, k)
    chosen = torch.ones_like(want)
    index = torch.full_like(want_index, 5)
    select_top_slots_into(scores, page_id, held, k, torch.tensor(False, device="cuda"),
                          chosen, index)
    assert bool(chosen.all()) and bool((index == 5).all()), "not due: nothing written"
    select_top_slots_into(scores, page_id, held, k, torch.tensor(True, device="cuda"),
                          chosen, index)
    assert torch.equal(chosen, want)
    # the list holds every chosen slot once, first; its other entries hold nothing
    n = chosen.sum(-1, keepdim=True)
    first = torch.arange(k, device="cuda") < n
    assert bool(torch.where(first, chosen.gather(-1, index), True).all())
    assert not bool(torch.where(first, False, held.gather(-1, index)).any())
    times = torch.zeros(chosen.shape, dtype=torch.int64, device=chosen.device)
    times.scatter_add_(-1, index, torch.ones_like(index))
    assert torch.equal(times[chosen], torch.ones_like(times[chosen]))
