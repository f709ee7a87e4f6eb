"""dense: keep and attend every token; the reference every other policy is held against."""

from __future__ import annotations

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.masks.decode import pool_blocks
from raas_flex.policies.base import Blocks, Policy


class DensePolicy(Policy):
    """Keeps every page (pool sized for prompt + max new tokens) and attends all of them."""

    name = "dense"
    keeps_all = True

    def attend_blocks(self, cache: LayerCache) -> Blocks:
        """Every held page, listed without a compaction: slots 0 .. (last held slot)."""
        slots = torch.arange(1, cache.num_slots + 1, device=cache.fill.device)
        return pool_blocks(cache.visible, torch.where(cache.fill > 0, slots, 0).amax(-1))
