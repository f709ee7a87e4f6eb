"""The model families apply_raas supports: this one table drives the support check
(hf/support.py), the random-weight test models (hf/tiny.py) and the CLI's --model help.

Plain data, no transformers import, so the CLI can print its help without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """name: what tests and the CLI call it (`<name>-tiny`); model_type: the
    `config.model_type` apply_raas accepts; config_class / model_class: the transformers
    classes of a tiny model; full_attention: config overrides that make every layer plain
    full attention; per_layer_types: the config lists its layers' kinds (layer_types)."""

    name: str
    model_type: str
    config_class: str
    model_class: str
    full_attention: dict = field(default_factory=dict)
    per_layer_types: bool = False


FAMILIES = {family.name: family for family in (
    Family("llama", "llama", "LlamaConfig", "LlamaForCausalLM"),
    Family("qwen2", "qwen2", "Qwen2Config", "Qwen2ForCausalLM"),
    Family("qwen3", "qwen3", "Qwen3Config", "Qwen3ForCausalLM"),
    Family("mistral", "mistral", "MistralConfig", "MistralForCausalLM",
           {"sliding_window": None}),
    Family("phi3", "phi3", "Phi3Config", "Phi3ForCausalLM"),
    Family("gemma2", "gemma2", "Gemma2Config", "Gemma2ForCausalLM",
           {"attn_logit_softcapping": None}, per_layer_types=True),
    Family("gemma3", "gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM",
           per_layer_types=True),
)}
SUPPORTED_MODEL_TYPES = tuple(family.model_type for family in FAMILIES.values())
