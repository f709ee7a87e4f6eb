"""Single-layer functional API: allocate, prefill, one decode step, what was attended.

Tests and benchmarks call these directly; the Hugging Face integration calls them per layer.
`decode_step_tensors` is the pure, compile-friendly body; `decode_step` adds input checks
that need the host (shapes, the keep-all overflow flag).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import AuxRequest, flex_attention

from raas_flex.cache import (
    LayerCache, allocate_layer_cache, append_token, open_page_if_needed, prompt_lengths,
    write_prompt,
)
from raas_flex.config import RaaSConfig, check_dtype
from raas_flex.masks import (
    causal_padding_mask, decode_block_mask, listed_block_mask, prefill_block_mask,
    visible_token_mask,
)
from raas_flex.policies import Policy
from raas_flex.policies.raas import RaaSPolicy
from raas_flex.sizing import check_prompt_fits, pool_slots

# kernel_options for the decode flex_attention call. None: the measured default for the
# device (below); set it to tune flex's split-KV decode kernel yourself (bench/NOTES.md).
DECODE_KERNEL_OPTIONS: dict | None = None
# On the H100, three pipeline stages in the split-KV decode kernel made the whole RaaS step
# 1.5x faster at batch 32 (290 -> 193 us, bench/results/decode_latency_h100_quant*.json).
# Measured on sm90 only, so other GPUs keep torch's defaults.
HOPPER_DECODE_OPTIONS = {"num_stages": 3}
# True: on CUDA the default RaaS policy's step runs its bookkeeping as one Triton kernel
# (raas_flex.compile.raas_kernel). Off by default: measured on the H200 (bench/NOTES.md,
# issue 15) the kernel alone took 20.7 us, the whole step 64 us against 37.7 us for the
# generic step below, whose ~13 small Inductor kernels cost less than that one program
# per (sequence, kv head).
RAAS_KERNEL = False
# Filled on the host when a pool is allocated and read while tracing: a compiled step never
# queries the device, it only reads this dict (Dynamo guards on it).
_DEVICE_DECODE_OPTIONS: dict[str, dict | None] = {}


def note_device(device: torch.device | str) -> None:
    """Pick the decode kernel options for `device`'s kind once (at pool allocation)."""
    device = torch.device(device)
    if device.type == "cuda" and "cuda" not in _DEVICE_DECODE_OPTIONS:
        major, _ = torch.cuda.get_device_capability(device)
        _DEVICE_DECODE_OPTIONS["cuda"] = HOPPER_DECODE_OPTIONS if major == 9 else None


def decode_kernel_options(device_type: str) -> dict | None:
    """DECODE_KERNEL_OPTIONS if set, else the measured default for the device kind."""
    if DECODE_KERNEL_OPTIONS is not None:
        return dict(DECODE_KERNEL_OPTIONS)
    options = _DEVICE_DECODE_OPTIONS.get(device_type)
    return None if options is None else dict(options)


def new_layer_cache(config: RaaSConfig, policy: Policy, batch: int, kv_heads: int,
                    head_dim: int, prompt_tokens: int, max_new_tokens: int | None = None,
                    dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> LayerCache:
    """An empty pool for one layer, sized for `policy` (see raas_flex.sizing)."""
    slots = pool_slots(config, prompt_tokens, max_new_tokens, keep_all=policy.keeps_all)
    note_device(device)
    cache = allocate_layer_cache(batch, kv_heads, head_dim, slots, config.page_size,
                                 dtype, device, config.kv_storage_dtype)
    policy.init_state(cache)
    return cache


def fold_gqa(q: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[B, Hq, 1, D] -> [B, kv_heads, group, D]: a GQA group's queries become query rows,
    so a per-kv-head block mask keeps flex on its fast decode kernel (flex-notes.md)."""
    B, Hq, _, D = q.shape
    return q.reshape(B, kv_heads, Hq // kv_heads, D)


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
    scale, k, v = _scale(scale, D), k.to(q.dtype), v.to(q.dtype)
    gqa = Hq != k.shape[1]
    if policy.config.attention_kernel == "sdpa":
        mask = causal_padding_mask(lengths, T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                              enable_gqa=gqa)
    block_mask = prefill_block_mask(lengths, T)
    return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)


def decode_step_tensors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        cache: LayerCache, policy: Policy, step: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """One decode step, branch-free and sync-free. q [B, Hq, 1, D]; k, v [B, H, 1, D]."""
    if uses_raas_kernel(cache, policy):
        from raas_flex.compile.raas_kernel import raas_decode_step
        return raas_decode_step(q, k, v, cache, policy, step, scale)
    B, Hq, _, D = q.shape
    H = k.shape[1]
    opened = open_page_if_needed(cache, policy.eviction_key(cache, step), step)
    policy.on_open(cache, opened, step)
    append_token(cache, k, v)
    compute = q.dtype if cache.quantized else cache.k.dtype  # 8-bit K/V meet q's dtype
    query = _materialised_on_cpu(fold_gqa(q, H).to(compute))  # [B, H, G, D]
    scores = policy.score(query, cache, scale)
    policy.update(cache, scores, step)
    visible, blocks = policy.select_blocks(cache, scores, step)
    slots = torch.arange(cache.num_slots, device=q.device).expand_as(cache.visible)
    cache.visible.scatter_(-1, slots, visible.to(torch.int32))  # in place: read by mask_mod
    out = attend_visible(query, cache, scale, policy.config.attention_kernel, blocks)
    return out.reshape(B, Hq, 1, D).to(q.dtype)


def uses_raas_kernel(cache: LayerCache, policy: Policy) -> bool:
    """Whether decode_step_tensors runs the CUDA RaaS kernel step for this layer: the
    default policy (raas, top_ratio importance, bound scores, flex attention) on CUDA."""
    c = policy.config
    return (RAAS_KERNEL and cache.k.device.type == "cuda" and type(policy) is RaaSPolicy
            and c.importance == "top_ratio" and c.score_source == "bound"
            and c.attention_kernel == "flex")


def attend_visible(query: torch.Tensor, cache: LayerCache, scale: float,
                   kernel: str = "flex", blocks: tuple | None = None) -> torch.Tensor:
    """Attention of query [B, H, G, D] over the pool tokens `cache.visible` selects.

    blocks: (count, index), the pages the kernel reads (Policy.attend_blocks; they must
    include every page with visible > 0), or None to compact `visible` into block lists.
    """
    if cache.quantized:
        if kernel != "flex":
            raise ValueError("a quantized pool is dequantized inside FlexAttention only; "
                             'use attention_kernel="flex".')
        return _attend_quantized(query, cache, scale, blocks)
    if kernel == "sdpa":
        mask = visible_token_mask(cache.visible, cache.page_size)
        return F.scaled_dot_product_attention(query, cache.k, cache.v, attn_mask=mask,
                                              scale=scale)
    block_mask = _decode_mask(cache, query.shape[2], blocks)
    return flex_attention(query, cache.k, cache.v, block_mask=block_mask, scale=scale,
                          kernel_options=decode_kernel_options(query.device.type))


def _decode_mask(cache: LayerCache, rows: int, blocks: tuple | None):
    if blocks is None:
        return decode_block_mask(cache.visible, cache.page_size, rows)
    return listed_block_mask(cache.visible, cache.page_size, rows, *blocks)


def _attend_quantized(query: torch.Tensor, cache: LayerCache, scale: float,
                      blocks: tuple | None = None) -> torch.Tensor:
    """attend_visible over 8-bit K/V codes, dequantized inside one flex call.

    K: the score_mod multiplies each score q·k̂ by its token's k_scale. V: flex has no
    value hook, so the query rows run twice. Rows [0, G) also add log s_j (V's scale) to
    the score, so they return out' = Σ w_j s_j v̂_j / Σ w_j s_j and lse' = log Σ w_j s_j
    with w_j = exp(score_j); rows [G, 2G) return the true lse = log Σ w_j. Then
    out = out' · exp(lse' - lse) = Σ w_j s_j v̂_j / Σ w_j, exact. The decode kernel pads
    query rows to 16, so 2G ≤ 16 costs no extra MMA work (issue6-quantized-pool.md §3).
    Returns [B, H, G, D] float32.
    """
    G = query.shape[2]
    k_scale, v_logscale = cache.k_scale, cache.v_logscale

    def dequantize_scores(score, b, h, q_idx, kv_idx):
        fold = torch.where(q_idx < G, v_logscale[b, h, kv_idx], 0.0)
        return score * k_scale[b, h, kv_idx] + fold

    block_mask = _decode_mask(cache, 2 * G, blocks)
    out, aux = flex_attention(torch.cat([query, query], dim=2), cache.k, cache.v,
                              score_mod=dequantize_scores, block_mask=block_mask,
                              scale=scale,
                              kernel_options=decode_kernel_options(query.device.type),
                              return_aux=AuxRequest(lse=True))
    lse = aux.lse  # [B, H, 2G] natural log
    return out[:, :, :G].float() * torch.exp(lse[:, :, :G] - lse[:, :, G:])[..., None]


def _materialised_on_cpu(query: torch.Tensor) -> torch.Tensor:
    """Work around a torch 2.13 CPU Inductor bug: when the folded query is a view of the
    [B, Hq, 1, D] input, the compiled CPU flex kernel over pools of 1024+ tokens read it
    wrongly (garbage up to 1e37; tests/test_core_compiled.py guards it). An arithmetic
    copy makes Inductor materialise a fresh buffer; a clone() did not. GPU is unaffected.
    """
    return query * 1.0 if query.device.type == "cpu" else query


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
    out = decode_step_tensors(q, k, v, cache, policy, step, _scale(scale, q.shape[-1]))
    raise_if_overflowed(cache)
    return out


def raise_if_overflowed(cache: LayerCache) -> None:
    """Host check of the sticky flag a keep-all pool raises when it runs out of slots."""
    if bool(cache.overflow):
        raise RuntimeError(
            f"the keep-all pool of {cache.capacity} tokens is full; allocate it with a "
            "larger max_new_tokens (its tokens were not evicted, the newest was dropped)."
        )


def attended_positions(cache: LayerCache, num_positions: int) -> torch.Tensor:
    """Logical positions the last step attended: [B, H, num_positions] bool."""
    return _logical_positions(cache, cache.visible, num_positions)


def held_positions(cache: LayerCache, num_positions: int) -> torch.Tensor:
    """Logical positions held in the pool (attended or not): [B, H, num_positions] bool."""
    return _logical_positions(cache, cache.fill, num_positions)


def _logical_positions(cache: LayerCache, tokens: torch.Tensor,
                       num_positions: int) -> torch.Tensor:
    """Mark the first `tokens` [B, H, S] of each slot's logical page: [B, H, N] bool."""
    B, H, S = tokens.shape
    P = cache.page_size
    offset = torch.arange(P, device=tokens.device)
    position = cache.page_id[..., None] * P + offset  # [B, H, S, P]
    seen = (offset < tokens[..., None]) & (cache.page_id[..., None] >= 0)
    out = torch.zeros(B, H, num_positions + 1, dtype=torch.bool, device=seen.device)
    target = torch.where(seen, position, num_positions).clamp(max=num_positions)
    out.view(B * H, -1).scatter_(1, target.view(B * H, -1), True)
    return out[..., :num_positions]


def _scale(scale: float | None, head_dim: int) -> float:
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
