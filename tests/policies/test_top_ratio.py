"""RaaS "top_ratio" importance marks exactly ceil(live · top_ratio) pages, counted in
integers: top_ratio is read as the decimal it is written as (0.6 = 3/5), so 25 live pages
at 0.6 mark 15 pages, never the 16 a float32 product (15.000001) rounds up to."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.cache.pool import allocate_layer_cache
from raas_flex.policies.raas import RaaSPolicy
from raas_flex.policies.scores import top_fraction

P = 16


def marked_counts(ratio: float, lives: list[int], slots: int, seed: int = 0) -> list[int]:
    """Pages RaaS marks important in rows (one kv head each) holding `lives` live pages."""
    config = RaaSConfig(budget=slots * P, page_size=P, top_ratio=ratio)
    cache = allocate_layer_cache(1, len(lives), 1, slots, P)
    live = torch.arange(slots)[None, None, :] < torch.tensor(lives)[None, :, None]
    cache.fill.copy_(live.int())
    cache.page_id.copy_(torch.where(live, torch.arange(slots), -1))
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(live.shape, generator=gen).masked_fill(~live, -math.inf)
    marked = RaaSPolicy(config).important(cache, scores)
    assert not (marked & ~live).any(), "an empty slot was marked"
    return marked.sum(-1)[0].tolist()


def decimal_ceil(live: int, ratio: Decimal | str) -> int:
    return math.ceil(live * Fraction(ratio))


@pytest.mark.parametrize("ratio", ["0.15", "0.3", "0.6"])
def test_counts_match_decimal_arithmetic_up_to_2048_pages(ratio):
    counts = marked_counts(float(ratio), list(range(2049)), 2048)
    wrong = [n for n, c in enumerate(counts) if c != decimal_ceil(n, ratio)]
    assert counts[25] == decimal_ceil(25, ratio)
    assert wrong == [], f"{len(wrong)} wrong counts, first at {wrong[:5]} live pages"


@st.composite
def decimal_ratios(draw) -> Decimal:
    """Ratios in (0, 1] with 1 to 12 decimal places; short ones (0.15, 0.6) put
    live · ratio on an integer often, where a float product rounds the wrong way."""
    places = draw(st.one_of(st.just(1), st.just(2), st.integers(1, 12)))
    return Decimal(draw(st.integers(1, 10**places))).scaleb(-places)


@given(data=st.data(), ratio=decimal_ratios(), slots=st.integers(1, 2048))
def test_counts_are_the_exact_decimal_ceiling(data, ratio, slots):
    """Half the rows hold a multiple of the ratio's denominator: there live · ratio is an
    integer, the only place a rounded product can cross the ceiling."""
    step = Fraction(ratio).denominator
    rows = st.one_of(st.integers(0, slots), st.integers(0, slots // step).map(lambda m: m * step))
    lives = data.draw(st.lists(rows, min_size=8, max_size=64))
    counts = marked_counts(float(ratio), lives, slots, data.draw(st.integers(0, 2**16)))
    assert counts == [decimal_ceil(n, ratio) for n in lives]


def test_long_ratios_read_as_their_nearest_simple_fraction():
    """1/3 prints as 0.3333333333333333; it is read as 1/3 (a denominator <= 10**12)."""
    assert RaaSConfig(top_ratio=1 / 3).top_ratio_fraction == Fraction(1, 3)
    counts = marked_counts(1 / 3, list(range(41)), 40)
    assert counts == [math.ceil(Fraction(n, 3)) for n in range(41)]


def test_count_compiles_without_graph_breaks():
    cache = allocate_layer_cache(1, 2, 1, 8, P)
    cache.fill[..., :5] = 1
    cache.page_id.copy_(torch.arange(8).expand(1, 2, 8))
    scores = torch.rand(1, 2, 8).masked_fill(cache.fill == 0, -math.inf)  # as page_bound
    ratio = RaaSPolicy(RaaSConfig(top_ratio=0.6)).top_ratio
    assert ratio == (3, 5)
    compiled = torch.compile(top_fraction, fullgraph=True, backend="eager")
    marked = compiled(scores, cache, *ratio)
    assert torch.equal(marked, top_fraction(scores, cache, *ratio))
    assert marked.sum(-1).tolist() == [[3, 3]]  # ceil(5 · 0.6)
