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

REFUSED = {
    "gemma2 (softcap)": (lambda: tiny_model("gemma2", full_attention=False), "softcapping"),
    "gemma2 (sliding)": (lambda: tiny_model("gemma2", full_attention=False,
                                            attn_logit_softcapping=None), "sliding_attention"),
    "gemma3 (sliding)": (lambda: tiny_model("gemma3", full_attention=False), "sliding_attention"),
    "mistral (window)": (lambda: tiny_model("mistral", full_attention=False), "sliding_window"),
    "qwen2 (window)": (lambda: tiny_model("qwen2", use_sliding_window=True, sliding_window=64,
                                          max_window_layers=0, layer_types=None),
                       "sliding_attention"),
    "t5": (lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(**TINY_T5)),
           "encoder-decoder"),
    "deepseek_v3 (MLA)": (lambda: types.SimpleNamespace(
        config=transformers.DeepseekV3Config(**TINY_MLA)), "latent attention"),
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, vocab_size=128, bos_token_id=1, eos_token_id=1)),
             "not a supported family"),
}


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
