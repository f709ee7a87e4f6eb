"""bench.accuracy.page_agreement: the token rules keep exactly their budget, the page rules
whole pages of it, and a set holding every token keeps all the attention mass."""

from __future__ import annotations

import torch

from bench.accuracy import page_agreement as pa


def synthetic(seed: int, tokens: int = 200, group: int = 2, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(group, tokens, dim, generator=g, dtype=torch.float64)
    k = torch.randn(tokens, dim, generator=g, dtype=torch.float64) * 2
    return q, k


def test_token_rules_keep_their_budget_and_page_rules_whole_pages() -> None:
    q, k = synthetic(0)
    n, budget = 159, 64  # 160 tokens, 10 pages, keep 4 pages
    assert int(pa.rkv_token_keep(q, k, n, budget).sum()) == budget
    assert int(pa.lim_token_select(q, k[None].expand(2, -1, -1), n, budget).sum()) == budget
    forced, chosen = pa.lim_page_select(q, k[None].expand(2, -1, -1), n, budget)
    assert len(chosen) == budget // pa.P and forced <= chosen and n // pa.P in forced
    scores = pa.rkv_page_scores(q, k, n)
    assert sorted(scores) == list(range(10))


def test_mass_of_everything_is_one_and_recall_is_exact() -> None:
    q, k = synthetic(1)
    n = 127
    everything = torch.ones(n + 1, dtype=torch.bool)
    half = pa.tokens_of(set(range(4)), n)
    row = pa.measure(q, k, n, half, everything, half, 2)
    assert abs(row["mass_page"] - 1.0) < 1e-12
    assert row["token_recall"] == 1.0 and row["mass_token"] == row["mass_random"] < 1.0
