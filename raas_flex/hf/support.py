"""Which transformers models apply_raas accepts, decided by their features, not their names.

Accepted: a decoder-only model whose every layer is causal softmax self-attention with
(grouped-query) keys and values of one width, each layer full (it gets the RaaS policy) or
a sliding window of W tokens (hf/layer_kinds.py), with or without logit softcapping and
learned attention sinks (attention/logit_mods.py). Refused at apply time, never at the
first generate(), with the reason: encoder-decoder and cross-attention models (their cross
cache is not a decode cache), multi-head latent attention (keys and values of different
widths), and chunked, linear or recurrent layers. hf/families.py lists what was tested.
"""

from __future__ import annotations

import torch

from raas_flex.hf.layer_kinds import layer_windows

MLA_FIELDS = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_head_dim")


def check_supported(model: torch.nn.Module) -> int:
    """Raise ValueError naming the reason if `model` cannot run RaaS; return its layer count."""
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no .config; pass a transformers model.")
    kind = getattr(config, "model_type", "?")
    cross = getattr(config, "add_cross_attention", False)
    if getattr(config, "is_encoder_decoder", False) or cross:
        raise ValueError(f"{kind}: encoder-decoder / cross-attention models are not supported; "
                         "RaaS budgets a decoder-only self-attention cache.")
    if any(getattr(config, name, None) for name in MLA_FIELDS):
        raise ValueError(f"{kind}: multi-head latent attention (MLA) is not supported; its "
                         "keys and values have different widths than the paged pool holds.")
    layer_windows(config)
    return int(config.num_hidden_layers)


def logit_rules(model: torch.nn.Module) -> tuple[float | None, bool]:
    """(the config's attention logit softcap, whether attention modules carry learned sink
    logits): what apply_raas checks the kernel and policy against before patching. The
    attention call's own arguments (softcap, s_aux) are what the layers then use."""
    softcap = getattr(model.config, "attn_logit_softcapping", None)
    sinks = any(isinstance(getattr(m, "sinks", None), torch.Tensor) for m in model.modules())
    return softcap, sinks
