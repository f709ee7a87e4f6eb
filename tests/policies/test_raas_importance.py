"""RaaS importance rules other than the default: the alpha threshold and exact page mass.

Each step is checked against an independent float64 computation from the pool's own
contents; pages within a hair of the threshold are skipped (fp32 vs fp64 rounding).
"""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import raas_flex as rf
from tests.layer_harness import Drive, masked_dense
from tests.strategies import PAGE_SIZES, prompt_lengths, shapes

MARGIN = 1e-3


def _page_scores(step, source: str) -> torch.Tensor:
    """float64 [B, H, S] scores: Quest bound per page, or exact attention mass."""
    cache = step.cache
    B, H, S, D = cache.kmin.shape
    P = cache.page_size
    q = step.q.double().reshape(B, H, -1, D)  # [B, H, G, D]
    if source == "bound":
        lo, hi = cache.kmin.double(), cache.kmax.double()  # [B, H, S, D]
        per_query = torch.maximum(q[:, :, :, None] * lo[:, :, None], q[:, :, :, None] * hi[:, :, None])
        return per_query.sum(-1).amax(2) / math.sqrt(D)
    keys = cache.k.double().view(B, H, S, P, D)
    logits = torch.einsum("bhgd,bhspd->bhgsp", q, keys) / math.sqrt(D)
    filled = torch.arange(P)[None, None, None, :] < cache.fill[..., None]  # [B, H, S, P]
    logits = logits.masked_fill(~filled[:, :, None], float("-inf")).reshape(B, H, -1, S * P)
    mass = torch.softmax(logits, -1).view(B, H, -1, S, P).sum(-1).amax(2)
    return torch.log(mass)


@given(data=st.data(), shape=shapes(), page_size=st.sampled_from(PAGE_SIZES),
       importance=st.sampled_from(("alpha", "top_ratio")),
       source=st.sampled_from(("bound", "exact")), alpha=st.sampled_from((1e-4, 1e-2, 0.2)),
       steps=st.integers(1, 60))
def test_importance_rules_refresh_exactly_the_important_pages(
        data, shape, page_size, importance, source, alpha, steps):
    prompts = data.draw(prompt_lengths(shape.batch, page_size, max_pages=2))
    slots = -(-max(prompts) // page_size) + data.draw(st.integers(2, 4))
    config = rf.RaaSConfig(budget=slots * page_size, page_size=page_size, importance=importance,
                           score_source=source, alpha=alpha, attention_kernel="sdpa")
    drive = Drive(config, rf.make_policy(config), shape, prompts, steps,
                  seed=data.draw(st.integers(0, 2**16)))
    for step in drive.run():
        cache = step.cache
        assert (step.out.double() - masked_dense(step, step.attended)).abs().max() <= 1e-5
        scores = _page_scores(step, source)
        live = cache.fill > 0
        if importance == "alpha":
            weights = scores + (torch.log(cache.fill.clamp(min=1).double()) if source == "bound" else 0)
            share = torch.softmax(weights.masked_fill(~live, float("-inf")), -1)
            sure_in, sure_out = share >= alpha * (1 + MARGIN), share < alpha * (1 - MARGIN)
        else:
            num, den = config.top_ratio_fraction.as_integer_ratio()
            count = (live.sum(-1, keepdim=True) * num + den - 1) // den  # exact, as documented
            cutoff = scores.masked_fill(~live, float("-inf")).sort(-1, descending=True).values
            kth = cutoff.gather(-1, count - 1)  # score of the last page that makes the cut
            nxt = cutoff.gather(-1, count.clamp(max=cache.num_slots - 1))
            gap = (kth - nxt).abs() > MARGIN
            sure_in = gap & (scores >= kth)
            sure_out = gap & (scores < kth)
        refreshed = cache.timestamp == step.index
        opened_now = cache.page_id == (step.lengths[:, None, None] - 1) // page_size
        assert refreshed[sure_in & live].all(), f"step {step.index}: important page not refreshed"
        stale = sure_out & live & ~(opened_now & ((step.lengths[:, None, None] - 1) % page_size == 0))
        assert not refreshed[stale].any(), f"step {step.index}: unimportant page refreshed"
