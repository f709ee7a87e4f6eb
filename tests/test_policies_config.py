"""Peer parameters: defaults from the sources, bad values refused with the fix named, and
each policy's memory class (pool sized by the budget, or by prompt + max_new_tokens)."""

from __future__ import annotations

import sys

import pytest

from raas_flex import RaaSConfig, available_policies, make_policy, new_layer_cache
from raas_flex.policies import policy_class

PEERS = ("quest", "h2o", "streaming", "recycled", "random", "hsr", "raas_hsr")


def test_peers_are_registered_with_documented_defaults() -> None:
    assert set(PEERS) <= set(available_policies())
    config = RaaSConfig()
    assert config.h2o_recent_ratio == 0.5  # H2O's 1:1 heavy:recent split
    assert config.streaming_sinks == 1  # one page holds StreamingLLM's 4 sink tokens
    assert config.recycled_period == 10
    assert config.recycled_top_pages == config.budget // config.page_size
    assert RaaSConfig(recycled_pages=3).recycled_top_pages == 3
    for name in PEERS:  # every module states its source's rule and its deviations
        module = sys.modules[policy_class(name).__module__]
        assert "Deviation" in module.__doc__, name


@pytest.mark.parametrize("field, value, error, words", [
    ("h2o_recent_ratio", 0.0, ValueError, "h2o_recent_ratio"),
    ("h2o_recent_ratio", 1.0, ValueError, "1:1"),
    ("streaming_sinks", -1, ValueError, ">= 0"),
    ("streaming_sinks", 1.5, TypeError, "int"),
    ("recycled_period", 0, ValueError, ">= 1"),
    ("recycled_pages", 0, ValueError, "None"),
    ("recycled_pages", True, TypeError, "int"),
    ("hsr_epsilon", 0.0, ValueError, "(0, 1)"),
    ("hsr_epsilon", 1.0, ValueError, "(0, 1)"),
    ("random_seed", -3, ValueError, ">= 0"),
])
def test_bad_peer_parameters_are_refused(field, value, error, words) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        RaaSConfig(**{field: value})


def test_streaming_sinks_must_leave_a_window() -> None:
    with pytest.raises(ValueError, match="raise budget to >= 80"):
        RaaSConfig(budget=64, page_size=16, policy="streaming", streaming_sinks=3)
    RaaSConfig(budget=64, page_size=16, policy="h2o", streaming_sinks=3)  # not streaming


@pytest.mark.parametrize("name", PEERS)
def test_memory_class(name: str) -> None:
    """O(L): an evicting pool holds `budget` tokens whatever the decode length;
    O(N): a keep-all pool holds the prompt and every new token."""
    config = RaaSConfig(budget=64, page_size=16, policy=name)
    policy = make_policy(config)
    cache = new_layer_cache(config, policy, 1, 2, 8, prompt_tokens=20, max_new_tokens=1000)
    if policy.keeps_all:
        assert cache.capacity == -(-(20 + 1000) // 16) * 16
    else:
        assert cache.capacity == config.budget
