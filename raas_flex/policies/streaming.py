"""streaming: attention sinks plus a recent window (StreamingLLM, ICLR 2024).

Source rule: keep the first 4 tokens ("attention sinks") and a window of the most recent
tokens; evict the oldest token outside the sinks.
Here, per page: the first `sinks` pages (default 1, which holds the paper's 4
sink tokens) are pinned, and when a page needs room the oldest unpinned page is evicted
(eviction_key = page_id), so the pool holds exactly the sink pages plus the most recent
pages that fill the budget. Every held token is attended.
Deviations [project choices]: with keep_prefill=True (the library default) the whole
prompt is pinned like the sinks, as RaaS does -- the held set is then prompt + most recent
pages; set keep_prefill=False for the paper's rule (sinks + window only). The paper
re-assigns positions inside the cache; we cache keys after RoPE, so positions stay true.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import ConfigView, Policy, PolicyOptions, check_int
from raas_flex.sizing import MIN_DECODE_PAGES


@dataclass(frozen=True)
class StreamingOptions(PolicyOptions):
    """sinks: pinned sink pages (the paper's 4 sink tokens fit in one page)."""

    prefix = "streaming_"
    sinks: int = 1

    def __post_init__(self) -> None:
        check_int("streaming_sinks", self.sinks, 0, " pages")

    def check(self, config: ConfigView) -> None:
        if self.sinks > config.slots - MIN_DECODE_PAGES:
            raise ValueError(
                f"streaming_sinks={self.sinks} pages leave fewer than {MIN_DECODE_PAGES} of "
                f"the budget's {config.slots} pages for the recent window; lower "
                f"streaming_sinks or raise budget to >= "
                f"{(self.sinks + MIN_DECODE_PAGES) * config.page_size}."
            )


class StreamingPolicy(Policy):
    name = "streaming"
    Options = StreamingOptions

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        return cache.page_id

    def update(self, cache: LayerCache, scores: torch.Tensor | None,
               step: torch.Tensor) -> None:
        # Idempotent; runs before any eviction can happen (the prompt leaves >= 2 free
        # pages, so the first decode step never evicts).
        sinks = (cache.page_id >= 0) & (cache.page_id < self.options.sinks)
        cache.pinned.logical_or_(sinks)
