"""The model families tested with apply_raas: this one table drives the README's table,
the random-weight test models (hf/tiny.py), the tests that run every family and the CLI's
--model help. Support itself is decided by features (hf/support.py), not by this list.

Plain data, no transformers import, so the CLI can print its help without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """name: what tests and the CLI call it (`<name>-tiny`); model_type: its
    `config.model_type`; config_class / model_class: the transformers classes of a tiny
    model; full_attention: config overrides that make every layer plain full attention;
    own_layers: overrides that keep the family's own layer pattern (sliding-window layers
    where it has them) with a window short enough to slide in a test, None where every
    layer is full attention anyway; tiny: size fields the family needs beyond hf/tiny.py's
    (e.g. gpt-oss's expert count); per_layer_types: the config lists its layers' kinds
    (layer_types)."""

    name: str
    model_type: str
    config_class: str
    model_class: str
    full_attention: dict = field(default_factory=dict)
    own_layers: dict | None = None
    tiny: dict = field(default_factory=dict)
    per_layer_types: bool = False


FAMILIES = {family.name: family for family in (
    Family("llama", "llama", "LlamaConfig", "LlamaForCausalLM"),
    Family("qwen2", "qwen2", "Qwen2Config", "Qwen2ForCausalLM",
           own_layers={"use_sliding_window": True, "sliding_window": 16,
                       "max_window_layers": 1}),
    Family("qwen3", "qwen3", "Qwen3Config", "Qwen3ForCausalLM"),
    Family("mistral", "mistral", "MistralConfig", "MistralForCausalLM",
           {"sliding_window": None}, own_layers={"sliding_window": 20}),
    Family("phi3", "phi3", "Phi3Config", "Phi3ForCausalLM"),
    # Gemma 2 at tiny size: tied embeddings made every greedy token the same one, and the
    # real cap of 50 never binds on tiny logits; untied and capped at 5, a wrong window or a
    # dropped softcap changes the tokens (docs/hybrid.md).
    Family("gemma2", "gemma2", "Gemma2Config", "Gemma2ForCausalLM",
           own_layers={"sliding_window": 20}, per_layer_types=True,
           tiny={"tie_word_embeddings": False, "attn_logit_softcapping": 5.0}),
    Family("gemma3", "gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM",
           own_layers={"sliding_window": 16, "num_hidden_layers": 6}, per_layer_types=True),
    Family("gpt_oss", "gpt_oss", "GptOssConfig", "GptOssForCausalLM",
           own_layers={"sliding_window": 24}, per_layer_types=True,
           tiny={"num_local_experts": 4, "num_experts_per_tok": 2}),
)}
WINDOWED = tuple(name for name, family in FAMILIES.items() if family.own_layers is not None)
