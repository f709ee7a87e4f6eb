"""raas_guard: its own invariants. (Equal to dense with room and to masked dense over its
attended set at any budget: tests/policies/test_common.py, which covers every peer.)

- the newest W = floor(recent_ratio x budget pages) pages are always held, whole (all the
  unpinned room, when W exceeds it);
- recent_ratio = 0 is raas, step for step; a guard over every unpinned page is streaming;
- the compiled step is one graph (no breaks, no recompiles) and agrees with eager.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from tests.policy_harness import (
    SDPA, causal_positions, compiled_and_eager, examples, make_sequence,
    max_error_vs_masked_dense, prompts_and_budget, run_policy,
)

P = 16


def guard_config(budget: int, ratio: float, **core) -> RaaSConfig:
    return RaaSConfig.from_fields(budget=budget, page_size=P, policy="raas_guard",
                                  raas_guard_recent_ratio=ratio, **{"attention_kernel": SDPA, **core})


@st.composite
def guarded_runs(draw):
    seq, budget = prompts_and_budget(draw, st, P, extra_pages=(2, 6), steps=(20, 90))
    return seq, budget, draw(st.sampled_from([0.25, 0.5, 0.75])), draw(st.booleans())


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(run=guarded_runs())
def test_the_newest_guard_pages_are_always_held(run) -> None:
    seq, budget, ratio, keep_prefill = run
    config = guard_config(budget, ratio, keep_prefill=keep_prefill)
    trace = run_policy(config, seq)
    assert max_error_vs_masked_dense(seq, trace) <= 1e-5
    for t, held in enumerate(trace.held):
        causal = causal_positions(seq, t)  # [B, H, positions]
        for b in range(seq.lengths.numel()):
            pinned = -(-int(seq.lengths[b]) // P) if keep_prefill else 0
            guard = min(int(ratio * (budget // P)), budget // P - pinned)  # W, or all room
            newest = int(seq.lengths[b] + t) // P  # the page of the token just appended
            lo = max(0, newest - guard + 1) * P
            assert torch.equal(held[b, :, lo:], causal[b, :, lo:]), (
                f"step {t}, row {b}: a page among the newest {guard} was evicted")
        assert int(held.sum(-1).max()) <= budget


def test_no_guard_is_raas_and_a_full_guard_is_streaming() -> None:
    seq = make_sequence(3, batch=2, prompt_lengths=[20, 9], steps=80, key_scale=3.0)
    budget = 6 * P
    plain = run_policy(RaaSConfig(budget=budget, page_size=P, attention_kernel=SDPA), seq)
    unguarded = run_policy(guard_config(budget, 0.0), seq)
    window = run_policy(RaaSConfig(budget=budget, page_size=P, attention_kernel=SDPA,
                                   policy="streaming"), seq)
    full = run_policy(guard_config(budget, 0.99), seq)
    for t in range(seq.steps):
        assert torch.equal(plain.held[t], unguarded.held[t]), f"step {t}: ratio 0 is not raas"
        assert torch.equal(window.held[t], full.held[t]), f"step {t}: a full guard is not streaming"
    assert any(not torch.equal(a, b) for a, b in zip(plain.held, full.held)), "rules never differed"


def test_compiled_guard_step_is_one_graph_and_matches_eager() -> None:
    seq = make_sequence(5, batch=2, prompt_lengths=[30, 12], steps=60, key_scale=3.0)
    config = guard_config(80, 0.4)  # 5 pages: 2 guarded; evicts from step ~18 on
    fast, slow = compiled_and_eager(config, seq)
    for a, b in zip(fast.held, slow.held):
        assert torch.equal(a, b)
    assert any((h != causal_positions(seq, t)).any() for t, h in enumerate(fast.held)), "no eviction"
