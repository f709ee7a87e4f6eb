"""lessismore: keeps every token; every step attends one page set shared by all kv heads:
the recent share (newest pages, the sink page) always, plus the first pages of the
per-query-head rankings interleaved rank by rank (float64 page bounds here)."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.lessismore import LessIsMoreOptions
from tests.policy_harness import (
    SDPA, causal_positions, examples, make_sequence, page_sets, run_policy,
)

P = 16


def head_bounds(seq, t: int) -> torch.Tensor:
    """float64 Quest bound of every written logical page for every query head at decode
    step t: [B, Hq, pages], -inf where nothing is written."""
    k = seq.history("k").double()
    B, H, N, D = k.shape
    q = seq.q_decode[:, :, t].double().view(B, H, -1, D)
    seen = causal_positions(seq, t)[..., None]
    pages = -(-N // P)
    pad = (0, 0, 0, pages * P - N)
    kmax = torch.nn.functional.pad(k.masked_fill(~seen, -math.inf), pad,
                                   value=-math.inf).view(B, H, pages, P, D).amax(3)
    kmin = torch.nn.functional.pad(k.masked_fill(~seen, math.inf), pad,
                                   value=math.inf).view(B, H, pages, P, D).amin(3)
    live = torch.isfinite(kmax).all(-1)[:, :, None]
    kmax, kmin = kmax.nan_to_num(neginf=0.0), kmin.nan_to_num(posinf=0.0)
    bound = torch.maximum(q[:, :, :, None] * kmax[:, :, None], q[:, :, :, None]
                          * kmin[:, :, None]).sum(-1) / math.sqrt(D)  # [B, H, G, pages]
    return bound.masked_fill(~live, -math.inf).view(B, -1, pages)


def interleaved_top(bounds: torch.Tensor, candidates: set[int], k: int) -> set[int]:
    """The first k distinct pages of the per-head rankings read rank by rank, [heads,
    pages] float64 bounds; ties go to the older page."""
    order = []
    rankings = [sorted(candidates, key=lambda p: (-float(row[p]), p)) for row in bounds]
    for rank in range(len(candidates)):
        for ranking in rankings:
            if ranking[rank] not in order:
                order.append(ranking[rank])
    return set(order[:k])


@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), length=st.integers(1, 90), budget_pages=st.integers(1, 6),
       top_ratio=st.sampled_from([0.5, 0.75]), sinks=st.integers(0, 1),
       key_scale=st.sampled_from([1.0, 2.0]))
def test_lessismore_shares_one_set_with_its_recent_share(seed, length, budget_pages, top_ratio,
                                                         sinks, key_scale) -> None:
    seq = make_sequence(seed, batch=2, prompt_lengths=[length, max(1, length - 20)], steps=16,
                        key_scale=key_scale)
    options = LessIsMoreOptions(top_ratio=top_ratio, sinks=sinks)
    config = RaaSConfig(budget=budget_pages * P, page_size=P, attention_kernel=SDPA,
                        policy="lessismore", options=options)
    top, recent, sink_pages = options.split(config)
    assert top + recent + sink_pages == budget_pages
    trace = run_policy(config, seq)
    for t, (attended, held) in enumerate(zip(trace.attended, trace.held)):
        assert torch.equal(held, causal_positions(seq, t)), "lessismore evicted a token"
        bounds = head_bounds(seq, t)
        for b, per_head in enumerate(page_sets(attended, P)):
            assert all(chosen == per_head[0] for chosen in per_head), "heads differ"
            chosen = per_head[0]
            newest = (int(seq.lengths[b]) + t) // P
            recent_pages = {p for p in range(newest - recent + 1, newest + 1) if p >= 0}
            sink_set = set(range(min(sink_pages, newest + 1)))
            assert recent_pages | sink_set <= chosen, "the recent share was not attended"
            assert len(chosen) <= budget_pages
            candidates = set(range(newest + 1)) - recent_pages - sink_set
            expected = interleaved_top(bounds[b], candidates, top)
            assert chosen - recent_pages - sink_set == expected
