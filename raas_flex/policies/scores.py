"""Page scores shared by the policies: Quest's upper bound and exact attention mass."""

from __future__ import annotations

import math

import torch

from raas_flex.cache.pool import LayerCache


def page_bound(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """Quest upper bound on max_{k in page} q·k·scale, max over the GQA group.

    q: [B, H, G, D]. Returns [B, H, S] float32, -inf for empty slots.
    sum_i max(q_i kmin_i, q_i kmax_i) == q⁺·kmax + q⁻·kmin, two batched matmuls.
    """
    qf = q.float()
    kmax = torch.nan_to_num(cache.kmax, neginf=0.0)  # empty slots: masked below
    kmin = torch.nan_to_num(cache.kmin, posinf=0.0)
    bound = qf.clamp(min=0) @ kmax.transpose(-1, -2) + qf.clamp(max=0) @ kmin.transpose(-1, -2)
    bound = bound.amax(2) * scale  # [B, H, S]
    return bound.masked_fill(cache.fill == 0, float("-inf"))


def page_mass(q: torch.Tensor, cache: LayerCache, scale: float,
              visible: torch.Tensor) -> torch.Tensor:
    """Exact softmax mass each slot receives over the `visible` tokens, max over the group.

    q: [B, H, G, D]; visible: [B, H, S] tokens per slot. Returns [B, H, S] float32.
    """
    B, H, G, _ = q.shape
    S, P = cache.num_slots, cache.page_size
    logits = (q.float() @ cache.k.float().transpose(-1, -2)) * scale  # [B, H, G, S*P]
    offset = torch.arange(P, device=q.device)
    seen = (offset < visible[..., None]).reshape(B, H, 1, S * P)  # [B, H, 1, S*P]
    probs = torch.softmax(logits.masked_fill(~seen, float("-inf")), dim=-1)
    probs = torch.nan_to_num(probs)  # a (never expected) fully hidden row
    return probs.view(B, H, G, S, P).sum(-1).amax(2)


def log_page_mass(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """log of page_mass over every filled token; -inf for empty slots. [B, H, S]."""
    mass = page_mass(q, cache, scale, cache.fill)
    return torch.log(mass).masked_fill(cache.fill == 0, -math.inf)


def rank_descending(scores: torch.Tensor, page_id: torch.Tensor) -> torch.Tensor:
    """Rank of each slot by score, highest first, ties to the older page. [B, H, S] int64."""
    by_page = torch.argsort(page_id, dim=-1, stable=True)
    order = by_page.gather(-1, torch.argsort(scores.gather(-1, by_page), dim=-1,
                                             descending=True, stable=True))
    positions = torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def top_fraction(scores: torch.Tensor, cache: LayerCache, fraction: float) -> torch.Tensor:
    """The top ceil(fraction · live pages) live slots by score. [B, H, S] bool."""
    live = cache.fill > 0
    count = torch.ceil(live.sum(-1, keepdim=True) * fraction).to(torch.int64)
    return live & (rank_descending(scores, cache.page_id) < count)
