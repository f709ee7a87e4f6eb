"""A sliding-window layer's K/V: a ring of the last W real tokens, nothing evicted by policy.

The model's own rule (transformers' sliding_window_overlay: kv > q - W) lets a query at
real position t attend positions t-W+1 .. t, i.e. W tokens counting itself. Real token t
(counted from the sequence's first real token, so left pads never enter) lives in ring
slot t % W; once t >= W it overwrites the token that just left the window. So after the
current token is written, exactly the slots s < min(length, W) hold the window: the
attention needs no positions, only that count (`held`). Memory is O(W) whatever the length.
The buffer is rounded up to whole pages (R >= W) so FlexAttention sees whole KV blocks;
slots W .. R-1 are never written nor attended.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.append import store_tokens
from raas_flex.cache.pool import check_dtype


@dataclass
class WindowCache:
    """Ring buffer of one sliding-window layer. B batch, H kv heads, R >= W ring rows."""

    k: torch.Tensor  # [B, H, R, D] model dtype
    v: torch.Tensor  # [B, H, R, D]
    length: torch.Tensor  # [B] int64: real tokens seen (prompt + decoded)
    # [B] int64: tokens the ring holds, min(length, W); the mask reads it. Written with
    # scatter_, as LayerCache.visible: Inductor's CPU flex kernel cannot lower a mask_mod
    # that reads a buffer the same graph updated with a pointwise op (length.add_).
    held: torch.Tensor
    window: int  # W: tokens a query attends, itself included
    block_size: int  # FlexAttention KV block (the pool's page size); R is a multiple
    softcap: float | None = None  # attention logit softcap (tanh), None: none
    sinks: torch.Tensor | None = None  # [H, G] float32 learned sink logits, None: none
    kernel_options: dict | None = None

    quantized = False  # the ring always stores the model's dtype

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def nbytes(self) -> tuple[int, int]:
        """(K/V bytes, other bytes), as LayerCache.nbytes."""
        return self.k.nbytes + self.v.nbytes, self.length.nbytes + self.held.nbytes


def allocate_window(batch: int, kv_heads: int, head_dim: int, window: int, block_size: int,
                    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                    **extras) -> WindowCache:
    """An empty ring for `window` tokens, rounded up to whole `block_size` blocks."""
    check_dtype(dtype)
    if window < 1:
        raise ValueError(f"sliding window {window} must be >= 1 token.")
    rows = -(-window // block_size) * block_size
    shape = (batch, kv_heads, rows, head_dim)
    return WindowCache(
        k=torch.zeros(shape, dtype=dtype, device=device),
        v=torch.zeros(shape, dtype=dtype, device=device),
        length=torch.zeros(batch, dtype=torch.int64, device=device),
        held=torch.zeros(batch, dtype=torch.int64, device=device),
        window=window, block_size=block_size, **extras,
    )


def write_window_prompt(cache: WindowCache, k: torch.Tensor, v: torch.Tensor,
                        lengths: torch.Tensor) -> None:
    """Keep the last min(length, W) real tokens of a left-padded prompt ([B, H, T, D]):
    ring slot s gets the latest real token i < length with i % W == s."""
    B, H, T, D = k.shape
    W = cache.window
    slot = torch.arange(W, device=k.device)  # [W]
    held = slot < lengths[:, None]  # [B, W]
    latest = slot + W * ((lengths[:, None] - 1 - slot).clamp(min=0) // W)  # [B, W]
    source = (T - lengths[:, None] + latest).clamp(0, T - 1)
    index = source[:, None, :, None].expand(B, H, W, D)
    keep = held[:, None, :, None]
    cache.k.zero_()
    cache.v.zero_()
    rows = (slice(None), slice(None), slice(0, W))
    store_tokens(cache, rows, torch.where(keep, k.gather(2, index), 0),
                 torch.where(keep, v.gather(2, index), 0))
    cache.length.copy_(lengths)
    cache.held.copy_(lengths.clamp(max=W))


def append_window(cache: WindowCache, k: torch.Tensor, v: torch.Tensor) -> None:
    """Write one token per sequence (k, v [B, H, 1, D]) over the one leaving the window.
    Branch-free and sync-free: one index_put_ of B·H rows."""
    B, H = k.shape[:2]
    slot = (cache.length % cache.window)[:, None].expand(B, H)  # [B, H]
    b = torch.arange(B, device=k.device)[:, None]
    h = torch.arange(H, device=k.device)[None, :]
    store_tokens(cache, (b, h, slot), k[:, :, 0], v[:, :, 0])
    cache.length.add_(1)
    rows = torch.arange(B, device=k.device)
    cache.held.scatter_(0, rows, cache.length.clamp(max=cache.window))
