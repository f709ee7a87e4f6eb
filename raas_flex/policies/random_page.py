"""random: evict a uniformly random unpinned page -- the honest baseline.

Rule (docs/algorithms.md): when a page needs room, evict a non-pinned page chosen uniformly at
random, the prompt kept (keep_prefill=True pins it); seeded and reproducible. Every held
token is attended.
The randomness is a stateless integer hash of (seed, step, page id, batch row,
kv head), not a global RNG: no generator state to carry, the same victims eager and
compiled, and an independent draw for every sequence and kv head. Choosing the slot with
the smallest hash among the unpinned ones is a uniform choice because the hashes of
distinct pages are (near) independent and uniform.
Deviation [project choice]: the hash does not include the layer, so layers whose caches
hold the same pages evict the same page at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import Policy, PolicyOptions, check_int

MASK31 = (1 << 31) - 1


def mix31(x: torch.Tensor) -> torch.Tensor:
    """An avalanche hash of int64 values kept in [0, 2^31): products stay below 2^62, so
    int64 arithmetic never overflows and every backend gives the same bits."""
    for multiplier in (0x2C1B3C6D, 0x297A2D39):
        x = (x ^ (x >> 16)) & MASK31
        x = (x * multiplier) & MASK31
    return x ^ (x >> 16)


def random_keys(seed: int, step: torch.Tensor, page_id: torch.Tensor) -> torch.Tensor:
    """[B, H, S] int64 uniform-looking keys, a pure function of (seed, step, page, b, h)."""
    B, H, _ = page_id.shape
    device = page_id.device
    row = torch.arange(B, device=device)[:, None, None]
    head = torch.arange(H, device=device)[None, :, None]
    x = mix31(torch.full_like(page_id, seed & MASK31))
    for part in (step.to(torch.int64).expand_as(page_id), page_id, row.expand_as(page_id),
                 head.expand_as(page_id)):
        x = mix31(x ^ (part & MASK31))
    return x


@dataclass(frozen=True)
class RandomOptions(PolicyOptions):
    """seed: the baseline's seed; the same seed evicts the same pages."""

    prefix = "random_"
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("random_seed", self.seed, 0)


class RandomPolicy(Policy):
    name = "random"
    Options = RandomOptions

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        return random_keys(self.options.seed, step, cache.page_id)
