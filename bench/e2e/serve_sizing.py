"""How many sequences fit a KV-memory budget, per method: the arithmetic of bench/e2e/serve.py.

Dense reserves each sequence's full-length cache (prompt + decode tokens, rounded up to the
flex KV block); RaaS holds its L-token pool per layer plus the pool's page metadata (min/max
key summaries, timestamps, ...), measured from a real one-sequence pool, not estimated.
"""

from __future__ import annotations

import torch

from bench.e2e.dense_live import KV_BLOCK
from bench.e2e.models import kv_bytes_per_token

GIB = 2 ** 30


def dense_capacity(prompt_tokens: int, decode_tokens: int) -> int:
    """Slots a dense cache reserves per sequence: prompt + decode, rounded up to KV_BLOCK."""
    return -(-(prompt_tokens + decode_tokens) // KV_BLOCK) * KV_BLOCK


def dense_bytes_per_seq(model_config, capacity: int) -> int:
    return kv_bytes_per_token(model_config) * capacity


def raas_bytes_per_seq(model_config, raas_config) -> int:
    """K/V + metadata bytes of one sequence's RaaS cache over all layers, read from a
    one-sequence pool allocated on the CPU (RaaSLayer.nbytes: pool, metadata, counters)."""
    from raas_flex.hf.cache import RaaSLayer
    layer = RaaSLayer(raas_config, dense=False, max_cache_len=None)
    key = torch.zeros(1, model_config.num_key_value_heads, raas_config.page_size,
                      model_config.head_dim, dtype=torch.bfloat16)
    layer.allocate(key, None)
    return sum(layer.nbytes()) * model_config.num_hidden_layers


def batch_that_fits(budget_bytes: int, bytes_per_seq: int) -> int:
    """Sequences whose caches fit the budget; raises if not even one does."""
    if bytes_per_seq <= 0:
        raise ValueError(f"bytes_per_seq must be positive, got {bytes_per_seq}.")
    batch = budget_bytes // bytes_per_seq
    if batch < 1:
        raise ValueError(f"one sequence needs {bytes_per_seq / GIB:.2f} GiB of KV cache, more "
                         f"than the {budget_bytes / GIB:.2f} GiB budget; raise --kv-budget-gib "
                         "or shorten the decode.")
    return int(batch)
