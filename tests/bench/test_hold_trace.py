"""hold_trace's two measures on hand-made inputs: which heads read a page, and what a pool holds."""

from __future__ import annotations

import torch

import raas_flex as rf
from bench.accuracy.hold_trace import P, pooled, reading_heads, replay


def test_reading_heads_are_those_that_attend_the_page():
    D, N = 8, 4 * P
    k = torch.zeros(1, 2, N, D)  # two kv heads, one query head each
    k[0, 0, 2 * P:3 * P, 0] = 40.0  # head 0: page 2's keys stand out along dim 0
    q = torch.zeros(1, 2, N, D)
    q[0, :, -1, 0] = 1.0  # the last query of both heads looks along dim 0
    heads = reading_heads([(q, k)], 0, N - 1, 2)
    assert heads.tolist() == [[True, False]]  # head 1's keys are all alike: mass spread


def test_replay_keeps_pool_snapshots_and_departures():
    gen = torch.Generator().manual_seed(0)
    B, H, G, D, prompt, N = 2, 2, 2, 16, 2 * P, 8 * P
    q = torch.randn(B, H * G, N, D, generator=gen)
    k = torch.randn(B, H, N, D, generator=gen)
    snaps, left = replay(q, k, prompt, "streaming", 4 * P, {prompt, N - 1})
    assert set(snaps) == {prompt, N - 1} and snaps[N - 1].shape[:2] == (B, H)
    # streaming with 4 pages, 2 pinned by the prompt: at the end it holds the prompt and
    # the two newest pages; every decode page before those left the pool
    newest = (N - 1) // P
    for b in range(B):
        for h in range(H):
            assert set(snaps[N - 1][b, h].tolist()) - {-1} == {0, 1, newest - 1, newest}
            assert all((b, h, page) in left for page in range(2, newest - 1))


def test_pooled_lists_held_pages_per_problem_and_head():
    config = rf.RaaSConfig(budget=4 * P, page_size=P, policy="streaming")
    cache = rf.new_layer_cache(config, rf.make_policy(config), 1, 2, 8, prompt_tokens=P)
    cache.page_id[0, 0, :2] = torch.tensor([0, 3])
    assert pooled(cache) == {(0, 0, 0), (0, 0, 3)}


def test_replay_takes_a_variants_settings():
    """'streaming@streaming_sinks=2' replays streaming with two sink pages, not the default one."""
    gen = torch.Generator().manual_seed(1)
    prompt, N = P, 8 * P
    q = torch.randn(1, 1, N, 16, generator=gen)
    k = torch.randn(1, 1, N, 16, generator=gen)
    held = {name: set(replay(q, k, prompt, name, 4 * P, {N - 1})[0][N - 1][0, 0].tolist())
            for name in ("streaming", "streaming@streaming_sinks=2")}
    assert held["streaming"] != held["streaming@streaming_sinks=2"]
