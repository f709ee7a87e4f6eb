"""lazy_eviction: pages leave only at its period; a checkpoint keeps the prompt and the
pages opened since the last checkpoint, and frees the pages with the lowest recurrence
score, tracked here in float64 from the exact attention weights."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.lazy_eviction import LazyEvictionOptions
from tests.policy_harness import SDPA, examples, make_sequence, page_sets, run_policy

P = 16


def recurrence_score(last: int, mri: int, now: int) -> float:
    """The reported LazyEviction importance (docs/algorithms.md), float64."""
    due = 2 / (1 + math.exp(min(700.0, 1 + (now - last) / (mri + 1e-5))))
    return due + (0.0 if mri == 0 else 2 / (1 + math.exp(min(700.0, mri - 1))))


def peak_weights(seq, b: int, h: int, t: int, held: list[int]) -> dict[int, float]:
    """Largest float64 attention weight of each held page from decode query t, max over
    the group's query heads."""
    keys = seq.history("k")[b, h].double()[held]
    G = seq.q_decode.shape[1] // seq.k_decode.shape[1]
    q = seq.q_decode[b, h * G:(h + 1) * G, t].double()
    weights = torch.softmax(q @ keys.T / math.sqrt(keys.shape[-1]), -1).amax(0)
    peaks: dict[int, float] = {}
    for p, w in zip(held, weights.tolist()):
        peaks[p // P] = max(peaks.get(p // P, 0.0), w)
    return peaks


@settings(max_examples=examples(10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), length=st.integers(1, 40), window_pages=st.integers(1, 2),
       extra=st.integers(1, 3), keep_prefill=st.booleans(),
       alpha=st.sampled_from([1e-4, 0.02]), key_scale=st.sampled_from([1.0, 3.0]))
def test_lazy_eviction_evicts_only_at_its_period_lowest_recurrence_first(
        seed, length, window_pages, extra, keep_prefill, alpha, key_scale) -> None:
    prompt_pages = -(-length // P)
    slots = prompt_pages + 2 * window_pages + extra
    options = LazyEvictionOptions(window=window_pages * P, alpha=alpha)
    seq = make_sequence(seed, batch=2, prompt_lengths=[length, max(1, length - 7)],
                        steps=(slots + 2 * window_pages) * P - length, key_scale=key_scale)
    config = RaaSConfig(budget=slots * P, page_size=P, attention_kernel=SDPA,
                        policy="lazy_eviction", options=options, keep_prefill=keep_prefill)
    trace = run_policy(config, seq)
    B, H = seq.k_prompt.shape[:2]
    last = [[{} for _ in range(H)] for _ in range(B)]  # page -> last important step
    mri = [[{} for _ in range(H)] for _ in range(B)]
    fresh = [set() for _ in range(B)]  # pages opened since the row's last checkpoint
    freed = 0
    previous = None
    for t, (attended, held) in enumerate(zip(trace.attended, trace.held)):
        assert torch.equal(attended, held)
        assert int(held.sum(-1).max()) <= config.budget
        now_pages = page_sets(held, P)
        clock = t + 1
        for b in range(B):
            n = int(seq.lengths[b]) + t
            if n % P == 0:
                fresh[b].add(n // P)
            at_checkpoint = (n + 1) % options.window == 0
            prompt = set(range(-(-int(seq.lengths[b]) // P))) if keep_prefill else set()
            for h in range(H):
                if t == 0:
                    before = {p // P for p in range(n)} | {n // P}
                else:
                    before = previous[b][h] | {n // P}
                for page in before:  # a page opened this step starts at t - 1, MRI 0
                    if page not in last[b][h]:
                        opened_now = page == n // P and n % P == 0
                        last[b][h][page], mri[b][h][page] = (clock - 1 if opened_now else 0), 0
                held_positions = [p for p in range(n + 1) if p // P in before]
                for page, peak in peak_weights(seq, b, h, t, held_positions).items():
                    if peak >= alpha:
                        mri[b][h][page] = max(mri[b][h][page], clock - last[b][h][page])
                        last[b][h][page] = clock
                gone = before - now_pages[b][h]
                if not at_checkpoint:
                    assert not gone, f"step {t}: evicted between checkpoints"
                    continue
                assert not gone & (prompt | fresh[b]), "freed the prompt or the recent window"
                score = {p: recurrence_score(last[b][h][p], mri[b][h][p], clock) for p in before}
                for victim in gone:
                    for other in now_pages[b][h] - prompt - fresh[b]:
                        assert score[victim] <= score[other] + 1e-6, (t, victim, other)
                freed += len(gone)
            if at_checkpoint:
                fresh[b].clear()
        previous = now_pages
    assert freed > 0, "the run never evicted: make it longer"
