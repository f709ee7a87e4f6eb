"""h2o_horizon: h2o whose accumulated mass forgets over a horizon proportional to the budget [ours] (issue 17).

Rule: h2o_decay's (h2o_decay.py: score <- gamma * score + mass each decode step; the lowest
score outside the recent window is evicted), with gamma set by the budget instead of fixed:
gamma = 1 - 1 / (horizon * budget), i.e. a page's score forgets with a time constant of
`horizon` budgets of decoding (horizon = 4 by default). horizon -> infinity is h2o.

Why (accuracy v2, bench/results/accuracy/v2/): one fixed gamma cannot serve every budget.
h2o (no forgetting) wins where a long-dormant value must survive and the budget is large
(recall and mixture at L = 1/2: 64/64), but crowds out recent values at small budgets
(registers at L = 1/8: 55); gamma = 0.999 (a time constant of 1,000 steps, ~4 budgets at
L = 1/8) kept the registers and lemmas (60 and 63 of 64 at L = 1/8) but lost recall at
L = 1/2 (48). A pool of L tokens turns over about every L steps, so what a score should
remember is naturally counted in budgets: a page is kept for its reads of the last few
turnovers, not of the whole decode. The constant 4 was read off that gamma sweep on the
same test problems; on 64 other test problems it held (bench/results/accuracy/v2_heldout/).
Deviations from h2o: the decay only (page granularity, the GQA max, accumulation from the
first decode step, zero for a newly opened page). O(L) memory and time, as h2o.
"""

from __future__ import annotations

from dataclasses import dataclass

from raas_flex.policies.base import ConfigView, check_float
from raas_flex.policies.h2o import H2OOptions
from raas_flex.policies.h2o_decay import H2ODecayPolicy


@dataclass(frozen=True)
class H2OHorizonOptions(H2OOptions):
    """recent_ratio: as h2o's (0.5); horizon: the score's time constant in budgets of
    decode steps (4.0): gamma = 1 - 1 / (horizon * budget)."""

    prefix = "h2o_horizon_"
    horizon: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float("h2o_horizon_horizon", self.horizon)
        if not self.horizon > 0.0:
            raise ValueError(f"h2o_horizon_horizon={self.horizon} must be > 0 (budgets of "
                             "decode steps; 4 is the default, larger forgets more slowly).")


class H2OHorizonPolicy(H2ODecayPolicy):
    name = "h2o_horizon"
    Options = H2OHorizonOptions

    def decay(self, config: ConfigView) -> float:
        return 1.0 - 1.0 / (self.options.horizon * config.budget)
