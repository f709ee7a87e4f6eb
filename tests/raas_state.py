"""A RaaS pool mid-decode, drawn at random, for checking raas_flex::raas_bookkeeping's
bodies against each other: free and pinned slots, timestamps that tie, pages whose
summaries are equal (their bounds tie), rows at and between page boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache import FREE, LayerCache, allocate_layer_cache


@dataclass
class RaaSInputs:
    cache: LayerCache
    q: torch.Tensor  # [B, H, G, D] in the pool's dtype
    k: torch.Tensor  # [B, H, 1, D]
    v: torch.Tensor  # [B, H, 1, D]
    step: torch.Tensor  # [] int64


def random_raas_state(seed: int, B: int, H: int, S: int, P: int, D: int, G: int,
                      dtype: torch.dtype, device: str, integer_valued: bool = True,
                      free_share: float = 0.2, pinned_share: float = 0.2,
                      all_pinned: bool = False) -> RaaSInputs:
    """integer_valued: keys and queries in -3..3, so every bound is exact in float32 and
    two implementations give the same bits (ties stay ties)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        x = torch.randint(-3, 4, shape, generator=gen).float() if integer_valued else \
            torch.randn(shape, generator=gen)
        return x.to(dtype)

    cache = allocate_layer_cache(B, H, D, S, P, dtype=dtype, device=device)
    cache.policy_state["arrivals"] = torch.zeros(B, dtype=torch.int32, device=device)
    pages = torch.randint(S + 1, 4 * S, (B,), generator=gen)
    at_boundary = torch.rand(B, generator=gen) < 0.5
    offset = torch.where(at_boundary, 0, torch.randint(1, P, (B,), generator=gen) if P > 1
                         else torch.zeros(B, dtype=torch.int64))
    length = pages * P + offset  # tokens seen
    page_id = torch.stack([torch.randperm(int(pages[b]) - 1, generator=gen)[:S]  # < newest
                           for b in range(B) for _ in range(H)]).view(B, H, S)
    free = torch.rand(B, H, S, generator=gen) < free_share
    current = torch.randint(0, S, (B, H), generator=gen)
    rows = torch.arange(B)[:, None], torch.arange(H)[None, :], current
    free[rows] = False
    newest = ((length - 1) // P)[:, None].expand(B, H)
    page_id[rows] = newest  # the current slot holds the newest page
    page_id = torch.where(free, FREE, page_id)
    fill = torch.where(free, 0, torch.randint(1, P + 1, (B, H, S), generator=gen))
    fill[rows] = ((length - 1) % P + 1)[:, None].expand(B, H)
    pinned = (torch.rand(B, H, S, generator=gen) < pinned_share) & ~free
    if all_pinned:
        pinned = torch.ones(B, H, S, dtype=torch.bool)
    a, b = draw(B, H, S, D), draw(B, H, S, D)
    twins = torch.rand(B, H, S, generator=gen) < 0.3  # copy slot 0's summaries: bound ties
    a = torch.where(twins[..., None], a[:, :, :1], a)
    b = torch.where(twins[..., None], b[:, :, :1], b)
    kmin, kmax = torch.minimum(a, b), torch.maximum(a, b)
    kmin = torch.where(free[..., None], float("inf"), kmin.float()).to(dtype)
    kmax = torch.where(free[..., None], float("-inf"), kmax.float()).to(dtype)
    cache.length.copy_(length)
    cache.page_id.copy_(page_id)
    cache.fill.copy_(fill.int())
    cache.pinned.copy_(pinned)
    cache.timestamp.copy_(torch.randint(0, 4, (B, H, S), generator=gen))
    cache.current.copy_(current)
    cache.kmin.copy_(kmin)
    cache.kmax.copy_(kmax)
    cache.k.copy_(draw(*cache.k.shape))
    cache.v.copy_(draw(*cache.v.shape))
    to = dict(device=device)
    return RaaSInputs(cache, draw(B, H, G, D).to(**to), draw(B, H, 1, D).to(**to),
                      draw(B, H, 1, D).to(**to), torch.tensor(9, dtype=torch.int64, **to))
