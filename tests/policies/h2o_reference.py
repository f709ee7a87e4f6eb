"""A float64 reference for h2o-style eviction, shared by the h2o and h2o_decay tests: every
held page's score is gamma x its score + its exact attention mass each step (gamma = 1:
h2o's plain sum), and an evicted page must be the lowest-scored one outside the recent
window (the oldest unpinned page when the window covers them all)."""

from __future__ import annotations

from collections import defaultdict

import torch
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.h2o import ACCUMULATED
from tests.policy_harness import (
    Sequence, Trace, make_sequence, page_sets, run_policy, step_page_mass,
)

P = 16


@st.composite
def h2o_cases(draw) -> tuple[Sequence, int, float, bool]:
    """(seq, budget, recent_ratio, keep_prefill): a 2-row run long enough for a few
    evictions at a budget of the prompt's pages plus 2-3."""
    length = draw(st.integers(1, 40))
    slots = -(-length // P) + draw(st.integers(2, 3))
    steps = slots * P + P // 2 - length
    seq = make_sequence(draw(st.integers(0, 2**16)), batch=2, prompt_lengths=length,
                        steps=steps, key_scale=draw(st.sampled_from([1.0, 3.0])))
    return seq, slots * P, draw(st.sampled_from([0.25, 0.5, 0.75])), draw(st.booleans())


def assert_evicts_lowest_score(seq: Sequence, trace: Trace, recent: int, keep_prefill: bool,
                               gamma: float = 1.0, page_size: int = P) -> int:
    """Check every eviction of `trace` (`recent` window pages) against the reference;
    returns how many there were."""
    B, H = seq.k_prompt.shape[:2]
    scores = [[defaultdict(float) for _ in range(H)] for _ in range(B)]  # float64 oracle
    evictions = 0
    previous = None
    for t, (attended, held) in enumerate(zip(trace.attended, trace.held)):
        assert torch.equal(attended, held), "h2o attends every held token"
        now = page_sets(held, page_size)
        for b in range(B):
            prompt = (set(range(-(-int(seq.lengths[b]) // page_size))) if keep_prefill
                      else set())
            for h in range(H):
                if previous is not None:
                    gone = previous[b][h] - now[b][h]
                    assert len(gone) <= 1
                    if gone:
                        evictions += 1
                        (victim,) = gone
                        score = scores[b][h]
                        before = previous[b][h]
                        newest = max(before)
                        candidates = {p for p in before - prompt if p > -1
                                      and p <= newest - recent}
                        assert victim not in prompt, "evicted a pinned prompt page"
                        if candidates:
                            assert victim in candidates, "evicted inside the recent window"
                            lowest = min(score[p] for p in candidates)
                            assert score[victim] <= lowest + 1e-4 * max(1.0, lowest)
                        else:
                            assert victim == min(before - prompt)
                        del score[victim]
        mass = step_page_mass(seq, t, attended, page_size)  # [B, H, pages]
        for b in range(B):
            for h in range(H):
                for p in now[b][h]:
                    scores[b][h][p] = gamma * scores[b][h][p] + float(mass[b, h, p])
        previous = now
    return evictions


def scored_run(config: RaaSConfig, seq: Sequence) -> tuple[list, list]:
    """Held sets and the accumulator after every step (h2o, h2o_decay, h2o_horizon)."""
    scores: list[torch.Tensor] = []
    trace = run_policy(config, seq, on_step=lambda t, cache, _: scores.append(
        cache.policy_state[ACCUMULATED].clone()))
    return trace.held, scores
