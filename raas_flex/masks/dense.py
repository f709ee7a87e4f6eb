"""The same decode selection as a materialised boolean mask, for the "sdpa" kernel.

FlexAttention run eagerly (no torch.compile) evaluates mask_mod through vmap, ~10 ms per
call on a CPU; this mask + SDPA computes the identical selection in well under a
millisecond. It is an explicit kernel choice (RaaSConfig.attention_kernel), never a fallback.
"""

from __future__ import annotations

import torch


def visible_token_mask(visible: torch.Tensor, page_size: int) -> torch.Tensor:
    """[B, H, S] visible tokens per page -> [B, H, 1, S*P] bool over the pool."""
    B, H, S = visible.shape
    offset = torch.arange(page_size, device=visible.device)
    return (offset < visible[..., None]).reshape(B, H, 1, S * page_size)
