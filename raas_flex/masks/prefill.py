"""Prefill mask: causal attention among a left-padded prompt's real tokens, optionally
within a sliding window of W tokens (the model's own rule: kv > q - W)."""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask


def causal_padding_mask_mod(first_real: torch.Tensor, window: int | None = None):
    """mask_mod: causal, and neither side a left pad; with `window`, also q - kv < window.
    first_real: [B] index of token 0.

    A pad query row attends only to itself, so its (discarded) output stays finite.
    """

    def causal_without_pads(b, h, q_idx, kv_idx):
        real = (kv_idx >= first_real[b]) & (kv_idx <= q_idx)
        if window is not None:
            real = real & (kv_idx > q_idx - window)
        return real | (kv_idx == q_idx)

    return causal_without_pads


def prefill_block_mask(lengths: torch.Tensor, seq_len: int,
                       window: int | None = None) -> BlockMask:
    """BlockMask for a [B, T] left-padded prompt with `lengths` real tokens each."""
    first_real = seq_len - lengths
    return create_block_mask(
        causal_padding_mask_mod(first_real, window), B=lengths.shape[0], H=None,
        Q_LEN=seq_len, KV_LEN=seq_len, device=lengths.device,
    )


def causal_padding_mask(lengths: torch.Tensor, seq_len: int,
                        window: int | None = None) -> torch.Tensor:
    """The same rule as a [B, 1, T, T] bool tensor, for the "sdpa" kernel."""
    mask_mod = causal_padding_mask_mod(seq_len - lengths, window)
    b = torch.arange(lengths.shape[0], device=lengths.device)[:, None, None, None]
    q = torch.arange(seq_len, device=lengths.device)[None, None, :, None]
    kv = torch.arange(seq_len, device=lengths.device)[None, None, None, :]
    return mask_mod(b, 0, q, kv)
