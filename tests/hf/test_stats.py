"""raas_flex.stats: per-layer held / attended / evicted / pinned figures, checked against
counts made independently (page_id changes watched step by step, held_positions,
attended_positions) on decodes that evict."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import raas_flex
from raas_flex import RaaSConfig, decode_step, make_policy, new_layer_cache, prefill
from raas_flex.cache import FREE
from raas_flex.positions import attended_positions, held_positions
from raas_flex.hf.cache_stats import CacheStats, LayerStats, layer_stats
from raas_flex.hf.compat import returned_cache
from raas_flex.hf.tiny import tiny_model
from raas_flex.policies import policy_class
from tests._hf_common import fast_cpu, greedy, prompts  # noqa: F401

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

B, H, G, D, P = 2, 2, 2, 16, 16


def drive(policy: str, prompt_lengths: list[int], steps: int, budget: int = 64):
    """Prefill + `steps` decode steps of one layer; returns (pool, evictions [B, H]) with
    evictions counted by watching each slot's page_id change from a held page to another."""
    config = RaaSConfig(budget=budget, page_size=P, policy=policy, attention_kernel="sdpa")
    policy_ = make_policy(config)
    gen = torch.Generator().manual_seed(0)
    T = max(prompt_lengths)
    pool = new_layer_cache(config, policy_, B, H, D, T, steps)
    lengths = torch.tensor(prompt_lengths)
    mask = (torch.arange(T) >= T - lengths[:, None]).long()
    prefill(*(torch.randn(B, h, T, D, generator=gen) for h in (H * G, H, H)), pool, policy_,
            attention_mask=mask)
    evictions = torch.zeros(B, H, dtype=torch.int64)
    for step in range(1, steps + 1):
        before = pool.page_id.clone()
        decode_step(*(torch.randn(B, h, 1, D, generator=gen) for h in (H * G, H, H)), pool,
                    policy_, step)
        evictions += ((before != FREE) & (pool.page_id != before)).sum(-1)
    return pool, evictions


@pytest.mark.parametrize("policy", ["raas", "streaming", "h2o", "random", "dense", "quest"])
def test_layer_figures_match_independent_counts(policy):
    lengths, steps = [20, 9], 70
    pool, evictions = drive(policy, lengths, steps)
    figures = layer_stats(pool, 0, policy)
    positions = max(lengths) + steps
    assert figures.evicted_pages == evictions.double().mean().item()
    assert figures.held == held_positions(pool, positions).sum(-1).double().mean().item()
    assert figures.attended == attended_positions(pool, positions).sum(-1).double().mean().item()
    assert figures.seen == sum(n + steps for n in lengths) / B
    pinned = ((pool.page_id >= 0) & pool.pinned).sum(-1).double().mean().item()
    assert figures.pinned_pages == pinned
    if policy_class(policy).Options.keeps_all:
        assert figures.evicted_pages == 0 and figures.held == figures.seen
    else:
        assert figures.evicted_pages > 0 and figures.held <= 64


def test_raas_evicts_one_page_per_page_opened_beyond_the_budget():
    """A full budget evicts exactly one page per page opened: ceil(tokens / P) - L/P."""
    lengths, steps = [20, 9], 70
    pool, _ = drive("raas", lengths, steps)
    figures = layer_stats(pool)
    expected = [math.ceil((n + steps) / P) - 64 // P for n in lengths]
    assert figures.evicted_pages == sum(expected) / B
    assert figures.pinned_pages == sum(math.ceil(n / P) for n in lengths) / B  # the prompts
    assert figures.capacity == 64 and figures.held <= 64


def test_no_eviction_before_the_budget_fills():
    pool, evictions = drive("raas", [20, 9], 10)
    assert layer_stats(pool).evicted_pages == 0 and int(evictions.sum()) == 0


@pytest.fixture(scope="module")
def generated():
    """A tiny Llama decoding 100 tokens on a 64-token budget, its first layer kept dense."""
    model = tiny_model("llama")
    raas_flex.apply_raas(model, budget=64, page_size=P, attention_kernel="sdpa",
                         dense_layers=1)
    ids, mask = prompts((10, 7))
    out = greedy(model, ids, mask, 100, return_dict_in_generate=True)
    return returned_cache(out)


def test_stats_of_a_generate_cache(generated):
    report = raas_flex.stats(generated)
    assert isinstance(report, CacheStats) and len(report.layers) == 2
    dense, raas = report.layers
    seen = (10 + 99 + 7 + 99) / 2  # the last new token is never fed back
    assert dense.policy == "dense" and raas.policy == "raas"
    assert dense.evicted_pages == 0 and dense.held == seen and dense.seen == seen
    opened = (math.ceil(109 / P) + math.ceil(106 / P)) / 2
    assert raas.evicted_pages == opened - 64 // P
    assert raas.held == raas.attended  # RaaS attends every page it holds
    assert raas.capacity == 64 and dense.capacity == math.ceil(110 / P) * P
    assert report.total.evicted_pages == dense.evicted_pages + raas.evicted_pages
    assert report.total.held == dense.held + raas.held
    assert (report.budget, report.page_size, report.batch, report.kv_heads) == (64, P, 2, 2)


def test_stats_table_is_readable(generated):
    report = raas_flex.stats(generated)
    lines = str(report).splitlines()
    assert "budget 64 tokens" in lines[0]
    assert lines[1].split() == ["layer", "policy", "capacity", "held", "attended", "evicted",
                                "pages", "pinned", "pages"]
    assert lines[2].split()[:2] == ["0", "dense"] and lines[3].split()[:2] == ["1", "raas"]
    assert lines[-1].split()[0] == "all" and set(lines[-2]) == {"-"}
    assert lines[-1].split()[-2] == f"{report.total.evicted_pages:g}"


def test_stats_are_frozen(generated):
    report = raas_flex.stats(generated)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.layers[0].held = 0  # type: ignore[misc]
    assert isinstance(report.total, LayerStats) and report.total.layer is None


def test_stats_refuses_what_it_cannot_read():
    with pytest.raises(TypeError, match="RaaSCache"):
        raas_flex.stats({"not": "a cache"})
    empty = raas_flex.RaaSCache(RaaSConfig(budget=64, page_size=P), num_layers=2)
    with pytest.raises(ValueError, match="empty"):
        raas_flex.stats(empty)
