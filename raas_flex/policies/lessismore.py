"""lessismore: one token set shared by all heads, with a recent share (LessIsMore, arXiv
2508.07101), per page.

Source rule (paper and the authors' code DerrickYLJ/LessIsMore; docs/algorithms.md): the
full cache is kept. A selection layer attends densely and picks, for a budget of K
tokens, k = int(0.75 K) "top" tokens and the K - k most recent tokens (4 of which are the
first, sink, tokens when the recent share allows). The top tokens are chosen
globally: every query head ranks the tokens outside the recent window by its logit, the
per-head rankings are interleaved rank by rank (all heads' first choices, then all heads'
second choices, ...), duplicates dropped, and the first k distinct tokens kept. The same
set then serves every head of that layer and of the following layers until the next
selection layer (selection at layer 2 and at a "correction" layer, 12 for an 8B model,
20 for a 4B one; layers 0-1 dense).
Here, per layer and per page: the budget is K = budget // page_size pages, k =
int(top_ratio * K) top pages (top_ratio = 1 - recent share = 0.75) and K - k recent pages:
the newest pages, the current one included, and the first `sinks` pages (1, holding the
4 sink tokens) when K - k >= 2. Each query head of every kv head ranks the other live
pages by Quest's page bound (its own, not the group max); the pages are ordered by their
best (rank, head) position in the interleaved list and the first k kept: one set per
sequence, shared by all kv heads. A top-k select over the S page summaries per head and
one over the slots: no pass over token data, so attention is O(L) and memory O(N), as
Quest's. The kernel reads exactly the chosen pages (a listed block mask).
Deviations [project choices]: page granularity with the page bound instead of exact
logits (docs/algorithms.md gives the measured agreement with the token rule); every
layer selects for itself (cross-layer reuse needs state shared between layers, which the
single-layer policy does not have; dense_layers=2 matches the source's dense layers 0-1);
the selection layer attends its selection, not densely; the sinks are one page.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import Blocks, ConfigView, Policy, PolicyOptions, check_int
from raas_flex.policies.scores import head_summary_bound

UNRANKED = torch.iinfo(torch.int64).max


@dataclass(frozen=True)
class LessIsMoreOptions(PolicyOptions):
    """top_ratio: share of the budget's pages chosen by the shared ranking, the rest being
    the recent window (the source's ratio 0.75, i.e. a 25 % recent share). sinks: first
    pages kept inside the recent share when it has >= 2 pages (the source's 4 sink tokens
    fit in one page)."""

    prefix = "lim_"
    keeps_all = True
    # One set for all kv heads: the heads' rankings are pooled (main's tensor-parallel
    # check reads this flag and refuses such a policy over sharded heads).
    per_kv_head = False
    top_ratio: float = 0.75
    sinks: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.top_ratio < 1.0:
            raise ValueError(f"lim_top_ratio={self.top_ratio} must lie in [0, 1): the rest "
                             "of the budget is the recent window (the source uses 0.75).")
        check_int("lim_sinks", self.sinks, 0, " pages")

    def split(self, config: ConfigView) -> tuple[int, int, int]:
        """(top pages, recent pages, sink pages) of the budget."""
        pages = config.slots
        top = int(pages * self.top_ratio)
        recent = pages - top
        sinks = min(self.sinks, recent - 1) if recent >= 2 else 0
        return top, recent - sinks, sinks


class LessIsMorePolicy(Policy):
    name = "lessismore"
    Options = LessIsMoreOptions

    def __init__(self, config: ConfigView) -> None:
        super().__init__(config)
        self.top, self.recent, self.sinks = self.options.split(config)

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        """Per query head page bounds, [B, H, G, S]; -inf for empty slots."""
        return head_page_bound(q, cache, scale)

    def select(self, cache: LayerCache, scores: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        return self.select_blocks(cache, scores, step)[0]

    def select_blocks(self, cache: LayerCache, scores: torch.Tensor,
                      step: torch.Tensor) -> tuple[torch.Tensor, Blocks]:
        chosen = self.shared_pages(cache, scores)  # [B, 1, S]
        B, H, S = cache.fill.shape
        k = min(self.top + self.recent + self.sinks, S)
        # The chosen slots first (at most k of them): a sorted top-k over the slot flags.
        index = torch.topk(chosen[:, 0].float(), k, dim=-1, sorted=True).indices
        count = chosen.sum(-1, keepdim=True, dtype=torch.int32).expand(B, H, 1)
        index = torch.nn.functional.pad(index.to(torch.int32), (0, S - k))  # [B, S]
        blocks = (count, index[:, None, None, :].expand(B, H, 1, S))
        return torch.where(chosen, cache.fill, 0), blocks

    def shared_pages(self, cache: LayerCache, bounds: torch.Tensor) -> torch.Tensor:
        """[B, 1, S] bool: the recent and sink pages plus the top pages of the interleaved
        per-head rankings. A keep-all pool holds the same page in the same slot for
        every kv head, so one set of slots serves them all."""
        B, H, G, S = bounds.shape
        page = cache.page_id[:, :1]  # [B, 1, S]
        live = page >= 0
        newest = page.amax(-1, keepdim=True)
        recent = live & (page > newest - self.recent)
        sink = live & (page < self.sinks)
        candidate = (live & ~recent & ~sink)[:, :, None]  # [B, 1, 1, S]
        chosen = recent | sink
        k = min(self.top, S)
        if k == 0:
            return chosen
        ranked = torch.where(candidate, bounds, float("-inf")).reshape(B, H * G, S)
        top = torch.topk(ranked, k, dim=-1)  # sorted: column r holds each head's rank r
        rank = torch.arange(k, device=bounds.device)[None, None, :]
        head = torch.arange(H * G, device=bounds.device)[None, :, None]
        position = torch.where(top.values > float("-inf"), rank * (H * G) + head, UNRANKED)
        first = torch.full((B, S), UNRANKED, dtype=torch.int64, device=bounds.device)
        first.scatter_reduce_(1, top.indices.reshape(B, -1), position.reshape(B, -1), "amin")
        best = torch.topk(-first, k, dim=-1)  # the k earliest positions
        picked = torch.zeros(B, S, dtype=torch.bool, device=bounds.device)
        picked.scatter_(1, best.indices, best.values > -UNRANKED)
        return chosen | picked[:, None]


def head_page_bound(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """Quest's bound of every page for every query head, [B, H, G, S] float32; -inf on
    empty slots. As keep_all_ops.page_bound, without the max over the group."""
    bound = head_summary_bound(q.float(), cache.kmax, cache.kmin)
    return (bound * scale).masked_fill((cache.fill == 0)[:, :, None], float("-inf"))
