"""One compiled case: the hsr decode step (the peers' most involved tensor code) compiles
to a single fullgraph graph, is not recompiled across steps, and agrees with eager."""

from __future__ import annotations

import torch

from raas_flex import RaaSConfig
from raas_flex.policies.hsr import BOUND, HSROptions
from tests.policy_harness import fullgraph_step, make_sequence, max_error_vs_masked_dense, run_policy


def test_compiled_hsr_step_matches_eager_without_recompiling() -> None:
    scale = 0.25  # 1 / sqrt(head_dim = 16), as the eager path uses
    step, graphs = fullgraph_step(scale)
    seq = make_sequence(5, batch=2, prompt_lengths=[30, 12], steps=10, key_scale=3.0)
    config = RaaSConfig(budget=64, page_size=16, policy="hsr", options=HSROptions(epsilon=0.2))
    bounds = {"eager": [], "compiled": []}

    def keep(which):
        return lambda t, cache, _policy: bounds[which].append(cache.policy_state[BOUND].clone())

    fast = run_policy(config, seq, step_fn=step, on_step=keep("compiled"))
    slow = run_policy(config, seq, on_step=keep("eager"))
    assert len(graphs) == 1, f"{len(graphs)} graphs compiled for one step shape"
    assert max_error_vs_masked_dense(seq, fast) <= 1e-5
    for a, b in zip(fast.attended, slow.attended):
        assert torch.equal(a, b)
    assert any((a != h).any() for a, h in zip(fast.attended, fast.held)), "nothing dropped"
    for a, b in zip(bounds["compiled"], bounds["eager"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
