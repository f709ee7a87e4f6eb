"""A prompt's causal attention, padding excluded, through flex or SDPA; optionally within
a sliding window, with the model's softcap and sinks (attention/logit_mods.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import AuxRequest, flex_attention

from raas_flex.attention.logit_mods import check_kernel, fold_sinks, softcap_score_mod
from raas_flex.masks import causal_padding_mask, prefill_block_mask


def attend_prompt(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                  scale: float, kernel: str = "flex", window: int | None = None,
                  softcap: float | None = None,
                  sinks: torch.Tensor | None = None) -> torch.Tensor:
    """q [B, Hq, T, D], k/v [B, H, T, D] left-padded to `lengths` [B]: [B, Hq, T, D].

    window: a query attends itself and the window - 1 tokens before it; softcap: tanh cap
    on the logits; sinks: [Hq] learned sink logits."""
    T = q.shape[2]
    gqa = q.shape[1] != k.shape[1]
    check_kernel(kernel, softcap is not None, sinks is not None)
    if kernel == "sdpa":
        mask = causal_padding_mask(lengths, T, window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                              enable_gqa=gqa)
    block_mask = prefill_block_mask(lengths, T, window)
    score_mod = None if softcap is None else softcap_score_mod(softcap)
    if sinks is None:
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask,
                              scale=scale, enable_gqa=gqa)
    out, aux = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask,
                              scale=scale, enable_gqa=gqa, return_aux=AuxRequest(lse=True))
    return fold_sinks(out, aux.lse, sinks[None, :, None]).to(q.dtype)  # lse [B, Hq, T]
