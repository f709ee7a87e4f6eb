"""Bad configuration and bad input fail with errors that name the fix."""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf


@pytest.mark.parametrize("kwargs, error, fix", [
    (dict(budget=100, page_size=16), ValueError, "use 96 or 112"),
    (dict(budget=8, page_size=16), ValueError, "budget >= 16"),
    (dict(policy="nope"), ValueError, "choose one of"),
    (dict(page_size=24, budget=96), ValueError, "use one of (16, 32, 64, 128)"),
    (dict(budget=64.0), TypeError, "must be an int"),
    (dict(importance="vibes"), ValueError, "choose one of"),
    (dict(top_ratio=0.0), ValueError, "(0, 1]"),
    (dict(alpha=2.0), ValueError, "(0, 1)"),
    (dict(score_source="oracle"), ValueError, "choose one of"),
    (dict(dense_layers=-1), ValueError, ">= 0"),
])
def test_config_rejects_bad_values(kwargs, error, fix):
    with pytest.raises(error, match=None) as info:
        rf.RaaSConfig(**kwargs)
    assert fix in str(info.value)


def test_config_is_frozen():
    config = rf.RaaSConfig()
    with pytest.raises(AttributeError):
        config.budget = 2048  # type: ignore[misc]


def _layer(config, batch=1, kv_heads=2, head_dim=16, prompt=20, dtype=torch.float32):
    policy = rf.make_policy(config)
    cache = rf.new_layer_cache(config, policy, batch, kv_heads, head_dim,
                               prompt_tokens=prompt, max_new_tokens=8, dtype=dtype)
    return policy, cache


def test_prompt_leaving_under_two_decode_pages_is_refused():
    config = rf.RaaSConfig(budget=64, page_size=16)
    policy, cache = _layer(config, prompt=40)
    q, kv = torch.randn(1, 4, 40, 16), torch.randn(1, 2, 40, 16)
    with pytest.raises(ValueError, match="raise budget to at least 80"):
        rf.prefill(q, kv, kv, cache, policy)  # 3 of 4 pages


def test_wrong_dtype_is_a_type_error():
    config = rf.RaaSConfig(budget=64, page_size=16)
    with pytest.raises(TypeError, match="cast the model"):
        _layer(config, dtype=torch.float64)


def test_batch_larger_than_allocated_is_refused():
    config = rf.RaaSConfig(budget=64, page_size=16)
    policy, cache = _layer(config, batch=1)
    q, kv = torch.randn(2, 4, 1, 16), torch.randn(2, 2, 1, 16)
    with pytest.raises(ValueError, match="allocate the cache for this batch"):
        rf.decode_step(q, kv, kv, cache, policy, 1)


def test_right_padding_is_refused():
    config = rf.RaaSConfig(budget=64, page_size=16)
    policy, cache = _layer(config, batch=2, prompt=5)
    q, kv = torch.randn(2, 4, 5, 16), torch.randn(2, 2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="padding_side = 'left'"):
        rf.prefill(q, kv, kv, cache, policy, attention_mask=mask)


def test_keep_all_pool_overflow_raises_instead_of_dropping():
    config = rf.RaaSConfig(budget=64, page_size=16, policy="dense")
    policy = rf.make_policy(config)
    cache = rf.new_layer_cache(config, policy, 1, 2, 16, prompt_tokens=16, max_new_tokens=16)
    rf.prefill(torch.randn(1, 2, 16, 16), torch.randn(1, 2, 16, 16),
               torch.randn(1, 2, 16, 16), cache, policy)
    for step in range(1, 17):
        rf.decode_step(torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16),
                       torch.randn(1, 2, 1, 16), cache, policy, step)
    with pytest.raises(RuntimeError, match="larger max_new_tokens"):
        rf.decode_step(torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16),
                       torch.randn(1, 2, 1, 16), cache, policy, 17)


def test_keep_all_policy_needs_max_new_tokens():
    config = rf.RaaSConfig(policy="dense")
    with pytest.raises(ValueError, match="pass max_new_tokens"):
        rf.new_layer_cache(config, rf.make_policy(config), 1, 2, 16, prompt_tokens=16)


def test_to_dict_from_dict_round_trips_through_json():
    import json

    config = rf.RaaSConfig.from_fields(budget=2048, page_size=32, policy="streaming",
                                       top_ratio=0.6, streaming_sinks=2, kv_dtype=None)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["budget"] == 2048 and data["policy"] == "streaming"
    assert data["streaming_sinks"] == 2  # the policy's options by their flat names
    assert rf.RaaSConfig.from_dict(data) == config
    assert rf.RaaSConfig.from_dict({}) == rf.RaaSConfig()  # missing keys take the defaults


def test_from_dict_names_unknown_keys():
    with pytest.raises(TypeError) as info:
        rf.RaaSConfig.from_dict({"budget": 64, "budgt": 64, "pagesize": 16})
    assert "'budgt'" in str(info.value) and "'pagesize'" in str(info.value)


def test_from_dict_validates_values():
    with pytest.raises(ValueError, match="use 96 or 112"):
        rf.RaaSConfig.from_dict({"budget": 100})
