"""One decode step's attention over a sliding-window ring (cache/window.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raas_flex.attention.decode import flex_with_logit_mods
from raas_flex.attention.logit_mods import check_kernel
from raas_flex.cache.window import WindowCache
from raas_flex.masks import ring_block_mask, ring_token_mask


def attend_ring(query: torch.Tensor, ring: WindowCache, scale: float,
                kernel: str = "flex") -> torch.Tensor:
    """Attention of query [B, H, G, D] (a GQA group folded into rows) over the window the
    ring holds (its current token included). [B, H, G, D]."""
    check_kernel(kernel, ring.softcap is not None, ring.sinks is not None)
    if kernel == "sdpa":
        mask = ring_token_mask(ring.held, ring.capacity)
        return F.scaled_dot_product_attention(query, ring.k, ring.v, attn_mask=mask,
                                              scale=scale)
    block_mask = ring_block_mask(ring.held, query.shape[2], ring.k.shape[1], ring.capacity,
                                 ring.block_size)
    return flex_with_logit_mods(query, ring.k, ring.v, block_mask, scale, ring)
