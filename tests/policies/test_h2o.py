"""h2o: evicts the page with the lowest accumulated attention mass outside the recent window."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.h2o import H2OOptions
from tests.policies.h2o_reference import P, assert_evicts_lowest_score, h2o_cases
from tests.policy_harness import SDPA, examples, run_policy


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=h2o_cases())
def test_h2o_evicts_lowest_accumulated_mass_outside_window(case) -> None:
    seq, budget, ratio, keep_prefill = case
    config = RaaSConfig(budget=budget, page_size=P, attention_kernel=SDPA, policy="h2o",
                        options=H2OOptions(recent_ratio=ratio), keep_prefill=keep_prefill)
    recent = max(1, round(ratio * (budget // P)))
    evictions = assert_evicts_lowest_score(seq, run_policy(config, seq), recent, keep_prefill)
    assert evictions > 0, "the run never evicted: make it longer"


@settings(max_examples=examples(20), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=h2o_cases(), span=st.sampled_from([1, 16, 17, 40]))
def test_h2o_window_as_a_token_span_capped_by_the_ratio(case, span: int) -> None:
    """recent_tokens: the window is ceil(span / P) pages, never more than the ratio's share."""
    seq, budget, ratio, keep_prefill = case
    config = RaaSConfig(budget=budget, page_size=P, attention_kernel=SDPA, policy="h2o",
                        options=H2OOptions(recent_ratio=ratio, recent_tokens=span),
                        keep_prefill=keep_prefill)
    recent = max(1, min(round(ratio * (budget // P)), -(-span // P)))
    evictions = assert_evicts_lowest_score(seq, run_policy(config, seq), recent, keep_prefill)
    assert evictions > 0, "the run never evicted: make it longer"
