"""Random-weight Llama models with real shapes (no hub here): what the e2e benchmarks decode.

Built on the target device in bf16 directly (an 8B model initialised in fp32 first would
need 32 GB and minutes of host work). eos_token_id is unset, so no sequence ends early.
"""

from __future__ import annotations

import torch

# name -> LlamaConfig size fields; the bench's KV arithmetic reads layers/kv heads/head_dim
SHAPES: dict[str, dict] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=512),
    # Llama-3.2-1B: 16 layers, 32 q / 8 kv heads of 64, tied embeddings
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         vocab_size=128256, tie_word_embeddings=True),
    # Llama-3-8B: 32 layers, 32 q / 8 kv heads of 128
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                       vocab_size=128256, tie_word_embeddings=False),
    # Llama-3-70B: 80 layers, 64 q / 8 kv heads of 128 (~140 GB in bf16: two GPUs at least)
    "llama-3-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, head_dim=128,
                        vocab_size=128256, tie_word_embeddings=False),
    # tensor-parallel tests: 4 kv heads split over 2 ranks, 8 q heads per kv head as in
    # Llama-3-70B; weights wide enough (std 0.2) that greedy tokens vary
    "tiny-tp": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=32, num_key_value_heads=4, head_dim=16, vocab_size=512,
                    tie_word_embeddings=False, initializer_range=0.2),
}


def llama_config(shape: str, attn: str = "sdpa"):
    """The LlamaConfig of the named SHAPES entry (Llama 3 RoPE base, 128k positions)."""
    from transformers import LlamaConfig
    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; pick one of {sorted(SHAPES)}.")
    size = dict(SHAPES[shape])
    size.setdefault("tie_word_embeddings", True)
    return LlamaConfig(**size, max_position_embeddings=131072, rope_theta=500000.0,
                       attn_implementation=attn)


def build_llama(shape: str, device: str | torch.device, attn: str = "sdpa"):
    """A LlamaForCausalLM of the named SHAPES entry, random bf16 weights, eval mode."""
    from transformers import LlamaForCausalLM
    config = llama_config(shape, attn)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None  # decode exactly max_new_tokens
    model.generation_config.pad_token_id = 0
    return model


def kv_bytes_per_token(config) -> int:
    """Bytes one token's K and V take over all layers, in the model's bf16 (dense caches)."""
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 2


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct parameters (tied embeddings counted once)."""
    seen = {p.data_ptr(): p.nbytes for p in model.parameters()}
    return sum(seen.values())
