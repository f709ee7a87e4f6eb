"""Peer options: defaults from the sources, bad values refused with the fix named, the
flat spelling routed to the chosen policy only, and each policy's memory class (pool sized
by the budget, or by prompt + max_new_tokens)."""

from __future__ import annotations

import sys

import pytest

from raas_flex import RaaSConfig, make_policy, new_layer_cache
from raas_flex.policies import available_policies, policy_class
from raas_flex.policies.h2o import H2OOptions
from raas_flex.policies.h2o_decay import H2ODecayOptions
from raas_flex.policies.h2o_horizon import H2OHorizonOptions
from raas_flex.policies.hsr import HSROptions
from raas_flex.policies.raas_guard import RaaSGuardOptions
from raas_flex.policies.lazy_eviction import LazyEvictionOptions
from raas_flex.policies.lessismore import LessIsMoreOptions
from raas_flex.policies.random_page import RandomOptions
from raas_flex.policies.recycled import RecycledOptions
from raas_flex.policies.rkv import RKVOptions
from raas_flex.policies.streaming import StreamingOptions
from tests.policy_harness import PEERS, settings_for


def test_peers_are_registered_with_documented_defaults() -> None:
    assert set(PEERS) == {"quest", "h2o", "streaming", "recycled", "random", "hsr", "raas_hsr",
                          "raas_guard", "h2o_decay", "h2o_horizon", "rkv", "lazy_eviction",
                          "lessismore"}
    assert RaaSGuardOptions().recent_ratio == 0.5  # half the budget guarded, half RaaS's
    assert H2OOptions().recent_ratio == 0.5  # H2O's 1:1 heavy:recent split
    assert (H2ODecayOptions().recent_ratio, H2ODecayOptions().gamma) == (0.5, 0.98)
    assert (H2OHorizonOptions().recent_ratio, H2OHorizonOptions().horizon) == (0.5, 4.0)
    assert StreamingOptions().sinks == 1  # one page holds StreamingLLM's 4 sink tokens
    assert RecycledOptions().period == 10
    assert (RKVOptions().buffer, RKVOptions().window, RKVOptions().mix_lambda,
            RKVOptions().pool_kernel) == (128, 8, 0.1, 7)  # R-KV's B_buffer, alpha, lambda
    assert (LazyEvictionOptions().window, LazyEvictionOptions().alpha) == (175, 1e-4)
    assert (LessIsMoreOptions().top_ratio, LessIsMoreOptions().sinks) == (0.75, 1)
    config = RaaSConfig(policy="recycled")
    assert config.options.top_pages(config) == config.budget // config.page_size
    assert RecycledOptions(pages=3).top_pages(config) == 3
    for name in PEERS:  # every module states its source's rule and its deviations
        module = sys.modules[policy_class(name).__module__]
        assert "Deviation" in module.__doc__, name


@pytest.mark.parametrize("name", available_policies())
def test_every_config_holds_its_policys_options(name) -> None:
    config = RaaSConfig(policy=name)
    assert type(config.options) is policy_class(name).Options
    assert RaaSConfig.from_fields(policy=name, **config.options.flat()) == config


@pytest.mark.parametrize("options, field, value, error, words", [
    (H2OOptions, "recent_ratio", 0.0, ValueError, "h2o_recent_ratio"),
    (H2OOptions, "recent_ratio", 1.0, ValueError, "1:1"),
    (H2OOptions, "recent_tokens", -1, ValueError, "h2o_recent_tokens"),
    (H2OOptions, "recent_tokens", 1.5, TypeError, "int"),
    (StreamingOptions, "sinks", -1, ValueError, ">= 0"),
    (StreamingOptions, "sinks", 1.5, TypeError, "int"),
    (RecycledOptions, "period", 0, ValueError, ">= 1"),
    (RecycledOptions, "pages", 0, ValueError, "None"),
    (RecycledOptions, "pages", True, TypeError, "int"),
    (HSROptions, "epsilon", 0.0, ValueError, "(0, 1)"),
    (HSROptions, "epsilon", 1.0, ValueError, "(0, 1)"),
    (RandomOptions, "seed", -3, ValueError, ">= 0"),
    (RaaSGuardOptions, "recent_ratio", 1.0, ValueError, "must lie in"),
    (H2ODecayOptions, "recent_ratio", 1.0, ValueError, "h2o_decay_recent_ratio"),
    (H2ODecayOptions, "gamma", 0.0, ValueError, "(0, 1]"),
    (H2ODecayOptions, "gamma", 1.5, ValueError, "1 is h2o"),
    (H2ODecayOptions, "gamma", float("nan"), ValueError, "(0, 1]"),
    (H2ODecayOptions, "gamma", "0.98", TypeError, "float"),
    (H2ODecayOptions, "gamma", True, TypeError, "float"),
    (RaaSGuardOptions, "recent_ratio", "half", TypeError, "float"),
    (RKVOptions, "buffer", 0, ValueError, ">= 1"),
    (RKVOptions, "pool_kernel", 4, ValueError, "odd"),
    (RKVOptions, "mix_lambda", 1.5, ValueError, "must lie in"),
    (LazyEvictionOptions, "window", 0, ValueError, ">= 1"),
    (LazyEvictionOptions, "alpha", 0.0, ValueError, "(0, 1)"),
    (LessIsMoreOptions, "top_ratio", 1.0, ValueError, "recent window"),
    (LessIsMoreOptions, "sinks", -1, ValueError, ">= 0"),
])
def test_bad_peer_options_are_refused(options, field, value, error, words) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        options(**{field: value})
    name = options.prefix + field  # the flat spelling checks the same
    policy = next(p for p in available_policies() if policy_class(p).Options is options)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        RaaSConfig.from_fields(policy=policy, **{name: value})


def test_flat_options_reach_the_chosen_policy_only() -> None:
    config = RaaSConfig.from_fields(policy="streaming", streaming_sinks=2)
    assert config.options == StreamingOptions(sinks=2)
    with pytest.raises(TypeError, match=r"option of policy \('streaming',\)"):
        RaaSConfig.from_fields(policy="h2o", streaming_sinks=2)
    with pytest.raises(TypeError, match="valid"):
        RaaSConfig.from_fields(policy="h2o", sinks=2)
    with pytest.raises(TypeError, match="takes options=StreamingOptions"):
        RaaSConfig(policy="streaming", options=H2OOptions())


def test_streaming_sinks_must_leave_a_window() -> None:
    with pytest.raises(ValueError, match="raise budget to >= 80"):
        RaaSConfig(budget=64, page_size=16, policy="streaming", options=StreamingOptions(sinks=3))


@pytest.mark.parametrize("name, field, fix", [
    ("rkv", "rkv_buffer", "raise budget to >= 96"),  # 4 buffer pages + 2
    ("lazy_eviction", "lazy_window", "raise budget to >= 144"),  # 4 window pages + 4 + 1
])
def test_periodic_compression_needs_room_after_a_checkpoint(name, field, fix) -> None:
    with pytest.raises(ValueError, match=fix):
        RaaSConfig.from_fields(budget=64, page_size=16, policy=name, **{field: 64})


@pytest.mark.parametrize("name", PEERS)
def test_memory_class(name: str) -> None:
    """O(L): an evicting pool holds `budget` tokens whatever the decode length;
    O(N): a keep-all pool holds the prompt and every new token."""
    small = settings_for(name, rkv_buffer=16, lazy_window=16)  # periods that fit 64
    config = RaaSConfig.from_fields(budget=64, page_size=16, policy=name, **small)
    policy = make_policy(config)
    cache = new_layer_cache(config, policy, 1, 2, 8, prompt_tokens=20, max_new_tokens=1000)
    if policy.keeps_all:
        assert cache.capacity == -(-(20 + 1000) // 16) * 16
    else:
        assert cache.capacity == config.budget
