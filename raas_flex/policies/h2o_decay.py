"""h2o_decay: h2o whose accumulated attention mass decays geometrically [ours] (issue 17).

Rule: h2o's (h2o.py: each held page collects its exact attention mass, max over the GQA
group; the page with the lowest score outside the recent window of
max(1, round(recent_ratio x budget pages)) pages is evicted; the prompt is pinned under
keep_prefill), except that each decode step first multiplies every score by gamma:
score <- gamma * score + mass. gamma = 1 is h2o step for step.

Why: h2o's accumulator never forgets. A page read heavily for a few steps and then dead (a
register's value read twice, then overwritten) keeps its large sum and crowds out pages
needed later. With decay, a score reflects recent reading: a dead page's score halves every
log(0.5) / log(gamma) steps, while a page that is read again and again (a lemma used for the
whole chain) stays high. Default gamma = 0.98: a half-life of log(0.5) / log(0.98) ~ 34
steps, about 2.6 chain steps of 13 tokens; a value dead for 10 chain steps (130 tokens)
keeps 0.98^130 ~ 7 % of its score, and under 5 % after 150 tokens (~11.5 chain steps).
A page's score stays below 1 / (1 - gamma) = 50 (its mass is at most 1 a step), far under
h2o's window key. The cost: a value dormant for long and then read again (recall) is
forgotten sooner than under h2o.
Deviations from h2o [project choice]: the decay, nothing else (page granularity, the GQA
max, accumulation from the first decode step, zero for a newly opened page, as h2o).
O(L) memory (one float per held page) and O(L) time per step, as h2o.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import ConfigView, check_float
from raas_flex.policies.h2o import ACCUMULATED, H2OOptions, H2OPolicy


@dataclass(frozen=True)
class H2ODecayOptions(H2OOptions):
    """recent_ratio: as h2o's (0.5, the 1:1 split); gamma: the per-step decay of the
    accumulated mass, in (0, 1]; 0.98 (half-life ~34 steps) by default, 1 is h2o."""

    prefix = "h2o_decay_"
    gamma: float = 0.98

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float("h2o_decay_gamma", self.gamma)
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"h2o_decay_gamma={self.gamma} must lie in (0, 1]; 1 is h2o, "
                             "0.98 (half-life ~34 steps) the default.")


class H2ODecayPolicy(H2OPolicy):
    name = "h2o_decay"
    Options = H2ODecayOptions

    def __init__(self, config: ConfigView) -> None:
        super().__init__(config)
        self.gamma = self.decay(config)  # a constant of the compiled graph

    def decay(self, config: ConfigView) -> float:
        """The per-step factor: here the configured gamma (h2o_horizon derives its own)."""
        return float(self.options.gamma)

    def update(self, cache: LayerCache, scores: torch.Tensor, step: torch.Tensor) -> None:
        cache.policy_state[ACCUMULATED].mul_(self.gamma).add_(scores)
