"""Compiled peers: the hsr step (the issue-5 peers' most involved tensor code) and each
reasoning peer's step compile to a single fullgraph graph, are not recompiled across
steps, and agree with eager."""

from __future__ import annotations

import pytest
import torch

from raas_flex import RaaSConfig
from raas_flex.policies.hsr import BOUND, HSROptions
from raas_flex.policies.lazy_eviction import LazyEvictionOptions
from raas_flex.policies.lessismore import LessIsMoreOptions
from raas_flex.policies.recycled import RecycledOptions
from raas_flex.policies.rkv import RKVOptions
from tests.policy_harness import (
    causal_positions, compiled_and_eager, fullgraph_step, make_sequence,
    max_error_vs_masked_dense, run_policy,
)


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


@pytest.mark.parametrize("policy, options", [
    ("rkv", RKVOptions(buffer=16, window=4)),
    ("lazy_eviction", LazyEvictionOptions(window=16, alpha=0.02)),
    ("lessismore", LessIsMoreOptions()),
    ("recycled", RecycledOptions(period=3, pages=1)),
])
def test_compiled_reasoning_peer_step_matches_eager_in_one_graph(policy, options) -> None:
    """One fullgraph graph per policy over 40 steps: page opens, checkpoints that free
    pages (rkv, lazy_eviction), a selection that skips pages (lessismore) and one kept
    between full steps with its block list (recycled)."""
    seq = make_sequence(7, batch=2, prompt_lengths=[30, 12], steps=40, key_scale=3.0)
    config = RaaSConfig(budget=64, page_size=16, policy=policy, options=options)
    fast, slow = compiled_and_eager(config, seq)
    for a, b in zip(fast.attended, slow.attended):
        assert torch.equal(a, b)
    assert any((a != c).any() for a, c in zip(fast.attended, causal_positions_all(seq))), (
        "nothing dropped")


def causal_positions_all(seq):
    return [causal_positions(seq, t) for t in range(seq.steps)]
