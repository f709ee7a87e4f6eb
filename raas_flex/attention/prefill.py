"""A prompt's causal attention, padding excluded, through flex or SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from raas_flex.masks import causal_padding_mask, prefill_block_mask


def attend_prompt(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                  scale: float, kernel: str = "flex") -> torch.Tensor:
    """q [B, Hq, T, D], k/v [B, H, T, D] left-padded to `lengths` [B]: [B, Hq, T, D]."""
    T = q.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if kernel == "sdpa":
        mask = causal_padding_mask(lengths, T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                              enable_gqa=gqa)
    block_mask = prefill_block_mask(lengths, T)
    return flex_attention(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=gqa)
