"""Every peer policy against dense attention: equal with room for everything, and equal to
masked dense over its reported attended set at any budget."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from tests.policy_harness import (
    EVICTING, PEERS, SDPA, causal_positions, examples, make_sequence, max_error_vs_dense,
    max_error_vs_masked_dense, prompts_and_budget, run_policy, settings_for,
)

P = 16
TOL = 1e-5


def peer_config(policy: str, budget: int, **extra) -> RaaSConfig:
    """Small peers' settings so that a 20-step run exercises their selection; the fast
    "sdpa" kernel unless `attention_kernel` says otherwise."""
    peers = dict(recycled_period=3, recycled_pages=1, hsr_epsilon=0.05, rkv_buffer=16,
                 lazy_window=16)
    core = dict(attention_kernel=SDPA)
    for name, value in extra.items():
        (core if name in RaaSConfig.__dataclass_fields__ else peers)[name] = value
    return RaaSConfig.from_fields(budget=budget, page_size=P, policy=policy, **core,
                                  **settings_for(policy, **peers))


@pytest.mark.parametrize("policy", PEERS)
def test_budget_covering_everything_equals_dense(policy: str) -> None:
    seq = make_sequence(11, batch=2, prompt_lengths=[20, 9], steps=20)
    budget = 64  # 4 pages >= 20 + 20 tokens, and >= prompt pages + 2
    # Keep-all peers select inside the budget too; HSR has no budget: a huge log(1/eps).
    config = peer_config(policy, budget, recycled_pages=4, hsr_epsilon=1e-30,
                         attention_kernel="flex")  # the real kernel, once per policy
    trace = run_policy(config, seq)
    assert max_error_vs_dense(seq, trace) <= TOL
    for t, attended in enumerate(trace.attended):
        assert torch.equal(attended, causal_positions(seq, t))


@st.composite
def budgeted_runs(draw):
    seq, budget = prompts_and_budget(draw, st, P, extra_pages=(2, 3), steps=(6, 20))
    return seq, budget, draw(st.booleans()), draw(st.sampled_from([SDPA, "flex"]))


@pytest.mark.parametrize("policy", PEERS)
@settings(max_examples=examples(20), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(run=budgeted_runs())
def test_any_budget_equals_masked_dense(policy: str, run) -> None:
    seq, budget, keep_prefill, kernel = run
    config = peer_config(policy, budget, keep_prefill=keep_prefill, attention_kernel=kernel)
    trace = run_policy(config, seq)
    assert max_error_vs_masked_dense(seq, trace) <= TOL
    for t, (attended, held) in enumerate(zip(trace.attended, trace.held)):
        causal = causal_positions(seq, t)
        assert not (attended & ~held).any(), "attended a token the pool does not hold"
        assert not (held & ~causal).any(), "holds a token that was never written"
        newest = (seq.lengths + t)[:, None]  # the token just appended is always attended
        assert attended.gather(-1, newest[..., None].expand(-1, attended.shape[1], 1)).all()
        if policy in EVICTING:
            assert int(held.sum(-1).max()) <= budget
        else:
            assert torch.equal(held, causal), "a keep-all policy lost a token"
