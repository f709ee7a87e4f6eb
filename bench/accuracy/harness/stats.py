"""Confidence intervals for accuracies measured on a few hundred problems."""

from __future__ import annotations

import math


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default).

    Why Wilson: unlike the normal approximation it stays inside [0, 1] and is honest at
    accuracies near 0 or 1, where most of our rows sit."""
    if n <= 0:
        raise ValueError(f"n={n}; an interval needs at least one trial.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must lie in 0..n={n}.")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
