"""The keep-all selection ops (policies/keep_all_ops.py) are well-formed custom ops: their
fake (meta) bodies give the real outputs' shapes and dtypes, and they trace into a
compiled graph (torch.library.opcheck), and on the CPU they are the torch rules exactly.
Their CUDA kernels are checked in tests/gpu/test_keep_all_kernels.py."""

from __future__ import annotations

import torch

from raas_flex.policies.keep_all_ops import quest_bound, select_top_slots_into
from raas_flex.policies.scores import summary_bound, top_slots


def _inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    B, H, G, D, S = 2, 2, 3, 16, 11
    q = torch.randn(B, H, G, D, generator=gen)
    a, b = torch.randn(B, H, S, D, generator=gen), torch.randn(B, H, S, D, generator=gen)
    fill = torch.randint(0, 5, (B, H, S), generator=gen).to(torch.int32)
    kmax, kmin = torch.maximum(a, b), torch.minimum(a, b)
    kmax[fill == 0], kmin[fill == 0] = float("-inf"), float("inf")
    page_id = torch.stack([torch.randperm(S, generator=gen) for _ in range(B * H)]).view(B, H, S)
    return q, kmax, kmin, fill, page_id


def test_ops_pass_opcheck():
    q, kmax, kmin, fill, page_id = _inputs()
    torch.library.opcheck(quest_bound, (q, kmax, kmin, fill, 0.25, 30.0))
    scores = quest_bound(q, kmax, kmin, fill, 0.25, None)
    chosen, index = torch.zeros_like(fill, dtype=torch.bool), page_id.new_zeros((2, 2, 4))
    for due in (True, False):
        torch.library.opcheck(select_top_slots_into,
                              (scores, page_id, fill > 0, 4, torch.tensor(due), chosen, index))


def test_cpu_ops_are_the_torch_rules():
    q, kmax, kmin, fill, page_id = _inputs(1)
    scores = quest_bound(q, kmax, kmin, fill, 0.25, 30.0)
    assert torch.equal(scores, summary_bound(q, kmax, kmin, fill, 0.25, 30.0))
    assert bool(torch.isneginf(scores[fill == 0]).all())
    for k in (1, 4, 11):
        want, want_index = top_slots(scores, page_id, fill > 0, k)
        chosen, index = torch.ones_like(want), torch.full_like(want_index, 7)
        select_top_slots_into(scores, page_id, fill > 0, k, torch.tensor(False), chosen, index)
        assert bool(chosen.all()) and bool((index == 7).all()), "not due: left as it was"
        select_top_slots_into(scores, page_id, fill > 0, k, torch.tensor(True), chosen, index)
        assert torch.equal(chosen, want) and torch.equal(index, want_index)
        held = (fill > 0).sum(-1, keepdim=True)  # the chosen slots first, in rank order
        first = torch.arange(k) < held
        assert bool(torch.where(first, want.gather(-1, index), True).all())
