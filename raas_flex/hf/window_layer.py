"""WindowLayer: a RaaSCache layer for a sliding-window attention layer.

It holds a ring of the last W tokens (raas_flex/cache/window.py) instead of a paged pool,
and runs no policy: the window already bounds its memory, and evicting inside it would
change the model's own attention. Everything transformers sees (update, seen length,
reset, the refused beam/crop operations) is RaaSLayer's.
"""

from __future__ import annotations

import torch

from raas_flex.cache import prompt_lengths
from raas_flex.config import RaaSConfig
from raas_flex.hf.cache_layer import RaaSLayer
from raas_flex.windowed import new_window_cache


class WindowLayer(RaaSLayer):
    """A layer whose attention is a sliding window of `window` tokens (itself included)."""

    is_sliding = True

    def __init__(self, config: RaaSConfig, window: int, max_cache_len: int | None) -> None:
        super().__init__(config, dense=True, max_cache_len=max_cache_len)
        self.policy = None  # no eviction decisions in a window
        self.window = window

    @property
    def keeps_all(self) -> bool:
        return False

    def allocate(self, key: torch.Tensor, attention_mask: torch.Tensor | None,
                 softcap: float | None = None, sinks: torch.Tensor | None = None) -> None:
        B, H, T, D = key.shape
        prompt_lengths(attention_mask, B, T, key.device)  # checks the mask (left padding)
        self.pool = new_window_cache(self.config, B, H, D, self.window, key.dtype, key.device,
                                     softcap, sinks)
        self._allocated(key)
