"""The float64 attention every test compares against: softmax over an allowed set."""

from __future__ import annotations

import math

import torch


def reference_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        allowed: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """q [B, Hq, 1, D] over keys/values [B, H, N, D] where allowed [B, H, N] is True.

    GQA: query head i reads kv head i // (Hq // H). Returns [B, Hq, 1, D] float64.
    """
    B, Hq, _, D = q.shape
    H = keys.shape[1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    grouped = q.double().reshape(B, H, Hq // H, D)  # [B, H, G, D]
    logits = grouped @ keys.double().transpose(-1, -2) * scale  # [B, H, G, N]
    logits = logits.masked_fill(~allowed[:, :, None, :], float("-inf"))
    return (torch.softmax(logits, -1) @ values.double()).reshape(B, Hq, 1, D)
