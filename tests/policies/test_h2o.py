"""h2o: evicts the page with the lowest accumulated attention mass outside the recent window."""

from __future__ import annotations

from collections import defaultdict

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.h2o import H2OOptions
from tests.policy_harness import (
    SDPA, examples, make_sequence, page_sets, run_policy, step_page_mass,
)

P = 16


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), length=st.integers(1, 40), extra_pages=st.integers(2, 3),
       ratio=st.sampled_from([0.25, 0.5, 0.75]), keep_prefill=st.booleans(),
       key_scale=st.sampled_from([1.0, 3.0]))
def test_h2o_evicts_lowest_accumulated_mass_outside_window(seed, length, extra_pages, ratio,
                                                           keep_prefill, key_scale) -> None:
    slots = -(-length // P) + extra_pages
    recent = max(1, round(ratio * slots))
    steps = slots * P + P // 2 - length  # long enough for a few evictions
    seq = make_sequence(seed, batch=2, prompt_lengths=length, steps=steps,
                        key_scale=key_scale)
    config = RaaSConfig(budget=slots * P, page_size=P, attention_kernel=SDPA, policy="h2o",
                        options=H2OOptions(recent_ratio=ratio), keep_prefill=keep_prefill)
    trace = run_policy(config, seq)
    B, H = seq.k_prompt.shape[:2]
    accumulated = [[defaultdict(float) for _ in range(H)] for _ in range(B)]  # oracle
    evictions = 0
    previous = None
    for t, (attended, held) in enumerate(zip(trace.attended, trace.held)):
        assert torch.equal(attended, held), "h2o attends every held token"
        now = page_sets(held, P)
        for b in range(B):
            prompt = set(range(-(-int(seq.lengths[b]) // P))) if keep_prefill else set()
            for h in range(H):
                if previous is not None:
                    gone = previous[b][h] - now[b][h]
                    assert len(gone) <= 1
                    if gone:
                        evictions += 1
                        (victim,) = gone
                        acc = accumulated[b][h]
                        before = previous[b][h]
                        newest = max(before)
                        candidates = {p for p in before - prompt if p > -1
                                      and p <= newest - recent}
                        assert victim not in prompt, "evicted a pinned prompt page"
                        if candidates:
                            assert victim in candidates, "evicted inside the recent window"
                            lowest = min(acc[p] for p in candidates)
                            assert acc[victim] <= lowest + 1e-4 * max(1.0, lowest)
                        else:
                            assert victim == min(before - prompt)
                        del acc[victim]
        mass = step_page_mass(seq, t, attended, P)  # [B, H, pages]
        for b in range(B):
            for h in range(H):
                for p in now[b][h]:
                    accumulated[b][h][p] += float(mass[b, h, p])
        previous = now
    assert evictions > 0, "the run never evicted: make it longer"
