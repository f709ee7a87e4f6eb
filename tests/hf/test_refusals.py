"""Every refused family or layer kind raises the documented error at apply_raas time."""

import types

import pytest
import transformers

from raas_flex import apply_raas
from raas_flex.hf.patch import STATE_ATTR
from raas_flex.hf.tiny import tiny_model

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

TINY_T5 = dict(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, vocab_size=128)
TINY_MLA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, vocab_size=128, kv_lora_rank=16,
                q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16)

def _with_config(model, **fields):
    """`model` with config fields set after construction (layer kinds no config class
    of a tiny family builds)."""
    for name, value in fields.items():
        setattr(model.config, name, value)
    return model


REFUSED = {
    "chunked attention": (lambda: _with_config(tiny_model("llama"), attention_chunk_size=8),
                          "chunked attention"),
    "linear-attention layer": (lambda: _with_config(
        tiny_model("qwen2"), layer_types=["full_attention", "linear_attention"]),
        "'linear_attention'"),
    "bidirectional": (lambda: _with_config(tiny_model("gemma3"),
                                           use_bidirectional_attention=True), "not causal"),
    "t5": (lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(**TINY_T5)),
           "encoder-decoder"),
    "deepseek_v3 (MLA)": (lambda: types.SimpleNamespace(
        config=transformers.DeepseekV3Config(**TINY_MLA)), "latent attention"),
}

# Logit rules a kernel or policy cannot honour: refused before anything is patched.
REFUSED_OPTIONS = {
    "softcap with hsr": ("gemma2", {"policy": "hsr"}, "certifies its dropped mass"),
    "sinks with sdpa": ("gpt_oss", {"attention_kernel": "sdpa"}, "attention sinks"),
    "softcap with sdpa": ("gemma2", {"attention_kernel": "sdpa"}, "softcapping"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_OPTIONS))
def test_logit_rules_refuse_what_cannot_honour_them(name):
    family, options, match = REFUSED_OPTIONS[name]
    model = tiny_model(family, full_attention=False)
    with pytest.raises(ValueError, match=match):
        apply_raas(model, budget=64, **options)
    assert not hasattr(model, STATE_ATTR)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_at_apply_time(name):
    build, match = REFUSED[name]
    model = build()
    with pytest.raises(ValueError, match=match):
        apply_raas(model, budget=64)
    assert not hasattr(model, STATE_ATTR)


def test_cuda_graph_needs_compile_and_a_cuda_model():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="pass compile=True"):
        apply_raas(model, budget=64, cuda_graph=True)
    assert not hasattr(model, STATE_ATTR)
    with pytest.raises(ValueError, match=r"on cpu.*cuda_graph=False"):
        apply_raas(model, budget=64, compile=True, cuda_graph=True)
    assert not hasattr(model, STATE_ATTR)
