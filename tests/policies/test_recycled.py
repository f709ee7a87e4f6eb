"""recycled: full attention exactly every S steps, the last full step's top pages between."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.recycled import RecycledOptions
from tests.policy_harness import (
    SDPA, causal_positions, current_page, examples, make_sequence, page_sets, run_policy,
    step_page_mass,
)

P = 16


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), period=st.integers(2, 5), top=st.integers(1, 2),
       length=st.integers(49, 70), first_step=st.integers(0, 7))
def test_recycled_full_step_exactly_every_period(seed, period, top, length,
                                                 first_step) -> None:
    # >= 4 prompt pages and top <= 2, so a recycled step always skips a page.
    seq = make_sequence(seed, batch=2, prompt_lengths=[length, length + 3], steps=16,
                        key_scale=3.0)
    config = RaaSConfig(budget=P, page_size=P, attention_kernel=SDPA, policy="recycled",
                        options=RecycledOptions(period=period, pages=top))
    trace = run_policy(config, seq, first_step=first_step)  # the caller's numbering is moot
    assert int(trace.cache.policy_state["recycled_step"]) == seq.steps
    for t, attended in enumerate(trace.attended):
        causal = causal_positions(seq, t)
        full = t % period == 0
        assert torch.equal(trace.held[t], causal)
        if full:
            assert torch.equal(attended, causal), f"step {t} should be a full step"
            continue
        assert (attended.sum(-1) < causal.sum(-1)).all(), f"step {t} should be recycled"
        last_full = t - t % period
        mass = step_page_mass(seq, last_full, trace.attended[last_full], P)
        old_pages = current_page(seq, last_full, P) + 1  # pages that existed then
        current = current_page(seq, t, P)
        for b, per_head in enumerate(page_sets(attended, P)):
            old = list(range(int(old_pages[b])))
            new = set(range(int(old_pages[b]), int(current[b]) + 1))
            for h, chosen in enumerate(per_head):
                ranked = sorted(old, key=lambda p: (-float(mass[b, h, p]), p))
                expected = set(ranked[:top]) | new | {int(current[b])}
                gap = (float(mass[b, h, ranked[top - 1]]) - float(mass[b, h, ranked[top]])
                       if len(ranked) > top else 1.0)
                if gap > 1e-5:  # skip float32-vs-float64 near ties
                    assert chosen == expected, (t, b, h, chosen, expected)
