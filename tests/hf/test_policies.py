"""Every peer end to end through apply_raas(policy=...) on a tiny Llama: with room for
everything it decodes the unpatched model's greedy tokens; with a small budget it runs to
the end and an evicting peer's cache holds at most `budget` tokens per kv head."""

from __future__ import annotations

import pytest
import torch

from raas_flex import apply_raas, held_positions, remove_raas
from raas_flex.hf.tiny import tiny_model
from raas_flex.hf.compat import returned_cache
from tests._hf_common import fast_cpu, greedy, prompts  # noqa: F401  (autouse fixture)
from tests.policy_harness import PEERS, settings_for

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

LENGTHS = (11, 6, 3)
# Peer settings that make a short decode exercise each rule.
OPTIONS = dict(recycled_period=3, hsr_epsilon=0.05, rkv_buffer=16, lazy_window=16)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def unpatched_tokens(model):
    ids, mask = prompts(LENGTHS)
    return greedy(model, ids, mask, 40)


@pytest.mark.parametrize("policy", PEERS)
def test_peer_with_room_for_everything_matches_unpatched(model, unpatched_tokens, policy):
    ids, mask = prompts(LENGTHS)
    # 64 >= 11 + 40 tokens; hsr's threshold must keep every page to be exact.
    apply_raas(model, budget=64, page_size=16, policy=policy,
               **settings_for(policy, **{**OPTIONS, "hsr_epsilon": 1e-30}))
    try:
        got = greedy(model, ids, mask, 40)
    finally:
        remove_raas(model)
    assert torch.equal(got, unpatched_tokens)


@pytest.mark.parametrize("policy", PEERS)
def test_peer_small_budget_runs_to_the_end(model, policy):
    ids, mask = prompts(LENGTHS)
    new_tokens, budget = 80, 48
    apply_raas(model, budget=budget, page_size=16, policy=policy,
               **settings_for(policy, **OPTIONS))
    try:
        out = greedy(model, ids, mask, new_tokens, return_dict_in_generate=True)
    finally:
        remove_raas(model)
    assert out.sequences.shape == (len(LENGTHS), ids.shape[1] + new_tokens)
    total = max(LENGTHS) + new_tokens
    for layer in returned_cache(out).layers:
        held = held_positions(layer.pool, total).sum(-1)  # [B, H]
        if layer.keeps_all:  # every token fed (the last generated one never is)
            fed = torch.tensor(LENGTHS) + new_tokens - 1
            assert torch.equal(held, fed[:, None].expand_as(held))
        else:
            assert int(held.max()) <= budget
        if "dropped_mass_bound" in layer.pool.policy_state:
            bound = layer.pool.policy_state["dropped_mass_bound"]
            assert bool(((bound >= 0) & (bound <= 1)).all())
