"""What a layer's pool held and attended, as logical token positions (for tests and
inspection; nothing on the decode path reads these)."""

from __future__ import annotations

import torch

from raas_flex.cache import LayerCache


def attended_positions(cache: LayerCache, num_positions: int) -> torch.Tensor:
    """Logical positions the last step attended: [B, H, num_positions] bool."""
    return _logical_positions(cache, cache.visible, num_positions)


def held_positions(cache: LayerCache, num_positions: int) -> torch.Tensor:
    """Logical positions held in the pool (attended or not): [B, H, num_positions] bool."""
    return _logical_positions(cache, cache.fill, num_positions)


def _logical_positions(cache: LayerCache, tokens: torch.Tensor,
                       num_positions: int) -> torch.Tensor:
    """Mark the first `tokens` [B, H, S] of each slot's logical page: [B, H, N] bool."""
    B, H, S = tokens.shape
    P = cache.page_size
    offset = torch.arange(P, device=tokens.device)
    position = cache.page_id[..., None] * P + offset  # [B, H, S, P]
    seen = (offset < tokens[..., None]) & (cache.page_id[..., None] >= 0)
    out = torch.zeros(B, H, num_positions + 1, dtype=torch.bool, device=seen.device)
    target = torch.where(seen, position, num_positions).clamp(max=num_positions)
    out.view(B * H, -1).scatter_(1, target.view(B * H, -1), True)
    return out[..., :num_positions]
