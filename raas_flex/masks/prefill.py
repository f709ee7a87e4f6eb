"""Prefill mask: causal attention among a left-padded prompt's real tokens."""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask


def causal_padding_mask_mod(first_real: torch.Tensor):
    """mask_mod: causal, and neither side a left pad. first_real: [B] index of token 0.

    A pad query row attends only to itself, so its (discarded) output stays finite.
    """

    def causal_without_pads(b, h, q_idx, kv_idx):
        real = (kv_idx >= first_real[b]) & (kv_idx <= q_idx)
        return real | (kv_idx == q_idx)

    return causal_without_pads


def prefill_block_mask(lengths: torch.Tensor, seq_len: int) -> BlockMask:
    """BlockMask for a [B, T] left-padded prompt with `lengths` real tokens each."""
    first_real = seq_len - lengths
    return create_block_mask(
        causal_padding_mask_mod(first_real), B=lengths.shape[0], H=None,
        Q_LEN=seq_len, KV_LEN=seq_len, device=lengths.device,
    )
