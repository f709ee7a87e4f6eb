"""The dense baseline of bench/e2e/serve.py: a static cache whose attention reads only the
live tokens, compiled and CUDA-graph-replayed like RaaS.

Why this baseline: transformers' static-cache decode attends every preallocated slot at each
step, so its cost follows the cache's capacity, not the sequence's length. Here the cache is
preallocated at full length too (what a server must reserve per sequence), but each step
builds a FlexAttention BlockMask that lists only the KV blocks up to the current position
(full blocks without mask_mod, the block holding the current token with `kv <= pos`). The
kernel is flex's split-KV decode kernel, so a step reads the weights plus the live K/V once:
its bandwidth floor. The mask is computed from a 0-d position tensor inside the graph, so
one compiled graph, one CUDA graph capture, serves every length (as in gpt-fast, where a
mask built once for the maximum length is sliced at the current position). Compile it with
a static batch: Inductor picks flex's decode kernel (GQA group folded into query rows, KV
split over the SMs) only when batch and heads are static; with a symbolic batch it falls back
to the main kernel, one block per query head, which measured 4x slower (bench/README.md).

`install_live_dense(model)` routes the model's attention here; `LiveDenseCache` is the
transformers Cache the forward is given; `remove_live_dense(model)` undoes both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.masking_utils import AttentionMaskInterface

from raas_flex.hf.attention import raas_mask

ATTN_NAME = "serve_live_dense"
KV_BLOCK = 128  # tokens per flex KV block; the cache length is a multiple of it
POS_ATTR = "serve_live_pos"  # attribute of each attention module: the shared position tensor


class LiveDenseLayer(CacheLayerMixin):
    """One layer's preallocated K/V [B, H, capacity, D]; `update` writes the new token at
    `pos` in place and returns the whole buffers (the attention limits itself to the live
    prefix). A prompt (several tokens) is written at positions 0..T-1."""

    is_compileable = False  # generate() must not compile it; the bench compiles the forward
    is_sliding = False
    supports_early_init = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, pos: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values, self.pos = keys, values, pos
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:
        raise NotImplementedError("a LiveDenseLayer is allocated up front.")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args,
               **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        T = key_states.shape[2]
        if T == 1:
            self.keys.index_copy_(2, self.pos.view(1), key_states)
            self.values.index_copy_(2, self.pos.view(1), value_states)
        else:  # a prompt, written from position 0
            self.keys[:, :, :T].copy_(key_states)
            self.values[:, :, :T].copy_(value_states)
        return self.keys, self.values

    def get_seq_length(self) -> torch.Tensor:
        return self.pos

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.keys.shape[2], 0

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class LiveDenseCache(Cache):
    """Every layer's full-length K/V, allocated at once; `pos` (0-d int64) is the position
    the next decoded token is written at, shared with the attention (see install_live_dense)."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, capacity: int,
                 head_dim: int, pos: torch.Tensor, dtype=torch.bfloat16, device="cpu") -> None:
        if capacity % KV_BLOCK:
            raise ValueError(f"capacity {capacity} must be a multiple of {KV_BLOCK} (the flex "
                             f"KV block); round it up.")
        shape = (batch, kv_heads, capacity, head_dim)
        layers = [LiveDenseLayer(torch.zeros(shape, dtype=dtype, device=device),
                                 torch.zeros(shape, dtype=dtype, device=device), pos)
                  for _ in range(num_layers)]
        super().__init__(layers=layers)
        self.pos = pos

    def fill_random(self, generator: torch.Generator | None = None) -> None:
        """Fast-forward: stand-in K/V values (standard normal) in every slot. Attention's
        cost depends on how many tokens it reads, not on their values."""
        for layer in self.layers:
            layer.keys.normal_(generator=generator)
            layer.values.normal_(generator=generator)

    def nbytes(self) -> int:
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in self.layers)


def live_block_mask(pos: torch.Tensor, capacity: int) -> BlockMask:
    """BlockMask for one query row over `capacity` cache tokens: blocks before pos's block are
    full, pos's block is partial (kv <= pos), later blocks are never read. pos: 0-d int64."""
    blocks = capacity // KV_BLOCK
    current = (pos // KV_BLOCK).to(torch.int32)
    order = torch.arange(blocks, device=pos.device, dtype=torch.int32)
    full_count = current.view(1, 1, 1)
    full_index = order.view(1, 1, 1, blocks)
    partial_count = torch.ones((1, 1, 1), device=pos.device, dtype=torch.int32)
    partial_index = ((order + current) % blocks).view(1, 1, 1, blocks)  # pos's block first

    def up_to_pos(b, h, q_idx, kv_idx):
        return kv_idx <= pos

    return BlockMask.from_kv_blocks(partial_count, partial_index, full_count, full_index,
                                    BLOCK_SIZE=(KV_BLOCK, KV_BLOCK), mask_mod=up_to_pos,
                                    seq_lengths=(1, capacity), compute_q_blocks=False)


def live_dense_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                         value: torch.Tensor, attention_mask, scaling: float | None = None,
                         dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, Hq, Q, D]; key/value [B, H, capacity, D] (the whole cache) -> [B, Q, Hq, D].
    Decode (Q = 1) attends positions 0..pos; a prompt (Q > 1) attends causally from 0."""
    Q = query.shape[2]
    if Q == 1:
        pos = getattr(module, POS_ATTR)
        out = flex_attention(query, key, value, block_mask=live_block_mask(pos, key.shape[2]),
                             scale=scaling, enable_gqa=True)
    else:
        out = F.scaled_dot_product_attention(query, key[:, :, :Q], value[:, :, :Q],
                                             is_causal=True, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def install_live_dense(model: torch.nn.Module, pos: torch.Tensor) -> str:
    """Route the model's attention through live_dense_attention, reading `pos`; returns the
    previous attention implementation's name (for remove_live_dense)."""
    AttentionInterface.register(ATTN_NAME, live_dense_attention)
    AttentionMaskInterface.register(ATTN_NAME, raas_mask)  # passes the (absent) 2D mask through
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTN_NAME)
    for module in _attention_modules(model):
        setattr(module, POS_ATTR, pos)
    return previous


def remove_live_dense(model: torch.nn.Module, previous: str) -> None:
    for module in _attention_modules(model):
        delattr(module, POS_ATTR)
    model.set_attn_implementation(previous)


def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules()
            if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]
