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


def causal_padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The same rule as a [B, 1, T, T] bool tensor, for the "sdpa" kernel."""
    mask_mod = causal_padding_mask_mod(seq_len - lengths)
    b = torch.arange(lengths.shape[0], device=lengths.device)[:, None, None, None]
    q = torch.arange(seq_len, device=lengths.device)[None, None, :, None]
    kv = torch.arange(seq_len, device=lengths.device)[None, None, None, :]
    return mask_mod(b, 0, q, kv)
