"""rkv: pages leave only at checkpoints (every `buffer` tokens); a checkpoint keeps the
pinned prompt, the pages of the last `window` tokens and the best pages by a float64
re-computation of the R-KV page score, and frees one buffer."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.policies.rkv import RKVOptions
from tests.policy_harness import SDPA, examples, make_sequence, page_sets, run_policy

P = 16


def query_at(seq, b: int, position: int) -> torch.Tensor:
    """The query of logical position `position` of row b, [Hq, D] float64."""
    n, T = int(seq.lengths[b]), seq.q_prompt.shape[2]
    if position < n:
        return seq.q_prompt[b, :, T - n + position].double()
    return seq.q_decode[b, :, position - n].double()


def reference_page_scores(seq, b: int, h: int, held: list[int], newest: int,
                          options: RKVOptions) -> dict[int, float]:
    """float64 R-KV score of every held page of (row b, kv head h) at the step that wrote
    position `newest`, as the policy defines it (docs/algorithms.md)."""
    keys = seq.history("k")[b, h].double()[held]  # [n, D]
    Hq, D = seq.q_prompt.shape[1], keys.shape[-1]
    G = Hq // seq.k_prompt.shape[1]
    queries = torch.stack([query_at(seq, b, p)[h * G:(h + 1) * G]
                           for p in range(max(0, newest + 1 - options.window), newest + 1)])
    logits = (queries @ keys.T).amax(1) / math.sqrt(D)  # [W, n]
    importance = torch.softmax(logits, -1).mean(0)
    by_position = dict(zip(held, importance.tolist()))
    pooled = {}
    half = options.pool_kernel // 2
    for p in held:  # max over the kernel's neighbours inside the page
        page = p // P
        pooled[p] = max(by_position.get(o, 0.0) for o in range(p - half, p + half + 1)
                        if o // P == page)
    unit = keys / (keys.norm(dim=-1, keepdim=True) + 1e-8)
    mean = (unit @ unit.sum(0) - (unit * unit).sum(-1)) / len(held)
    redundancy = dict(zip(held, torch.softmax(mean, -1).tolist()))
    lam = options.mix_lambda
    scores: dict[int, float] = {}
    for p in held:
        scores[p // P] = scores.get(p // P, 0.0) + lam * pooled[p] - (1 - lam) * redundancy[p]
    return scores


@settings(max_examples=examples(10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), length=st.integers(1, 40), buffer_pages=st.integers(1, 2),
       window=st.sampled_from([4, 8, 20]), extra=st.integers(1, 2), keep_prefill=st.booleans(),
       key_scale=st.sampled_from([1.0, 3.0]))
def test_rkv_compresses_only_at_checkpoints_keeping_the_best_pages(
        seed, length, buffer_pages, window, extra, keep_prefill, key_scale) -> None:
    prompt_pages = -(-length // P)
    protected_pages = -(-window // P) + 1
    slots = prompt_pages + buffer_pages + protected_pages + extra
    options = RKVOptions(buffer=buffer_pages * P, window=window)
    seq = make_sequence(seed, batch=2, prompt_lengths=[length, max(1, length - 5)],
                        steps=(slots + 2 * buffer_pages) * P - length, key_scale=key_scale)
    config = RaaSConfig(budget=slots * P, page_size=P, attention_kernel=SDPA, policy="rkv",
                        options=options, keep_prefill=keep_prefill)
    trace = run_policy(config, seq)
    B, H = seq.k_prompt.shape[:2]
    checkpoints = freed = 0
    for t, (attended, held) in enumerate(zip(trace.attended, trace.held)):
        assert torch.equal(attended, held), "rkv attends every held token"
        assert int(held.sum(-1).max()) <= config.budget
        if t == 0:
            continue
        before, now = page_sets(trace.held[t - 1], P), page_sets(held, P)
        for b in range(B):
            n = int(seq.lengths[b]) + t  # the position this step wrote
            at_checkpoint = (n + 1) % options.buffer == 0
            for h in range(H):
                pages_before = before[b][h] | {n // P}
                gone = pages_before - now[b][h]
                if not at_checkpoint:
                    assert not gone, f"step {t}: evicted between checkpoints"
                    continue
                checkpoints += 1
                prompt = set(range(-(-int(seq.lengths[b]) // P))) if keep_prefill else set()
                recent = set(range(max(0, n + 1 - window) // P, n // P + 1))
                assert not gone & (prompt | recent), "freed a pinned or protected page"
                assert len(now[b][h]) <= max(slots - buffer_pages,
                                             len(pages_before & (prompt | recent)))
                held_before = [p for p in range(n + 1) if p // P in pages_before]
                scores = reference_page_scores(seq, b, h, held_before, n, options)
                kept = now[b][h] - prompt - recent
                freed += len(gone)
                for victim in gone:
                    for other in kept:
                        assert scores[victim] <= scores[other] + 1e-6, (victim, other)
    assert checkpoints > 0 and freed > 0, "the run never compressed: make it longer"


def test_observed_importance_follows_the_layers_softcap_and_sinks():
    """R-KV's importance is the softmax the model attends with: capped logits, and the sink
    column in the softmax (group max over the query heads, like the logits). Compared with a
    float64 recomputation from the held keys; the uncapped, sink-free softmax differs."""
    import raas_flex as rf
    from raas_flex.policies.periodic import held_token_mask
    from raas_flex.policies.rkv_scores import observed_importance

    B, HQ, H, D, T, W, cap, scale = 1, 4, 2, 16, 40, 3, 2.0, 0.5
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, n, T, D, generator=gen) * 2 for n in (HQ, H, H))
    sinks = torch.randn(HQ, generator=gen) * 3
    config = rf.RaaSConfig(budget=64, page_size=P, policy="dense")
    policy = rf.make_policy(config)
    cache = rf.new_layer_cache(config, policy, B, H, D, T, 8, softcap=cap, sinks=sinks)
    rf.prefill(q, k, v, cache, policy, torch.ones(B, T, dtype=torch.long), scale)
    ring = torch.randn(B, H, W, HQ // H, D, generator=gen)
    got = observed_importance(ring, torch.ones(B, W, dtype=torch.bool), cache.k, cache.fill,
                              scale, 1, cache.softcap, cache.sinks)

    held = held_token_mask(cache)[0]  # [H, N]
    keys = cache.k[0].double()  # [H, N, D]
    for h in range(H):
        idx = held[h].nonzero().flatten()
        raw = (ring[0, h].double() @ keys[h, idx].T).amax(1) * scale  # [W, n]
        capped = torch.tanh(raw / cap) * cap
        sink = sinks.view(H, -1)[h].double().max().expand(W, 1)
        want = torch.softmax(torch.cat([capped, sink], 1), 1)[:, :-1].mean(0)
        assert torch.allclose(got[0, h, idx].double(), want, atol=1e-5)
        plain = torch.softmax(raw, 1).mean(0)
        assert not torch.allclose(got[0, h, idx].double(), plain, atol=1e-3)
        assert (got[0, h, ~held[h]] == 0).all()
