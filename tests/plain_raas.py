"""A slow, obviously-correct RaaS: Python dicts of pages per (sequence, kv head).

Used only by tests, to check the tensor implementation decision for decision.
Rules (docs/algorithms.md): new page -> timestamp = step; each step the top ceil(r · pages)
pages by Quest bound (ties: older page first) get timestamp = step; a new page with the
budget full evicts the unpinned page with the oldest timestamp (ties: oldest page).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction


@dataclass
class Page:
    tokens: int = 0
    timestamp: int = 0
    pinned: bool = False
    lo: list[float] = field(default_factory=list)  # element-wise min of the keys
    hi: list[float] = field(default_factory=list)  # element-wise max of the keys

    def add(self, key: list[float]) -> None:
        self.lo = [min(a, b) for a, b in zip(self.lo, key)] if self.tokens else list(key)
        self.hi = [max(a, b) for a, b in zip(self.hi, key)] if self.tokens else list(key)
        self.tokens += 1

    def bound(self, q: list[float]) -> float:
        """max over keys of q·k is at most sum_i max(q_i min_i, q_i max_i)."""
        return sum(max(qi * a, qi * b) for qi, a, b in zip(q, self.lo, self.hi))


class PlainRaaS:
    """RaaS decisions for one (sequence, kv head)."""

    def __init__(self, budget: int, page_size: int, top_ratio: float, keep_prefill: bool):
        self.slots = budget // page_size
        self.page_size = page_size
        self.top_ratio = top_ratio
        self.keep_prefill = keep_prefill
        self.pages: dict[int, Page] = {}
        self.length = 0
        self.evicted: list[int] = []

    def prefill(self, keys: list[list[float]]) -> None:
        for position, key in enumerate(keys):
            page = self.pages.setdefault(position // self.page_size,
                                         Page(pinned=self.keep_prefill))
            page.add(key)
        self.length = len(keys)

    def decode(self, key: list[float], queries: list[list[float]], step: int) -> None:
        """Append one token, then refresh the timestamps of the important pages."""
        page_id = self.length // self.page_size
        if self.length % self.page_size == 0:
            if len(self.pages) == self.slots:
                candidates = [p for p, page in self.pages.items() if not page.pinned]
                victim = min(candidates, key=lambda p: (self.pages[p].timestamp, p))
                del self.pages[victim]
                self.evicted.append(victim)
            self.pages[page_id] = Page(timestamp=step)
        self.pages[page_id].add(key)
        self.length += 1
        score = {p: max(page.bound(q) for q in queries) for p, page in self.pages.items()}
        ranked = sorted(self.pages, key=lambda p: (-score[p], p))
        # exact decimal arithmetic: top_ratio=0.6 of 25 pages is 15 (RaaSConfig.top_ratio)
        for p in ranked[: math.ceil(Fraction(repr(self.top_ratio)) * len(ranked))]:
            self.pages[p].timestamp = step

    def state(self) -> dict[int, tuple[int, int, bool]]:
        """page id -> (tokens, timestamp, pinned)."""
        return {p: (page.tokens, page.timestamp, page.pinned)
                for p, page in self.pages.items()}
