"""A layer cache that has 'decoded' N tokens, built directly (no N-step warm-up).

An evicting policy's pool holds L tokens whatever N is: slot 0 holds the pinned prompt
page, the others a spread of older pages ending with the newest. A keep-all policy's pool
holds all N tokens plus `margin` free tokens, so that benchmark replays (one decoded token
each) do not overflow it. Either way the next step opens a page (N is a multiple of P), so
the first replay already evicts.
"""

from __future__ import annotations

import torch

import raas_flex as rf
from raas_flex.cache import FREE, LayerCache
from raas_flex.cache.append import store_tokens, summary_keys


def seen_cache(policy, batch: int, kv_heads: int, head_dim: int, n_seen: int,
               margin: int, dtype: torch.dtype, device: str,
               gen: torch.Generator) -> tuple[LayerCache, torch.Tensor]:
    """(cache, step) for a sequence that has seen `n_seen` tokens; step is 0-d int64."""
    P = policy.config.page_size
    if n_seen % P:
        raise ValueError(f"n_seen={n_seen} must be a multiple of page_size={P}.")
    cache = rf.new_layer_cache(policy.config, policy, batch, kv_heads, head_dim,
                               prompt_tokens=P, max_new_tokens=n_seen + margin,
                               dtype=dtype, device=device)
    S, pages = cache.num_slots, n_seen // P
    shape = (batch, kv_heads, S)
    if policy.keeps_all:
        held = torch.arange(S, device=device).expand(shape)
        held = torch.where(held < pages, held, FREE)
    else:
        if pages < S:
            raise ValueError(f"n_seen={n_seen} is below the budget; use n_seen >= {S * P}.")
        # slot 0: prompt page 0; slots 1..S-2: distinct random middle pages; S-1: newest.
        middle = torch.rand(batch * kv_heads, max(pages - 2, 1), generator=gen,
                            device=device).argsort(-1)[:, : S - 2] + 1
        middle = middle.sort(-1).values.view(batch, kv_heads, S - 2)
        first = torch.zeros(batch, kv_heads, 1, dtype=torch.int64, device=device)
        last = torch.full_like(first, pages - 1)
        held = torch.cat([first, middle, last], -1)
    live = held != FREE
    keys = _fill_kv(cache, dtype, gen).view(batch, kv_heads, S, P, head_dim)
    cache.kmin.copy_(torch.where(live[..., None], keys.amin(3), float("inf")))
    cache.kmax.copy_(torch.where(live[..., None], keys.amax(3), float("-inf")))
    cache.page_id.copy_(held)
    cache.fill.copy_(torch.where(live, P, 0).to(torch.int32))
    cache.visible.copy_(cache.fill)
    cache.pinned.copy_((held == 0) & policy.config.keep_prefill)
    step = n_seen - P
    stamps = torch.randint(0, step + 1, shape, generator=gen, device=device)
    cache.timestamp.copy_(torch.where(live, stamps, 0))
    cache.current.copy_(held.argmax(-1))
    cache.length.fill_(n_seen)
    return cache, torch.tensor(step, dtype=torch.int64, device=device)


def decode_inputs(batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One decode step's random q [B, 32, 1, 128] and k, v [B, 8, 1, 128] (Llama-3-8B heads),
    bf16 on CUDA, drawn from `gen` so a run's steps are reproducible."""
    q = torch.randn(batch, 32, 1, 128, device="cuda", generator=gen).bfloat16()
    k = torch.randn(batch, 8, 1, 128, device="cuda", generator=gen).bfloat16()
    v = torch.randn(batch, 8, 1, 128, device="cuda", generator=gen).bfloat16()
    return q, k, v


def _fill_kv(cache: LayerCache, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Random K/V written as a decode would write them (a quantized pool gets real codes and
    scales); returns the float32 keys [B, H, S*P, D] the page summaries bound."""
    k = torch.randn(cache.k.shape, generator=gen, device=cache.k.device).to(dtype)
    v = torch.randn(cache.v.shape, generator=gen, device=cache.k.device).to(dtype)
    store_tokens(cache, (slice(None),) * 3, k, v)
    return summary_keys(cache, k)
