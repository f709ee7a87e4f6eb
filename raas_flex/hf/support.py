"""Which transformers models apply_raas accepts, and why the others are refused.

Refused at apply time, never at the first generate(): sliding-window or chunked layers
(a window is not a RaaS budget), attention logit softcapping (the flex calls carry no
score_mod), multi-head latent attention (keys and values of different widths), and
encoder-decoder / cross-attention models (their cross cache is not a decode cache).
"""

from __future__ import annotations

import torch

from raas_flex.hf.families import SUPPORTED_MODEL_TYPES

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
    if kind not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type {kind!r} is not a supported family; supported: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}.")
    _check_softcap(config, kind)
    _check_full_attention(config, kind)
    return int(config.num_hidden_layers)


def _check_softcap(config, kind: str) -> None:
    softcap = getattr(config, "attn_logit_softcapping", None)
    if softcap is not None:
        raise ValueError(
            f"{kind}: attn_logit_softcapping={softcap} is not supported (RaaS attention has no "
            "softcap); real Gemma 2 checkpoints need it, so they are refused."
        )


def _check_full_attention(config, kind: str) -> None:
    types = getattr(config, "layer_types", None)
    if types is not None:
        local = [i for i, t in enumerate(types) if t != "full_attention"]
        if local:
            raise ValueError(
                f"{kind}: layers {local} are {types[local[0]]!r}, not full attention; "
                "sliding-window/chunked layers are not supported by RaaS."
            )
        return
    for name in ("sliding_window", "attention_chunk_size"):
        window = getattr(config, name, None)
        if window is not None:
            raise ValueError(
                f"{kind}: config.{name}={window} makes every layer windowed, which RaaS does "
                f"not support; set config.{name} = None only if prompt + new tokens stay "
                f"within {window} (the window then has no effect)."
            )
