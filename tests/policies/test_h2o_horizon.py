"""h2o_horizon: its own invariants. (Equal to dense with room and to masked dense over its
attended set: tests/policies/test_common.py, which covers every peer; its decayed update
compiles as h2o_decay's does: tests/policies/test_h2o_decay.py.)

- gamma is 1 - 1 / (horizon * budget): the forgetting scales with the budget;
- an unbounded horizon is h2o, step for step;
- every eviction is the lowest float64 decayed score outside the recent window.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import raas_flex as rf
from raas_flex import RaaSConfig
from tests.policies.h2o_reference import P, assert_evicts_lowest_score, h2o_cases, scored_run
from tests.policy_harness import SDPA, examples, run_policy


def horizon_config(budget: int, horizon: float, ratio: float = 0.5, **core) -> RaaSConfig:
    return RaaSConfig.from_fields(budget=budget, page_size=P, policy="h2o_horizon",
                                  h2o_horizon_horizon=horizon, h2o_horizon_recent_ratio=ratio,
                                  **{"attention_kernel": SDPA, **core})


@pytest.mark.parametrize("budget,horizon", [(256, 4.0), (1024, 4.0), (512, 0.5)])
def test_gamma_scales_with_the_budget(budget: int, horizon: float) -> None:
    policy = rf.make_policy(horizon_config(budget, horizon))
    assert policy.gamma == pytest.approx(1.0 - 1.0 / (horizon * budget), abs=0, rel=1e-15)


def test_bad_horizon_is_refused() -> None:
    for bad, error in ((0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                       ("4", TypeError), (True, TypeError)):
        with pytest.raises(error, match="h2o_horizon_horizon"):
            horizon_config(64, bad)


@settings(max_examples=examples(10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=h2o_cases())
def test_unbounded_horizon_is_h2o_step_for_step(case) -> None:
    seq, budget, ratio, keep_prefill = case
    h2o = RaaSConfig.from_fields(budget=budget, page_size=P, policy="h2o", h2o_recent_ratio=ratio,
                                 keep_prefill=keep_prefill, attention_kernel=SDPA)
    held, scores = scored_run(h2o, seq)
    # gamma = 1 - 1e-20 rounds to 1.0: the float32 accumulator is h2o's exactly
    same_held, same_scores = scored_run(horizon_config(budget, 1e20 / budget, ratio,
                                                       keep_prefill=keep_prefill), seq)
    for t in range(seq.steps):
        assert torch.equal(held[t], same_held[t]), f"step {t}: unbounded horizon is not h2o"
        assert torch.equal(scores[t], same_scores[t]), f"step {t}: scores differ from h2o's"


@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=h2o_cases())
def test_evicts_lowest_decayed_mass_outside_window(case) -> None:
    seq, budget, ratio, keep_prefill = case
    config = horizon_config(budget, 0.25, ratio, keep_prefill=keep_prefill)  # fast forgetting
    gamma = rf.make_policy(config).gamma
    recent = max(1, round(ratio * (budget // P)))
    evictions = assert_evicts_lowest_score(seq, run_policy(config, seq), recent, keep_prefill,
                                           gamma)
    assert evictions > 0, "the run never evicted: make it longer"
