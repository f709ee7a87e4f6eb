"""The keep-all selection ops (policies/keep_all_ops.py) are well-formed custom ops: their
fake (meta) bodies give the real outputs' shapes and dtypes, and they trace into a
compiled graph (torch.library.opcheck), and on the CPU they are the torch rules exactly.
Their CUDA kernels are checked in tests/gpu/test_keep_all_kernels.py."""

from __future__ import annotations

import torch

from raas_flex.policies.keep_all_ops import (
    quest_blocks, quest_bound, quest_select, select_top_slots,
)
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
    torch.library.opcheck(select_top_slots, (scores, page_id, fill > 0, 4))
    current = torch.zeros(fill.shape[:2], dtype=torch.int64)
    torch.library.opcheck(quest_select, (q, kmax, kmin, fill, page_id, current,
                                         torch.zeros_like(fill), 0.25, 30.0, 4))


def test_cpu_ops_are_the_torch_rules():
    q, kmax, kmin, fill, page_id = _inputs(1)
    scores = quest_bound(q, kmax, kmin, fill, 0.25, 30.0)
    assert torch.equal(scores, summary_bound(q, kmax, kmin, fill, 0.25, 30.0))
    assert bool(torch.isneginf(scores[fill == 0]).all())
    for k in (1, 4, 11, 20):  # k past S is capped at S
        chosen, index = select_top_slots(scores, page_id, fill > 0, k)
        want, want_index = top_slots(scores, page_id, fill > 0, k)
        assert torch.equal(chosen, want)
        assert index.shape == want_index.shape == (2, 2, min(k, 11))


def test_quest_select_is_bound_then_blocks():
    """quest_select (one op, fused on CUDA) = quest_bound then quest_blocks, softcap too."""
    q, kmax, kmin, fill, page_id = _inputs(2)
    current = torch.argmax(fill, dim=-1)  # a held slot
    for cap in (None, 30.0):
        want_visible, got_visible = torch.zeros_like(fill), torch.zeros_like(fill)
        want = quest_blocks(quest_bound(q, kmax, kmin, fill, 0.25, cap), page_id, fill,
                            current, want_visible, 4)
        got = quest_select(q, kmax, kmin, fill, page_id, current, got_visible, 0.25, cap, 4)
        assert torch.equal(got_visible, want_visible) and bool((got_visible > 0).any())
        assert all(torch.equal(a, b) for a, b in zip(got, want))
