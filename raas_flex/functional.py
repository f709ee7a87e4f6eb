"""Single-layer functional API: allocate, prefill, one decode step.

Tests and benchmarks call these directly; the Hugging Face integration calls them per layer.
`decode_step_tensors` is the pure, compile-friendly body; `decode_step` adds input checks
that need the host (shapes, the keep-all overflow flag). The kernel calls live in
raas_flex/attention/, what was attended in raas_flex/positions.py.
"""

from __future__ import annotations

import math

import torch

from raas_flex.attention import (
    attend_prompt, attend_visible, device_block_pages, device_kernel_options, fold_gqa,
    materialised_on_cpu,
)
from raas_flex.attention.logit_mods import check_kernel
from raas_flex.cache import (
    LayerCache, allocate_layer_cache, check_dtype, open_and_append, prompt_lengths,
    write_prompt,
)
from raas_flex.config import RaaSConfig
from raas_flex.policies import Policy
from raas_flex.policies.base import Blocks
from raas_flex.sizing import check_prompt_fits, pool_slots

def new_layer_cache(config: RaaSConfig, policy: Policy, batch: int, kv_heads: int,
                    head_dim: int, prompt_tokens: int, max_new_tokens: int | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                    softcap: float | None = None,
                    sinks: torch.Tensor | None = None) -> LayerCache:
    """An empty pool for one layer, sized for `policy` (see raas_flex.sizing).

    softcap, sinks ([Hq] learned sink logits): the layer's own logit rules
    (raas_flex/attention/logit_mods.py), applied by its attention and page scores."""
    check_logit_mods(config, policy, softcap is not None, sinks is not None)
    slots = pool_slots(config, prompt_tokens, max_new_tokens, keep_all=policy.keeps_all)
    cache = allocate_layer_cache(batch, kv_heads, head_dim, slots, config.page_size,
                                 dtype, device, config.kv_storage_dtype,
                                 device_kernel_options(device, config.kernel_options),
                                 device_block_pages(device, config.page_size,
                                                    config.kernel_block_pages))
    cache.softcap = softcap
    cache.sinks = fold_sinks_by_kv_head(sinks, kv_heads)
    policy.init_state(cache)
    return cache


def check_logit_mods(config: RaaSConfig, policy: Policy, softcap: bool, sinks: bool) -> None:
    """Refuse a kernel or policy that cannot honour the layer's softcap / sinks (whether
    it has them)."""
    check_kernel(config.attention_kernel, softcap, sinks)
    if (softcap or sinks) and not policy.Options.follows_logit_mods:
        raise ValueError(f"policy {policy.name!r} certifies its dropped mass for plain "
                         "q·k·scale logits; this model softcaps its logits or has attention "
                         "sinks. Use another policy (e.g. raas or quest).")


def fold_sinks_by_kv_head(sinks: torch.Tensor | None, kv_heads: int) -> torch.Tensor | None:
    """[Hq] sink logits -> [H, G] float32, matching fold_gqa's query rows (head h·G + g)."""
    return None if sinks is None else sinks.detach().float().reshape(kv_heads, -1)


def prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache,
            policy: Policy, attention_mask: torch.Tensor | None = None,
            scale: float | None = None) -> torch.Tensor:
    """Write a prompt into an empty cache and return its causal attention [B, Hq, T, D].

    q: [B, Hq, T, D]; k, v: [B, H, T, D] after RoPE; attention_mask: [B, T] left padding.
    """
    B, Hq, T, D = q.shape
    _check_layer_inputs(q, k, v, cache)
    if bool((cache.length > 0).any()):
        raise ValueError("prefill needs an empty cache; continue a sequence with decode_step.")
    lengths = prompt_lengths(attention_mask, B, T, k.device)
    longest = int(lengths.max())
    if longest > cache.capacity:
        raise ValueError(
            f"a {longest}-token prompt does not fit the pool's {cache.capacity} tokens; "
            "allocate the cache with prompt_tokens >= the longest prompt."
        )
    if not policy.keeps_all:
        check_prompt_fits(policy.config, longest)
    write_prompt(cache, k, v, lengths, pin=policy.config.keep_prefill)
    policy.on_prefill(q, cache, lengths)
    sinks = None if cache.sinks is None else cache.sinks.reshape(-1)  # [Hq]
    return attend_prompt(q, k.to(q.dtype), v.to(q.dtype), lengths, scale_or_default(scale, D),
                         policy.config.attention_kernel, softcap=cache.softcap, sinks=sinks)


def decode_step_tensors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        cache: LayerCache, policy: Policy, step: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """One decode step, branch-free and sync-free. q [B, Hq, 1, D]; k, v [B, H, 1, D]."""
    B, Hq, _, D = q.shape
    H = k.shape[1]
    compute = q.dtype if cache.quantized else cache.k.dtype  # 8-bit K/V meet q's dtype
    query = materialised_on_cpu(fold_gqa(q, H).to(compute))  # [B, H, G, D]
    blocks = policy.fused_step(query, k, v, cache, step, scale)
    if blocks is None:
        blocks = staged_bookkeeping(query, k, v, cache, policy, step, scale)
    out = attend_visible(query, cache, scale, policy.config.attention_kernel, blocks)
    return out.reshape(B, Hq, 1, D).to(q.dtype)


def staged_bookkeeping(query: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       cache: LayerCache, policy: Policy, step: torch.Tensor,
                       scale: float) -> Blocks:
    """Open, append, score, update, select and write cache.visible stage by stage (the
    policy's hooks); returns the block list to attend. query [B, H, G, D]."""
    opened = open_and_append(cache, policy.eviction_key(cache, step), k, v, step)
    policy.on_open(cache, opened, step)
    scores = policy.score(query, cache, scale)
    policy.update(cache, scores, step)
    visible, blocks = policy.select_blocks(cache, scores, step)
    if visible is not cache.visible:  # quest's select writes cache.visible itself
        slots = torch.arange(cache.num_slots, device=query.device).expand_as(cache.visible)
        # In place through scatter_, not copy_: after a copy_ Inductor hands flex the
        # computed tensor instead of the buffer, which its CPU kernel cannot lower
        # (NoValidChoicesError).
        cache.visible.scatter_(-1, slots, visible.to(torch.int32))  # read by mask_mod
    return blocks


def decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: LayerCache,
                policy: Policy, step: int | torch.Tensor,
                scale: float | None = None) -> torch.Tensor:
    """One checked decode step: append k, v, update the policy, attend. [B, Hq, 1, D]."""
    _check_layer_inputs(q, k, v, cache)
    if q.shape[2] != 1:
        raise ValueError(
            f"decode_step takes one new token per sequence, got {q.shape[2]}; "
            "feed longer chunks token by token."
        )
    step = torch.as_tensor(step, dtype=torch.int64, device=q.device)
    out = decode_step_tensors(q, k, v, cache, policy, step, scale_or_default(scale, q.shape[-1]))
    raise_if_overflowed(cache)
    return out


def raise_if_overflowed(cache: LayerCache) -> None:
    """Host check of the sticky flag a keep-all pool raises when it runs out of slots."""
    if bool(cache.overflow):
        raise RuntimeError(
            f"the keep-all pool of {cache.capacity} tokens is full; allocate it with a "
            "larger max_new_tokens (its tokens were not evicted, the newest was dropped)."
        )


def scale_or_default(scale: float | None, head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def _check_layer_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        cache: LayerCache) -> None:
    check_dtype(q.dtype)
    B, H, _, D = cache.k.shape
    if k.shape[0] != B or k.shape[1] != H or k.shape[3] != D or k.shape != v.shape:
        raise ValueError(
            f"k/v shapes {tuple(k.shape)}/{tuple(v.shape)} do not match the cache "
            f"[batch={B}, kv_heads={H}, *, head_dim={D}]; allocate the cache for this batch."
        )
    if q.shape[0] != B or q.shape[-1] != D or q.shape[1] % H or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"q shape {tuple(q.shape)} does not fit k {tuple(k.shape)}: expected "
            f"[{B}, a multiple of {H} heads, tokens, {D}]."
        )
    if q.device != cache.k.device or k.device != cache.k.device:
        raise ValueError(f"inputs on {q.device}/{k.device}, cache on {cache.k.device}; "
                         "move them to one device.")
