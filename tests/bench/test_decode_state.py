"""bench/decode_state.seen_cache: the benchmark's 'has decoded N tokens' pool, quantized pools
included (real codes and scales, summaries that bound the stored keys), on the CPU."""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from bench.latency.decode_state import seen_cache
from raas_flex.cache.quant import dequantize


@pytest.mark.parametrize("kv_dtype", [None, "int8", "float8_e4m3fn"])
def test_seen_cache_holds_real_codes_and_bounding_summaries(kv_dtype):
    config = rf.RaaSConfig(budget=128, page_size=16, kv_dtype=kv_dtype)
    policy = rf.make_policy(config)
    gen = torch.Generator().manual_seed(0)
    cache, step = seen_cache(policy, 1, 2, 32, 512, 0, torch.bfloat16, "cpu", gen)
    assert int(step) == 512 - 16
    assert cache.k.dtype == (config.kv_storage_dtype or torch.bfloat16)
    keys = dequantize(cache.k, cache.k_scale) if cache.quantized else cache.k.float()
    if cache.quantized:  # codes span the format, not just a few small integers
        assert cache.k.float().abs().amax() > (100 if kv_dtype == "int8" else 400)
        assert torch.isfinite(cache.v_logscale).all()
    pages = keys.view(1, 2, cache.num_slots, 16, 32)
    live = cache.page_id >= 0
    # The summaries come from the exact keys; stored keys sit within the format's rounding:
    # half an int8 step (scale/2), or 2^-4 relative for e4m3.
    slack = 0.0
    if kv_dtype == "int8":
        slack = float(cache.k_scale.amax()) / 2
    elif kv_dtype is not None:
        slack = 2 ** -4 * float(keys.abs().amax())
    assert (pages.amin(3)[live] >= cache.kmin[live] - slack).all()
    assert (pages.amax(3)[live] <= cache.kmax[live] + slack).all()
