"""dense: keep and attend every token; the reference every other policy is held against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.masks.decode import pool_blocks
from raas_flex.policies.base import Blocks, Policy, PolicyOptions


@dataclass(frozen=True)
class DenseOptions(PolicyOptions):
    """No settings: every page is kept (pool sized for prompt + max new tokens)."""

    keeps_all = True


class DensePolicy(Policy):
    """Keeps every page (pool sized for prompt + max new tokens) and attends all of them."""

    name = "dense"
    Options = DenseOptions

    def attend_blocks(self, cache: LayerCache) -> Blocks:
        """Every held page, listed without a compaction: slots 0 .. (last held slot), in the
        pool's kernel blocks."""
        slots = torch.arange(1, cache.num_slots + 1, device=cache.fill.device)
        return pool_blocks(cache.visible, torch.where(cache.fill > 0, slots, 0).amax(-1),
                           cache.every_slot[2])
