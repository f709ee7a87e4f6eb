"""One decode step's attention over the pool tokens the policy selected.

Decode folds a GQA group into query rows ([B, kv_heads, group, D]) so that the per-kv-head
block mask keeps FlexAttention on its fast decode kernel (docs/flex-notes.md). The layer's
softcap and sinks (attention/logit_mods.py) are read from the pool, fixed per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import AuxRequest, flex_attention

from raas_flex.attention.logit_mods import check_kernel, fold_sinks, softcap_score_mod
from raas_flex.attention.score_mods import dequantize_scores
from raas_flex.cache import LayerCache
from raas_flex.masks import decode_block_mask, listed_block_mask, visible_token_mask


def fold_gqa(q: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[B, Hq, 1, D] -> [B, kv_heads, group, D]: a GQA group's queries become query rows,
    so a per-kv-head block mask keeps flex on its fast decode kernel (docs/flex-notes.md)."""
    B, Hq, _, D = q.shape
    return q.reshape(B, kv_heads, Hq // kv_heads, D)


def attend_visible(query: torch.Tensor, cache: LayerCache, scale: float,
                   kernel: str = "flex", blocks: tuple | None = None) -> torch.Tensor:
    """Attention of query [B, H, G, D] over the pool tokens `cache.visible` selects.

    blocks: (count, index), the pages the kernel reads (Policy.attend_blocks; they must
    include every page with visible > 0), or None to compact `visible` into block lists.
    """
    check_kernel(kernel, cache.softcap is not None, cache.sinks is not None)
    if cache.quantized:
        if kernel != "flex":
            raise ValueError("a quantized pool is dequantized inside FlexAttention only; "
                             'use attention_kernel="flex".')
        return attend_quantized(query, cache, scale, blocks)
    if kernel == "sdpa":
        mask = visible_token_mask(cache.visible, cache.page_size)
        return F.scaled_dot_product_attention(query, cache.k, cache.v, attn_mask=mask,
                                              scale=scale)
    block_mask = decode_mask(cache, query.shape[2], blocks)
    return flex_with_logit_mods(query, cache.k, cache.v, block_mask, scale, cache)


def flex_with_logit_mods(query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask,
                         scale: float, layer) -> torch.Tensor:
    """Decode flex over a pool (LayerCache or WindowCache `layer`), with the layer's
    softcap as score_mod and its sinks folded in through the lse. [B, H, G, D]."""
    score_mod = None if layer.softcap is None else softcap_score_mod(layer.softcap)
    if layer.sinks is None:
        return flex_attention(query, k, v, score_mod=score_mod, block_mask=block_mask,
                              scale=scale, kernel_options=_options(layer))
    out, aux = flex_attention(query, k, v, score_mod=score_mod, block_mask=block_mask,
                              scale=scale, kernel_options=_options(layer),
                              return_aux=AuxRequest(lse=True))
    return fold_sinks(out, aux.lse, layer.sinks).to(query.dtype)  # sinks [H, G]


def decode_mask(cache: LayerCache, rows: int, blocks: tuple | None):
    """The decode BlockMask: listed pages when the policy names them, else compacted."""
    if blocks is None:
        return decode_block_mask(cache.visible, cache.page_size, rows)
    return listed_block_mask(cache.visible, cache.page_size, rows, *blocks)


def attend_quantized(query: torch.Tensor, cache: LayerCache, scale: float,
                     blocks: tuple | None = None) -> torch.Tensor:
    """attend_visible over 8-bit K/V codes, dequantized inside one flex call.

    K: the score_mod multiplies each score q·k̂ by its token's k_scale. V: flex has no
    value hook, so the query rows run twice. Rows [0, G) also add log s_j (V's scale) to
    the score, so they return out' = Σ w_j s_j v̂_j / Σ w_j s_j and lse' = log Σ w_j s_j
    with w_j = exp(score_j); rows [G, 2G) return the true lse = log Σ w_j. Then
    out = out' · exp(lse' - lse) = Σ w_j s_j v̂_j / Σ w_j, exact. The decode kernel pads
    query rows to 16, so 2G ≤ 16 costs no extra MMA work (docs/flex-notes.md).
    Returns [B, H, G, D] float32.
    """
    G = query.shape[2]
    score_mod = dequantize_scores(cache.k_scale, cache.v_logscale, G, cache.softcap)
    block_mask = decode_mask(cache, 2 * G, blocks)
    out, aux = flex_attention(torch.cat([query, query], dim=2), cache.k, cache.v,
                              score_mod=score_mod, block_mask=block_mask, scale=scale,
                              kernel_options=_options(cache),
                              return_aux=AuxRequest(lse=True))
    lse = aux.lse  # [B, H, 2G] natural log
    out = out[:, :, :G].float() * torch.exp(lse[:, :, :G] - lse[:, :, G:])[..., None]
    return out if cache.sinks is None else fold_sinks(out, lse[:, :, G:], cache.sinks)


def _options(cache) -> dict | None:
    """A copy of the pool's kernel options: flex may fill in defaults."""
    return None if cache.kernel_options is None else dict(cache.kernel_options)
