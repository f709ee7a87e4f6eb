"""streaming: the pool holds exactly the sink (or prompt) pages and the most recent pages."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.streaming import StreamingOptions
from tests.policy_harness import (
    SDPA, current_page, examples, make_sequence, page_sets, run_policy,
)

P = 16


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), lengths=st.lists(st.integers(1, 40), min_size=1,
                                                      max_size=2),
       extra_pages=st.integers(2, 3), sinks=st.integers(0, 2), keep_prefill=st.booleans())
def test_streaming_holds_sinks_and_recent_window(seed, lengths, extra_pages, sinks,
                                                 keep_prefill) -> None:
    prompt_pages = -(-max(lengths) // P)
    slots = prompt_pages + extra_pages
    sinks = min(sinks, slots - 2)
    steps = slots * P + P - min(lengths)  # at least one eviction per row
    seq = make_sequence(seed, batch=len(lengths), prompt_lengths=lengths, steps=steps)
    config = RaaSConfig(budget=slots * P, page_size=P, attention_kernel=SDPA, policy="streaming",
                        options=StreamingOptions(sinks=sinks), keep_prefill=keep_prefill)
    trace = run_policy(config, seq)
    for t, held in enumerate(trace.held):
        current = current_page(seq, t, P)
        for b, per_head in enumerate(page_sets(held, P)):
            own_prompt = -(-int(seq.lengths[b]) // P)
            pinned = set(range(max(sinks, own_prompt if keep_prefill else 0)))
            present = set(range(int(current[b]) + 1))
            pinned &= present
            recent = sorted(present - pinned)[::-1][:slots - len(pinned)]
            for pages in per_head:
                assert pages == pinned | set(recent), (t, b, pages, pinned, recent)
    # every held token is attended
    assert all(torch.equal(a, h) for a, h in zip(trace.attended, trace.held))


def test_streaming_rejects_sinks_that_leave_no_window() -> None:
    with pytest.raises(ValueError, match="streaming_sinks"):
        RaaSConfig(budget=64, page_size=P, policy="streaming", options=StreamingOptions(sinks=3))
