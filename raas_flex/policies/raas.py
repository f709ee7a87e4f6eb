"""raas: Reasoning-aware attention sparsity (arXiv 2502.11147), page version.

Rule (docs/algorithms.md): every page carries a timestamp, set to the step at which it was
opened; at each decode step the pages judged important for the current query get the
current step as timestamp; when a new page needs room and the budget is full, the unpinned
page with the oldest timestamp is evicted (ties: the oldest page). Attention runs over every
retained page, so a step costs O(L). Prompt pages are pinned unless keep_prefill=False.

Importance (config.importance):
  "top_ratio" (default): the top ceil(top_ratio · live pages) pages by score, top_ratio=0.5,
      counted exactly in integers with top_ratio read as its decimal (0.6 = 3/5).
  "alpha" [project choice]: pages whose softmax share of the page scores is >= alpha
      (1e-4); with the bound as score the softmax is weighted by each page's fill.
Scores (config.score_source): "bound" (default) the Quest min/max upper bound, max over the
GQA group [project choice]; "exact" the page's exact attention mass (study option).
Deviations: timestamps are kept per (sequence, kv head) [project choice]; the current page
is scored like any other page.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies import raas_step_op
from raas_flex.policies.base import Blocks, ConfigView, Policy, PolicyOptions
from raas_flex.policies.keep_all_ops import page_bound
from raas_flex.policies.scores import log_page_mass, top_fraction


@dataclass(frozen=True)
class RaaSOptions(PolicyOptions):
    """No settings beyond the core config: RaaS's rule (importance, top_ratio, alpha,
    score_source) is the library's own and lives in RaaSConfig, shared with raas_hsr and
    the fused step."""


class RaaSPolicy(Policy):
    name = "raas"
    Options = RaaSOptions

    def __init__(self, config: ConfigView) -> None:
        super().__init__(config)
        ratio = config.top_ratio_fraction  # read once: compiled code sees two int constants
        self.top_ratio = (ratio.numerator, ratio.denominator)

    def init_state(self, cache: LayerCache) -> None:
        # raas_step_op's counter of the rows of a sequence done this step: the last one
        # counts the token in cache.length
        cache.policy_state["arrivals"] = torch.zeros(cache.length.shape, dtype=torch.int32,
                                                     device=cache.length.device)

    def fused_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   cache: LayerCache, step: torch.Tensor, scale: float) -> Blocks | None:
        """The step's bookkeeping as raas_step_op.raas_bookkeeping (one kernel on CUDA) for
        RaaS's default rule (top_ratio of Quest's bound) where raas_step_op.fuses; None
        elsewhere and for subclasses, which change the rule."""
        if (type(self) is not RaaSPolicy or self.config.importance != "top_ratio"
                or self.config.score_source != "bound" or not raas_step_op.fuses(cache, q)):
            return None
        raas_step_op.raas_bookkeeping(
            cache.k, cache.v, cache.fill, cache.visible, cache.timestamp, cache.pinned,
            cache.page_id, cache.kmin, cache.kmax, cache.current, cache.length,
            cache.overflow, cache.policy_state["arrivals"], step, k, v, q, cache.page_size,
            scale, *self.top_ratio)
        return self.attend_blocks(cache)

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor:
        return cache.timestamp

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        if self.config.score_source == "exact":
            return log_page_mass(q, cache, scale)
        return page_bound(q, cache, scale)

    def important(self, cache: LayerCache, scores: torch.Tensor) -> torch.Tensor:
        """[B, H, S] bool: the pages that keep a fresh timestamp this step."""
        if self.config.importance == "top_ratio":
            return top_fraction(scores, cache, *self.top_ratio)
        weights = scores
        if self.config.score_source == "bound":
            weights = scores + torch.log(cache.fill.clamp(min=1).float())
        share = torch.softmax(weights, dim=-1)
        return (cache.fill > 0) & (share >= self.config.alpha)

    def update(self, cache: LayerCache, scores: torch.Tensor, step: torch.Tensor) -> None:
        fresh = self.important(cache, scores)
        cache.timestamp.copy_(torch.where(fresh, step, cache.timestamp))
