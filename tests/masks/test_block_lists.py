"""The decode step's compaction-free block lists (issue 15) against the constructions they
replace: top-k page selection == rank-based selection (ties included), and FlexAttention
over a listed mask (the whole pool, the held prefix, a top-k list; pages or blocks of 8
pages) == over the compacted mask, compiled, on random pool states."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex.cache import FREE
from raas_flex.masks import chosen_blocks, decode_block_mask, listed_block_mask, pool_blocks
from raas_flex.policies.scores import order_key, rank_descending, top_slots


def _state(seed: int, B: int, H: int, S: int, ties: bool):
    """Random scores / page ids / held flags: held pages have distinct page ids; with
    `ties`, scores come from a handful of values (and signed zeros)."""
    gen = torch.Generator().manual_seed(seed)
    if ties:
        values = torch.tensor([-0.0, 0.0, 1.5, -2.0, 7.0])
        scores = values[torch.randint(0, 5, (B, H, S), generator=gen)]
    else:
        scores = torch.randn(B, H, S, generator=gen) * 10
    held = torch.rand(B, H, S, generator=gen) < 0.7
    page = torch.stack([torch.randperm(4 * S, generator=gen)[:S] for _ in range(B * H)])
    page_id = torch.where(held, page.view(B, H, S), FREE)
    scores = torch.where(held, scores, float("-inf"))
    return scores, page_id, held


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), S=st.integers(1, 40), k=st.integers(1, 45),
       ties=st.booleans(), batch=st.integers(1, 2), heads=st.integers(1, 3))
def test_top_slots_equals_rank_selection(seed, S, k, ties, batch, heads) -> None:
    scores, page_id, held = _state(seed, batch, heads, S, ties)
    chosen, index = top_slots(scores, page_id, held, k)
    expected = held & (rank_descending(scores, page_id) < k)
    assert torch.equal(chosen, expected)
    listed = torch.zeros_like(held).scatter_(-1, index, True)
    assert torch.equal(listed & held, expected)  # the kernel list covers the selection
    assert index.shape[-1] == min(k, S)


@pytest.mark.parametrize("S,k", [(3000, 128), (9217, 128), (2049, 1)])
def test_top_slots_on_long_rows(S: int, k: int) -> None:
    """Rows as long as a keep-all pool's at 128k (9,217 slots)."""
    scores, page_id, held = _state(S + k, 2, 2, S, ties=True)
    chosen, index = top_slots(scores, page_id, held, k)
    assert torch.equal(chosen, held & (rank_descending(scores, page_id) < k))
    assert torch.equal(torch.zeros_like(held).scatter_(-1, index, True) & held, chosen)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), S=st.integers(2, 30), ties=st.booleans())
def test_order_key_is_rank_order(seed, S, ties) -> None:
    """Sorting by the int64 key, largest first, is rank_descending's order on held slots."""
    scores, page_id, held = _state(seed, 1, 1, S, ties)
    key = order_key(scores, page_id)
    rank = rank_descending(scores, page_id)
    h = held[0, 0]
    by_key = torch.argsort(key[0, 0][h], descending=True)
    by_rank = torch.argsort(rank[0, 0][h])
    assert torch.equal(by_key, by_rank)


_flex = torch.compile(torch.nn.attention.flex_attention.flex_attention, fullgraph=True,
                      dynamic=False)


def _visible(seed: int, B: int, H: int, S: int, P: int, prefix: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    fill = torch.randint(0, P + 1, (B, H, S), generator=gen)
    fill = torch.where(torch.rand(B, H, S, generator=gen) < 0.6, P, fill)
    if prefix:  # a keep-all pool: held slots are a prefix
        last = torch.randint(1, S + 1, (B, H, 1), generator=gen)
        fill = torch.where(torch.arange(S) < last, fill.clamp(min=1), 0)
    fill[..., 0] = fill[..., 0].clamp(min=1)  # every row attends something
    return fill.to(torch.int32).contiguous()


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), S=st.integers(1, 300), batch=st.integers(1, 2),
       heads=st.integers(1, 3), density=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_chosen_blocks_lists_exactly_the_chosen_slots(seed, S, batch, heads,
                                                      density) -> None:
    """The first count entries are the chosen slots in ascending order (what the sort-based
    compaction listed), the rest stay inside the pool."""
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.rand(batch, heads, S, generator=gen) < density
    count, index = chosen_blocks(chosen)
    assert count.dtype == index.dtype == torch.int32
    assert index.shape == (batch, heads, 1, S)
    for b in range(batch):
        for h in range(heads):
            expected = torch.nonzero(chosen[b, h]).flatten()
            n = int(count[b, h, 0])
            assert n == len(expected)
            assert torch.equal(index[b, h, 0, :n].long(), expected)
            assert bool((index[b, h, 0] >= 0).all() and (index[b, h, 0] < S).all())


def test_compiled_chosen_blocks_match_eager_across_scan_rows() -> None:
    """Compiled (one graph), the two-level prefix sum over 300 slots (3 scan rows) lists
    the same slots as eager, for a selection computed inside the graph."""
    compiled = torch.compile(lambda score: chosen_blocks(score > 0.3), fullgraph=True,
                             dynamic=False)
    for seed in range(3):
        score = torch.rand(2, 3, 300, generator=torch.Generator().manual_seed(seed))
        count, index = compiled(score)
        want_count, want_index = chosen_blocks(score > 0.3)
        assert torch.equal(count, want_count)
        for b in range(2):
            for h in range(3):
                n = int(count[b, h, 0])
                assert torch.equal(index[b, h, 0, :n], want_index[b, h, 0, :n])


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1))
def test_listed_masks_equal_compacted_mask(seed) -> None:
    """Compiled flex over the whole-pool list, the held-prefix list and a top-k list gives
    the compacted mask's output (fixed shapes, so each mask compiles once)."""
    B, H, G, S, P, D = 2, 2, 4, 12, 16, 32
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, G, D, generator=gen)
    k = torch.randn(B, H, S * P, D, generator=gen)
    v = torch.randn(B, H, S * P, D, generator=gen)
    for case in ("pool", "prefix", "pool_wide", "prefix_wide", "topk", "chosen"):
        visible = _visible(seed, B, H, S, P, prefix=case.startswith("prefix"))
        # _wide: kernel blocks of 8 pages, which do not divide the 12 slots (the last block
        # reaches past the pool: masked, never indexing past `visible`)
        block_pages = 8 if case.endswith("_wide") else 1
        if case.startswith("pool"):
            blocks = pool_blocks(visible, None, block_pages)
        elif case.startswith("prefix"):
            slots = torch.arange(1, S + 1)
            blocks = pool_blocks(visible, torch.where(visible > 0, slots, 0).amax(-1),
                                 block_pages)
        elif case == "chosen":  # a random subset of any size, listed by chosen_blocks
            chosen = torch.rand(B, H, S, generator=gen) < 0.5
            chosen[..., 0] = True
            visible = torch.where(chosen, visible, 0).to(torch.int32).contiguous()
            blocks = chosen_blocks(visible > 0)
        else:  # attend only the top 5 slots by a random score, listed by top_slots
            scores = torch.randn(B, H, S, generator=gen)
            chosen, index = top_slots(scores, torch.arange(S).expand(B, H, S),
                                      visible > 0, 5)
            visible = torch.where(chosen, visible, 0).to(torch.int32).contiguous()
            index = torch.nn.functional.pad(index.to(torch.int32), (0, S - 5))
            blocks = (torch.full((B, H, 1), 5, dtype=torch.int32), index[:, :, None])
        expected = _flex(q, k, v, block_mask=decode_block_mask(visible, P, G))
        out = _flex(q, k, v, block_mask=listed_block_mask(visible, P, G, *blocks))
        seen = (torch.arange(P) < visible[..., None]).flatten(2)[:, :, None]
        logits = (q.double() @ k.double().transpose(-1, -2)) * D ** -0.5
        ref = torch.softmax(logits.masked_fill(~seen, float("-inf")), -1) @ v.double()
        assert torch.allclose(out.double(), ref, atol=1e-5), case
        assert torch.allclose(out, expected, atol=1e-5), case
