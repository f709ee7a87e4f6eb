"""Small random-weight models from real transformers config classes (no downloads).

Used by the tests and by `raas-flex generate` when no checkpoint is given. The "-tiny"
sizes follow the test recipe (hidden 64, 2 layers, 4 query / 2 kv heads, head_dim 16);
"llama-small" is a slightly larger default for the CLI.
"""

from __future__ import annotations

import torch
import transformers

from raas_flex.hf.families import FAMILIES

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=128, max_position_embeddings=4096,
            bos_token_id=1, eos_token_id=None, pad_token_id=0, initializer_range=0.2)
SMALL = dict(TINY, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
             num_attention_heads=8, num_key_value_heads=2, head_dim=32, vocab_size=512)
SIZES = {"tiny": TINY, "small": SMALL}


def tiny_config(family: str = "llama", size: str = "tiny", full_attention: bool = True,
                **overrides):
    """A config of `family`: every layer full attention, or (full_attention=False) the
    family's own layer pattern with a window short enough to slide (Family.own_layers)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}.")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}.")
    spec = FAMILIES[family]
    fields = dict(SIZES[size], **spec.tiny)
    if full_attention:
        fields.update(spec.full_attention)
        if spec.per_layer_types:
            fields["layer_types"] = ["full_attention"] * fields["num_hidden_layers"]
    else:
        fields.update(spec.own_layers or {})
    fields.update(overrides)
    return getattr(transformers, spec.config_class)(**fields)


def tiny_model(family: str = "llama", size: str = "tiny", seed: int = 0,
               attn_implementation: str | None = None, full_attention: bool = True,
               **overrides) -> torch.nn.Module:
    """A random-weight causal LM in eval mode, fp32, with eos disabled (runs to the end).

    attn_implementation None: "sdpa" where the family supports it, else "eager" (gpt-oss's
    sinks), and "eager" whenever the config softcaps its logits: transformers' SDPA path
    drops the softcap, yet 5.17 still lists Gemma 2 as SDPA-capable.
    """
    config = tiny_config(family, size, full_attention, **overrides)
    model_class = getattr(transformers, FAMILIES[family].model_class)
    if attn_implementation is None:
        softcap = getattr(config, "attn_logit_softcapping", None) is not None
        attn_implementation = "sdpa" if model_class._supports_sdpa and not softcap else "eager"
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def model_from_name(name: str, seed: int = 0) -> torch.nn.Module:
    """'llama-tiny', 'qwen3-small', ...: family and size; anything else is a local path."""
    family, _, size = name.rpartition("-")
    if family in FAMILIES and size in SIZES:
        return tiny_model(family, size, seed=seed)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name, local_files_only=True).eval()
