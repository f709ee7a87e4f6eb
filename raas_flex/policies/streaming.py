"""streaming: attention sinks plus a recent window (StreamingLLM, ICLR 2024).

Source rule: keep the first 4 tokens ("attention sinks") and a window of the most recent
tokens; evict the oldest token outside the sinks.
Here, per page: the first `streaming_sinks` pages (default 1, which holds the paper's 4
sink tokens) are pinned, and when a page needs room the oldest unpinned page is evicted
(eviction_key = page_id), so the pool holds exactly the sink pages plus the most recent
pages that fill the budget. Every held token is attended.
Deviations [project choices]: with keep_prefill=True (the library default) the whole
prompt is pinned like the sinks, as RaaS does -- the held set is then prompt + most recent
pages; set keep_prefill=False for the paper's rule (sinks + window only). The paper
re-assigns positions inside the cache; we cache keys after RoPE, so positions stay true.
"""

from __future__ import annotations

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import Policy


class StreamingPolicy(Policy):
    name = "streaming"

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        return cache.page_id

    def update(self, cache: LayerCache, scores: torch.Tensor | None,
               step: torch.Tensor) -> None:
        # Idempotent; runs before any eviction can happen (the prompt leaves >= 2 free
        # pages, so the first decode step never evicts).
        sinks = (cache.page_id >= 0) & (cache.page_id < self.config.streaming_sinks)
        cache.pinned.logical_or_(sinks)
