"""The attention function transformers calls for every layer once apply_raas is in place.

Prefill (empty pool): write the prompt's real tokens and attend causally (functional.prefill).
Decode (one token): append, score, update, select, attend (functional.decode_step_tensors).
Continuation (several tokens on a filled pool, e.g. a second generate()): token by token,
as if they had been decoded, so the policy sees every token.
A sliding-window layer (WindowLayer) does the same over its ring of W tokens, no policy.
The model's softcap and attention sinks (the `softcap` / `s_aux` arguments its attention
module passes) are fixed into the layer's pool at prefill.
"""

from __future__ import annotations

import torch

from raas_flex.functional import decode_step, decode_step_tensors, prefill, scale_or_default
from raas_flex.hf.cache import RaaSCache, RaaSLayer, WindowLayer
from raas_flex.hf.compat import CACHE_ARG
from raas_flex.windowed import window_decode_step, window_prefill

ATTN_NAME = "raas_flex"
CACHE_KWARG = "raas_cache"  # where the pre-hook puts the model's cache argument

NO_CACHE = (
    "RaaS attention needs the model's cache to be a RaaSCache, got {got}. Call "
    "model.generate() (it makes one), pass {arg}=RaaSCache.for_model(model), or "
    "call raas_flex.remove_raas(model) for plain forwards (use_cache=False, DynamicCache)."
)

NO_WEIGHTS = (
    "output_attentions=True is not supported with RaaS: its attention runs over a budgeted "
    "pool (most tokens evicted) and returns no weights, so transformers would return empty "
    "tuples. Leave output_attentions unset, or call raas_flex.remove_raas(model) and use "
    "attn_implementation=\"eager\" to get attention weights."
)


def raas_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, attention_mask: torch.Tensor | None,
                   scaling: float | None = None, dropout: float = 0.0,
                   **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, Hq, Q, D] after RoPE; key/value [B, H, Q, D] new tokens. -> [B, Q, Hq, D]."""
    cache = kwargs.get(CACHE_KWARG)
    _check_call(cache, dropout, kwargs)
    layer: RaaSLayer = cache.layers[module.layer_idx]
    _check_layer_kind(layer, module.layer_idx, kwargs)
    layer.awaiting_attention = False
    if layer.pool is None:
        layer.allocate(key, _prefill_mask(attention_mask), kwargs.get("softcap"),
                       kwargs.get("s_aux"))
        out = _prefill(layer, query, key, value, attention_mask, scaling)
    elif query.shape[2] == 1:
        out = _decode(layer, query, key, value, scaling)
    else:
        out = _continue(layer, query, key, value, attention_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def raas_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
              attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor | None:
    """Pass the 2D padding mask [B, seen + Q] (logical order) through to raas_attention.

    Prefill needs it to find each prompt's real tokens; decode never reads it, since pads
    are never written into the pool.
    """
    return attention_mask


def _check_call(cache: object, dropout: float, kwargs: dict) -> None:
    if not isinstance(cache, RaaSCache):
        raise ValueError(NO_CACHE.format(got=type(cache).__name__, arg=CACHE_ARG))
    if dropout:
        raise ValueError("RaaS attention is inference-only; call model.eval() first.")
    if kwargs.get("output_attentions"):  # forward/generate kwarg; reaches every layer
        raise ValueError(NO_WEIGHTS)


def _check_layer_kind(layer: RaaSLayer, index: int, kwargs: dict) -> None:
    """The window the model's attention module asks for must be the one the cache built
    from the config (hf/layer_kinds.py); a disagreement would silently change attention."""
    asked = kwargs.get("sliding_window")
    held = layer.window if isinstance(layer, WindowLayer) else None
    if asked != held:
        raise ValueError(f"layer {index}'s attention asks for sliding_window={asked}, but this "
                         f"RaaSCache built it with {held}: build the cache with "
                         "RaaSCache.for_model(model), which reads each layer's window from "
                         "the config. If it was, this model's code does not follow its "
                         "config's layer pattern, which is not supported.")
    softcap = kwargs.get("softcap")
    if layer.pool is not None and softcap != layer.pool.softcap:
        raise ValueError(f"layer {index} was prefilled with softcap={layer.pool.softcap}, now "
                         f"called with {softcap}; start a new cache.")


def _prefill_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    if mask is not None and mask.ndim != 2:
        raise ValueError(f"RaaS prefill takes a 2D left-padding mask, got {mask.ndim}D.")
    return mask


def _prefill(layer: RaaSLayer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             mask: torch.Tensor | None, scale: float | None) -> torch.Tensor:
    if isinstance(layer, WindowLayer):
        out = window_prefill(q, k, v, layer.pool, mask, scale_or_default(scale, q.shape[-1]),
                             layer.config.attention_kernel)
    else:
        out = prefill(q, k, v, layer.pool, layer.policy, mask, scale)
    layer.seen.fill_(q.shape[2])
    return out


def _decode(layer: RaaSLayer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            scale: float | None) -> torch.Tensor:
    scale = scale_or_default(scale, q.shape[-1])
    if isinstance(layer, WindowLayer):
        out = window_decode_step(q, k, v, layer.pool, scale, layer.config.attention_kernel)
    elif torch.compiler.is_compiling():
        out = decode_step_tensors(q, k, v, layer.pool, layer.policy, layer.step, scale)
    else:  # eager: shape checks and the keep-all overflow check on the host
        out = decode_step(q, k, v, layer.pool, layer.policy, layer.step, scale)
    layer.step.add_(1)
    layer.seen.add_(1)
    return out


def _continue(layer: RaaSLayer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None, scale: float | None) -> torch.Tensor:
    Q = q.shape[2]
    if mask is not None and not bool(mask[:, -Q:].all()):
        raise ValueError("tokens continuing a RaaSCache cannot be padded; continue each "
                         "sequence with real tokens only, or start a new cache.")
    outs = [_decode(layer, q[:, :, i:i + 1], k[:, :, i:i + 1], v[:, :, i:i + 1], scale)
            for i in range(Q)]
    return torch.cat(outs, dim=2)  # [B, Hq, Q, D]; the pool itself is never concatenated
