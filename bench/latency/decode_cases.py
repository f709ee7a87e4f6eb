"""The callables bench/latency/decode_attention.py times: one decode step of one layer each.

Every builder returns (fn, kv_bytes): fn() runs the step on static tensors (so a CUDA graph
can capture it) and kv_bytes is what the step must at least read of K and V.
Llama-3-8B-like shapes: 32 query heads, 8 kv heads, head_dim 128.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import raas_flex as rf
from raas_flex.compile import compile_decode_step
from raas_flex.compile.step import DECODE_INDUCTOR_CONFIG
from raas_flex.attention import attend_visible
from raas_flex.masks import listed_block_mask, pool_blocks

from bench.latency.decode_state import seen_cache

Q_HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
GROUP = Q_HEADS // KV_HEADS
SCALE = HEAD_DIM ** -0.5
KEEP_ALL_MARGIN = 16384  # free tokens after N in a keep-all pool (replays append)
Case = tuple[Callable[[], torch.Tensor], int]

# Compiled as the step is (its Inductor config), so flex alone and dense flex get the same
# reduction configs as flex inside the step.
_COMPILE = dict(fullgraph=True, dynamic=False, options=DECODE_INDUCTOR_CONFIG)
_flex = torch.compile(flex_attention, **_COMPILE)
_attend = torch.compile(attend_visible, **_COMPILE)


@torch.compile(**_COMPILE)
def _write_then_flex(query, k_new, v_new, k_pool, v_pool, token, block_mask, kernel_options):
    """The token's K/V [B, H, 1, D] written at pool position `token` [1], then flex."""
    k_pool.index_copy_(2, token, k_new)
    v_pool.index_copy_(2, token, v_new)
    return flex_attention(query, k_pool, v_pool, block_mask=block_mask, scale=SCALE,
                          kernel_options=kernel_options)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device="cuda").to(torch.bfloat16)


def kv_bytes(batch: int, tokens: int, kv_dtype: str | None = None) -> int:
    """Bytes of K and V the step must read: bf16, or 8-bit codes plus a fp32 scale each."""
    per_token = rf.RaaSConfig(kv_dtype=kv_dtype).kv_bytes_per_token(HEAD_DIM, torch.bfloat16)
    return batch * KV_HEADS * tokens * per_token


def policy_step(name: str, n: int, budget: int, page: int, batch: int,
                gen: torch.Generator, kv_dtype: str | None = None,
                kernel_options: dict | None = None,
                block_pages: int | None = None) -> tuple[Case, object]:
    """The full compiled step (cache manager + flex) of policy `name`, over a pool stored
    as kv_dtype (None: bf16); also returns the cache so the caller can time flex alone.
    kernel_options, block_pages: the decode flex call's (None: the device's default)."""
    config = rf.RaaSConfig(budget=budget, page_size=page, policy=name, kv_dtype=kv_dtype,
                           kernel_options=kernel_options, kernel_block_pages=block_pages)
    policy = rf.make_policy(config)
    cache, step = seen_cache(policy, batch, KV_HEADS, HEAD_DIM, n, KEEP_ALL_MARGIN,
                             torch.bfloat16, "cuda", gen)
    q, k, v = _randn(gen, batch, Q_HEADS, 1, HEAD_DIM), _randn(
        gen, batch, KV_HEADS, 1, HEAD_DIM), _randn(gen, batch, KV_HEADS, 1, HEAD_DIM)
    compiled = compile_decode_step(None)

    def run() -> torch.Tensor:
        # Each replay appends one token (pages fill, open and evict as in a real decode).
        # The step counter stays fixed: it is one per model step, not per layer, and the
        # branch-free step costs the same whatever its value.
        return compiled(q, k, v, cache, policy, step, SCALE)

    tokens = n if policy.keeps_all else cache.capacity
    return (run, kv_bytes(batch, tokens, kv_dtype)), cache


def attend_only(cache, batch: int, gen: torch.Generator, kv_dtype: str | None,
                kernel_options: dict | None = None) -> Case:
    """The step's attention alone, compiled, in the step's layout (an evicting pool listed
    whole in its kernel blocks, `visible` as the mask_mod) + flex (+ for a quantized pool
    the in-kernel dequantization and the V-scale fold). The attend rows of
    decode_latency_h200_quant24b predate this: they compacted `visible` into page blocks."""
    query = _randn(gen, batch, KV_HEADS, GROUP, HEAD_DIM)
    tokens = int(cache.visible.sum()) // (batch * KV_HEADS)
    def attend() -> torch.Tensor:
        return _attend(query, cache, SCALE, "flex", cache.every_slot)

    if kernel_options is None:
        return attend, kv_bytes(batch, tokens, kv_dtype)

    def attend_with_options() -> torch.Tensor:
        # The options are the pool's, read while tracing; Dynamo guards on them, so they
        # stay set around every call and each setting gets its own graph.
        base = cache.kernel_options
        cache.kernel_options = {**(base or {}), **kernel_options}
        try:
            return attend()
        finally:
            cache.kernel_options = base

    return attend_with_options, kv_bytes(batch, tokens, kv_dtype)


def flex_over_pool(cache, batch: int, gen: torch.Generator,
                   kernel_options: dict | None = None, block_pages: int | None = None,
                   query: torch.Tensor | None = None) -> Case:
    """flex_attention alone over an evicting policy's pool, with the mask its step uses:
    the whole pool listed (in the pool's kernel blocks, or `block_pages` pages each),
    `visible` as the mask_mod."""
    query = _randn(gen, batch, KV_HEADS, GROUP, HEAD_DIM) if query is None else query
    blocks = cache.every_slot if block_pages is None else pool_blocks(
        cache.visible, None, block_pages)
    mask = listed_block_mask(cache.visible, cache.page_size, GROUP, *blocks)
    tokens = int(cache.visible.sum()) // (batch * KV_HEADS)
    return (lambda: _flex(query, cache.k, cache.v, block_mask=mask, scale=SCALE,
                          kernel_options=kernel_options), kv_bytes(batch, tokens))


def write_then_flex_over_pool(cache, batch: int, gen: torch.Generator,
                              kernel_options: dict | None = None) -> Case:
    """The least a step over an evicting pool can do with FlexAttention: write the new
    token's K/V into the pool (one kernel, as the step's write must come before the
    attention reads the pool), then flex over the pool as flex_over_pool does. No scores,
    no eviction: a floor under every policy's step, not a step."""
    query = _randn(gen, batch, KV_HEADS, GROUP, HEAD_DIM)
    k_new = _randn(gen, batch, KV_HEADS, 1, HEAD_DIM)
    v_new = _randn(gen, batch, KV_HEADS, 1, HEAD_DIM)
    token = torch.tensor([cache.k.shape[2] - 1], device="cuda")  # the last slot's last token
    mask = listed_block_mask(cache.visible, cache.page_size, GROUP, *cache.every_slot)
    tokens = int(cache.visible.sum()) // (batch * KV_HEADS)
    return (lambda: _write_then_flex(query, k_new, v_new, cache.k, cache.v, token, mask,
                                     kernel_options), kv_bytes(batch, tokens))


def sdpa_dense(n: int, batch: int, gen: torch.Generator) -> Case:
    """Dense SDPA over N tokens, FlashAttention backend, GQA folded into query rows."""
    query = _randn(gen, batch, KV_HEADS, GROUP, HEAD_DIM)
    k, v = _randn(gen, batch, KV_HEADS, n, HEAD_DIM), _randn(gen, batch, KV_HEADS, n, HEAD_DIM)

    def run() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(query, k, v, scale=SCALE)

    return run, kv_bytes(batch, n)


def flex_dense(n: int, batch: int, gen: torch.Generator) -> Case:
    """Compiled flex over N tokens with an explicit all-full block mask (per kv head
    broadcast, GQA folded), i.e. the dense cache done the flex way."""
    query = _randn(gen, batch, KV_HEADS, GROUP, HEAD_DIM)
    k, v = _randn(gen, batch, KV_HEADS, n, HEAD_DIM), _randn(gen, batch, KV_HEADS, n, HEAD_DIM)
    mask = create_block_mask(lambda b, h, q_idx, kv_idx: kv_idx >= 0, None, None, GROUP, n,
                             device="cuda", BLOCK_SIZE=128)
    return (lambda: _flex(query, k, v, block_mask=mask, scale=SCALE), kv_bytes(batch, n))
