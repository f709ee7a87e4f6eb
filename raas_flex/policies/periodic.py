"""Periodic bulk compression of an evicting pool: the machinery rkv and lazy_eviction share.

Both sources let the cache grow by a fixed number of tokens (R-KV's buffer, LazyEviction's
observation window) and then cut it back in one go to the tokens that score best, keeping a
protected recent part. On the paged pool (docs/algorithms.md, "Periodic compression"):

* The period is `period_pages` whole pages. A sequence reaches a checkpoint on the decode
  step whose appended token makes its length (prompt included) a multiple of the period:
  its pages are then all full, so a checkpoint always cuts at a page boundary.
* At a checkpoint the pool keeps `slots - period_pages` pages: every pinned page, every
  page the policy protects (its recent window) and the current page, then the best of the
  rest by the policy's page score (ties: the older page). The others are freed at once
  (fill 0, page FREE): the period's new pages find free slots, so no page is evicted
  between checkpoints. This step already attends the compressed set.
* Fallback: if pinned and protected pages alone exceed `slots - period_pages`, fewer slots
  are freed, and a page that opens without a free slot evicts the unpinned page with the
  lowest score frozen at the last checkpoint (pages opened since are protected).

Per (sequence, kv head) state, fixed shapes, no host sync; the page scores are computed on
every step (branch-free) and used only on checkpoint rows.
"""

from __future__ import annotations

import torch

from raas_flex.cache.pool import FREE, LayerCache
from raas_flex.policies.base import ConfigView, Policy
from raas_flex.policies.scores import rank_descending
from raas_flex.sizing import pages

FROZEN = "periodic_frozen"  # [B, H, S] float32: page scores at the last checkpoint
FRESH = "periodic_fresh"  # [B, H, S] bool: opened since the sequence's last checkpoint
# Finite key above any score: pages opened since the checkpoint are evicted last.
PROTECTED = float(torch.finfo(torch.float32).max)


def period_pages(tokens: int, page_size: int) -> int:
    """A period of `tokens` rounded up to whole pages."""
    return pages(tokens, page_size)


def check_room(name: str, tokens: int, kept_pages: int, config: ConfigView) -> None:
    """Refuse a budget that cannot hold `kept_pages` pages after freeing one period
    (`tokens`, rounded up to pages) at a checkpoint."""
    period = period_pages(tokens, config.page_size)
    need = period + kept_pages
    if config.slots < need:
        raise ValueError(
            f"{name}={tokens} tokens ({period} pages of {config.page_size}) leaves fewer than "
            f"{kept_pages} pages of budget={config.budget} after a checkpoint frees one "
            f"period; raise budget to >= {need * config.page_size} or lower {name}."
        )


class PeriodicCompressionPolicy(Policy):
    """An evicting policy that frees one period of pages at each checkpoint. Subclasses
    name their period (`period_tokens`), pass their page scores ([B, H, S], higher is
    kept) to `compress` from `update`, and may widen `protected`."""

    def __init__(self, config: ConfigView) -> None:
        super().__init__(config)
        self.period_pages = period_pages(self.period_tokens(), config.page_size)

    def period_tokens(self) -> int:
        raise NotImplementedError

    def init_state(self, cache: LayerCache) -> None:
        cache.policy_state[FROZEN] = torch.zeros_like(cache.fill, dtype=torch.float32)
        cache.policy_state[FRESH] = torch.zeros_like(cache.fill, dtype=torch.bool)

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        """The fallback victim order (see the module note)."""
        return torch.where(cache.policy_state[FRESH], PROTECTED, cache.policy_state[FROZEN])

    def on_open(self, cache: LayerCache, opened: torch.Tensor, step: torch.Tensor) -> None:
        cache.policy_state[FRESH].logical_or_(opened)

    def protected(self, cache: LayerCache) -> torch.Tensor:
        """[B, H, S] bool: held pages a checkpoint keeps whatever their score."""
        return torch.zeros_like(cache.pinned)

    def at_checkpoint(self, cache: LayerCache) -> torch.Tensor:
        """[B, 1, 1] bool: this step's append ended a period for the sequence."""
        period = self.period_pages * cache.page_size
        return (cache.length % period == 0)[:, None, None]

    def compress(self, cache: LayerCache, scores: torch.Tensor) -> None:
        """On checkpoint rows, free every held page outside the kept set; freeze scores."""
        held = cache.page_id != FREE
        slots = torch.arange(cache.num_slots, device=held.device)
        current = slots == cache.current[..., None]
        forced = held & (cache.pinned | current | self.protected(cache))
        candidate = held & ~forced
        room = self.config.slots - self.period_pages
        open_places = room - forced.sum(-1, keepdim=True)  # [B, H, 1], may be <= 0
        ranked = torch.where(candidate, scores, float("-inf"))
        kept = forced | (candidate & (rank_descending(ranked, cache.page_id) < open_places))
        at = self.at_checkpoint(cache)
        drop = at & held & ~kept
        cache.fill.masked_fill_(drop, 0)
        cache.page_id.masked_fill_(drop, FREE)
        frozen = cache.policy_state[FROZEN]
        frozen.copy_(torch.where(at, scores.float(), frozen))
        cache.policy_state[FRESH].logical_and_(~at)


def held_token_mask(cache: LayerCache) -> torch.Tensor:
    """[B, H, S*P] bool: the pool tokens a sequence holds (offset < fill of its page)."""
    return held_tokens(cache.fill, cache.page_size)


def held_tokens(fill: torch.Tensor, page_size: int) -> torch.Tensor:
    """held_token_mask from the fill counts [B, H, S] alone (for custom ops that get
    tensors, not the cache)."""
    B, H, S = fill.shape
    offset = torch.arange(page_size, device=fill.device)
    return (offset < fill[..., None]).reshape(B, H, S * page_size)
