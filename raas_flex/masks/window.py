"""Sliding-window masks: the decode ring (cache/window.py) and the window rule in prefill."""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask

from raas_flex.masks.decode import QUERY_BLOCK


def ring_mask_mod(held: torch.Tensor):
    """mask_mod over a ring: slot kv is attended iff kv < held[b] (= min(length, W)).

    held: [B] persistent buffer, updated in place with scatter_ (see WindowCache.held)."""

    def attend_ring(b, h, q_idx, kv_idx):
        return kv_idx < held[b]

    return attend_ring


def ring_block_mask(held: torch.Tensor, rows: int, kv_heads: int, ring: int,
                    block_size: int) -> BlockMask:
    """Every KV block of the ring, listed as partial blocks (constants of the graph), with
    ring_mask_mod hiding what the window does not hold."""
    B, blocks = held.shape[0], ring // block_size
    index = torch.arange(blocks, device=held.device, dtype=torch.int32)
    return BlockMask.from_kv_blocks(
        torch.full((B, kv_heads, 1), blocks, dtype=torch.int32, device=held.device),
        index.expand(B, kv_heads, 1, blocks),
        BLOCK_SIZE=(QUERY_BLOCK, block_size), mask_mod=ring_mask_mod(held),
        seq_lengths=(rows, ring), compute_q_blocks=False,
    )


def ring_token_mask(held: torch.Tensor, ring: int) -> torch.Tensor:
    """The same rule as a [B, 1, 1, R] bool tensor, for the "sdpa" kernel."""
    kv = torch.arange(ring, device=held.device)
    return (kv < held[:, None])[:, None, None, :]
