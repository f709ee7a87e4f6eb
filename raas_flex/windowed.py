"""Single-layer functional API of a sliding-window layer: allocate, prefill, decode step.

A sliding-window layer keeps the model's own rule exactly (a query attends itself and the
W - 1 tokens before it) in a ring of W tokens (raas_flex/cache/window.py): O(W) memory,
and no policy runs there, since the window already bounds it. Full-attention layers of the
same model get the RaaS policy (raas_flex.functional).
"""

from __future__ import annotations

import torch

from raas_flex.attention import attend_prompt, device_kernel_options, fold_gqa
from raas_flex.attention import materialised_on_cpu
from raas_flex.attention.logit_mods import check_kernel
from raas_flex.attention.window import attend_ring
from raas_flex.cache import prompt_lengths
from raas_flex.cache.window import WindowCache, allocate_window, append_window
from raas_flex.cache.window import write_window_prompt
from raas_flex.config import RaaSConfig
from raas_flex.functional import fold_sinks_by_kv_head


def new_window_cache(config: RaaSConfig, batch: int, kv_heads: int, head_dim: int,
                     window: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu", softcap: float | None = None,
                     sinks: torch.Tensor | None = None) -> WindowCache:
    """An empty ring of `window` tokens (whole pages of config.page_size); softcap and
    sinks ([Hq]) as in raas_flex.functional.new_layer_cache."""
    check_kernel(config.attention_kernel, softcap is not None, sinks is not None)
    return allocate_window(batch, kv_heads, head_dim, window, config.page_size, dtype,
                           device, softcap=softcap, sinks=fold_sinks_by_kv_head(sinks, kv_heads),
                           kernel_options=device_kernel_options(device, config.kernel_options))


def window_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ring: WindowCache,
                   attention_mask: torch.Tensor | None, scale: float,
                   kernel: str = "flex") -> torch.Tensor:
    """Keep the prompt's last W real tokens; return its windowed causal attention.
    q [B, Hq, T, D]; k, v [B, H, T, D] after RoPE; attention_mask [B, T] left padding."""
    B, _, T, _ = q.shape
    lengths = prompt_lengths(attention_mask, B, T, k.device)
    write_window_prompt(ring, k, v, lengths)
    sinks = None if ring.sinks is None else ring.sinks.reshape(-1)  # [Hq]
    return attend_prompt(q, k, v, lengths, scale, kernel, window=ring.window,
                         softcap=ring.softcap, sinks=sinks)


def window_decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ring: WindowCache,
                       scale: float, kernel: str = "flex") -> torch.Tensor:
    """One token per sequence (q [B, Hq, 1, D], k/v [B, H, 1, D]): write it into the ring,
    attend the window. Branch-free and sync-free, like the paged step. [B, Hq, 1, D]."""
    B, Hq, _, D = q.shape
    append_window(ring, k, v)
    query = materialised_on_cpu(fold_gqa(q, k.shape[1]).to(ring.k.dtype))  # [B, H, G, D]
    out = attend_ring(query, ring, scale, kernel)
    return out.reshape(B, Hq, 1, D).to(q.dtype)
