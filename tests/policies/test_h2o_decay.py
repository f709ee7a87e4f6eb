"""h2o_decay: its own invariants. (Equal to dense with room and to masked dense over its
attended set at any budget: tests/policies/test_common.py, which covers every peer; bad
options: tests/policies/test_options.py.)

- gamma = 1 is h2o, step for step (held sets and scores); gamma < 1 decides differently;
- every eviction is the lowest float64 decayed score outside the recent window;
- the compiled step is one graph (no breaks, no recompiles) and agrees with eager.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from tests.policies.h2o_reference import P, assert_evicts_lowest_score, h2o_cases, scored_run
from tests.policy_harness import (
    SDPA, causal_positions, compiled_and_eager, examples, make_sequence, run_policy,
)


def decay_config(budget: int, gamma: float, ratio: float = 0.5, **core) -> RaaSConfig:
    return RaaSConfig.from_fields(budget=budget, page_size=P, policy="h2o_decay",
                                  h2o_decay_gamma=gamma, h2o_decay_recent_ratio=ratio,
                                  **{"attention_kernel": SDPA, **core})


@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=h2o_cases())
def test_no_decay_is_h2o_step_for_step(case) -> None:
    seq, budget, ratio, keep_prefill = case
    h2o = RaaSConfig.from_fields(budget=budget, page_size=P, policy="h2o", h2o_recent_ratio=ratio,
                                 keep_prefill=keep_prefill, attention_kernel=SDPA)
    held, scores = scored_run(h2o, seq)
    same_held, same_scores = scored_run(decay_config(budget, 1.0, ratio,
                                                     keep_prefill=keep_prefill), seq)
    for t in range(seq.steps):
        assert torch.equal(held[t], same_held[t]), f"step {t}: gamma = 1 is not h2o"
        assert torch.equal(scores[t], same_scores[t]), f"step {t}: scores differ from h2o's"


def test_decay_changes_the_decisions() -> None:
    """The rule is not h2o under another name: on a run long enough for dead pages to
    matter, a decayed accumulator evicts differently."""
    seq = make_sequence(3, batch=2, prompt_lengths=[20, 9], steps=120, key_scale=3.0)
    h2o = RaaSConfig(budget=6 * P, page_size=P, attention_kernel=SDPA, policy="h2o")
    plain, _ = scored_run(h2o, seq)
    decayed, _ = scored_run(decay_config(6 * P, 0.9), seq)
    assert any(not torch.equal(a, b) for a, b in zip(plain, decayed)), "rules never differed"


@settings(max_examples=examples(20), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=h2o_cases(), gamma=st.sampled_from([0.5, 0.9, 0.98]))
def test_evicts_lowest_decayed_mass_outside_window(case, gamma) -> None:
    seq, budget, ratio, keep_prefill = case
    config = decay_config(budget, gamma, ratio, keep_prefill=keep_prefill)
    recent = max(1, round(ratio * (budget // P)))
    evictions = assert_evicts_lowest_score(seq, run_policy(config, seq), recent, keep_prefill,
                                           gamma)
    assert evictions > 0, "the run never evicted: make it longer"


def test_compiled_decay_step_is_one_graph_and_matches_eager() -> None:
    seq = make_sequence(5, batch=2, prompt_lengths=[30, 12], steps=60, key_scale=3.0)
    config = decay_config(80, 0.9, 0.4)  # 5 pages, 2 recent: evicts from step ~18 on
    fast, slow = compiled_and_eager(config, seq)
    for a, b in zip(fast.held, slow.held):
        assert torch.equal(a, b)
    assert any((h != causal_positions(seq, t)).any()
               for t, h in enumerate(fast.held)), "no eviction"
