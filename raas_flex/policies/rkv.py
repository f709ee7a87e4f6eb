"""rkv: redundancy-aware compression for reasoning models (R-KV, arXiv 2505.24133), per page.

Source rule (paper and the authors' code, Zefan-Cai/R-KV; docs/algorithms.md): new tokens
collect in a buffer of 128; when the buffer is full (every 128 decoded tokens) and the
cache exceeds its budget, every token is scored and the cache is cut back to the budget.
A token's score is lambda * importance - (1 - lambda) * redundancy: importance is the
softmax attention it receives from the last alpha = 8 queries (the observation window;
logits max-pooled over the GQA group, then averaged over the 8 queries) max-pooled over
neighbouring tokens with a kernel of 7; redundancy is the softmax over tokens of its mean
cosine similarity to the other held keys. The last 8 tokens are always kept. lambda = 0.1
(README's default table; the CLI's default is 0.07).
Here: periodic compression on the paged pool (raas_flex/policies/periodic.py) with
period = the buffer in pages (8 pages of 16). Each step records the query in a ring of the
last `window` queries; a checkpoint scores every held page by the sum of its tokens' R-KV
scores (only then: rkv_scores.py), keeps the pinned pages, the pages holding the last
`window` tokens and the best-scoring pages, and frees one buffer of pages. Our `budget` is
R-KV's budget + buffer (the most the cache ever holds).
Deviations [project choices]: page granularity (a page is kept or freed whole, by the sum
of its tokens' scores); the importance softmax runs over every held token (R-KV's leaves
the window's own tokens out); the importance max-pool runs inside each page (R-KV pools along the
cache order, which after the first compression is score order, not position); the
redundancy omits R-KV's rule that spares, for each token, its most recent neighbour with
similarity > 0.5 (it needs the N x N similarity matrix; without it the mean similarity is
one dot product per token with the sum of the unit keys, O(L·D) per checkpoint, see
docs/algorithms.md for the measured agreement); state per (sequence, kv head); with
keep_prefill=True (default) the prompt is pinned, while R-KV may evict it
(keep_prefill=False for that); the checkpoint step attends the compressed set (R-KV
compresses after that step's attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import ConfigView, PolicyOptions, check_int
from raas_flex.policies.periodic import PeriodicCompressionPolicy, check_room
from raas_flex.policies.rkv_scores import rkv_page_scores
from raas_flex.sizing import MIN_DECODE_PAGES

QUERIES = "rkv_queries"  # [B, H, window, G, D] float32: the last `window` queries
SEEN = "rkv_seen"  # [] int64: queries written so far (the next goes to SEEN % window)
RECORDED = "rkv_recorded"  # [B, window] bool: ring entries holding a real query


@dataclass(frozen=True)
class RKVOptions(PolicyOptions):
    """buffer: tokens between compressions (R-KV's B_buffer, 128; rounded up to pages).
    window: observation queries and always-kept recent tokens (R-KV's alpha, 8).
    mix_lambda: weight of importance against redundancy (0.1). pool_kernel: width of the
    max-pool over neighbouring tokens' importance (7)."""

    prefix = "rkv_"
    reads_exact_keys = True  # exact attention of the observation queries, cosine of keys
    buffer: int = 128
    window: int = 8
    mix_lambda: float = 0.1
    pool_kernel: int = 7

    def __post_init__(self) -> None:
        check_int("rkv_buffer", self.buffer, 1, " tokens")
        check_int("rkv_window", self.window, 1, " queries")
        check_int("rkv_pool_kernel", self.pool_kernel, 1)
        if self.pool_kernel % 2 == 0:
            raise ValueError(f"rkv_pool_kernel={self.pool_kernel} must be odd (R-KV uses 7).")
        if not 0.0 <= self.mix_lambda <= 1.0:
            raise ValueError(f"rkv_mix_lambda={self.mix_lambda} must lie in [0, 1] "
                             "(R-KV uses 0.1).")

    def check(self, config: ConfigView) -> None:
        check_room("rkv_buffer", self.buffer, MIN_DECODE_PAGES, config)


class RKVPolicy(PeriodicCompressionPolicy):
    name = "rkv"
    Options = RKVOptions

    def period_tokens(self) -> int:
        return self.options.buffer

    def init_state(self, cache: LayerCache) -> None:
        super().init_state(cache)
        B, H, _ = cache.fill.shape
        device = cache.fill.device
        cache.policy_state[SEEN] = torch.zeros((), dtype=torch.int64, device=device)
        cache.policy_state[RECORDED] = torch.zeros(B, self.options.window, dtype=torch.bool,
                                                   device=device)
        # Sized for the GQA group by on_prefill (or, without a prefill, by the first step).
        cache.policy_state[QUERIES] = torch.zeros(B, H, self.options.window, 1,
                                                  cache.k.shape[-1], device=device)

    def on_prefill(self, q: torch.Tensor, cache: LayerCache, lengths: torch.Tensor) -> None:
        """Seed the ring with the prompt's last `window` real queries (as R-KV does)."""
        B, Hq, T, D = q.shape
        H, W = cache.fill.shape[1], self.options.window
        ring = self._ring(cache, Hq // H)
        take = min(W, T)
        last = q[:, :, T - take:].float().view(B, H, Hq // H, take, D).transpose(2, 3)
        ring.zero_()
        ring[:, :, :take].copy_(last)
        position = torch.arange(T - take, T, device=q.device)
        recorded = cache.policy_state[RECORDED]
        recorded.zero_()
        recorded[:, :take].copy_(position >= (T - lengths)[:, None])
        cache.policy_state[SEEN].fill_(take % W)

    def protected(self, cache: LayerCache) -> torch.Tensor:
        """Pages holding the last `window` tokens."""
        P = cache.page_size
        first = (cache.length - self.options.window).clamp(min=0) // P  # [B]
        return cache.page_id >= first[:, None, None]

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        """Records the query in the ring every step; the page scores ([B, H, S]) only for
        the sequences at a checkpoint (-inf for the others), the only rows `compress`
        reads: between checkpoints no key is read (rkv_scores.py)."""
        ring = self._ring(cache, q.shape[2])
        seen, recorded = cache.policy_state[SEEN], cache.policy_state[RECORDED]
        at = (seen % self.options.window).view(1)
        ring.index_copy_(2, at, q.float()[:, :, None])
        recorded.index_fill_(1, at, True)
        seen.add_(1)
        due = self.at_checkpoint(cache).view(-1)  # [B]
        return rkv_page_scores(ring, recorded, cache.k, cache.fill, due, cache.sinks, scale,
                               cache.softcap, self.options.mix_lambda,
                               self.options.pool_kernel)

    def update(self, cache: LayerCache, scores: torch.Tensor, step: torch.Tensor) -> None:
        self.compress(cache, scores)

    def _ring(self, cache: LayerCache, group: int) -> torch.Tensor:
        """The query ring [B, H, window, G, D], sized for the GQA group at prefill. A cache
        that skipped prefill (bench/latency/decode_state.py builds one directly) gets it
        on its first step: a Python-level shape check, so a compiled step then compiles
        a second time once, with the sized ring."""
        ring = cache.policy_state[QUERIES]
        if ring.shape[3] != group:
            B, H, W, _, D = ring.shape
            ring = torch.zeros(B, H, W, group, D, device=ring.device)
            cache.policy_state[QUERIES] = ring
        return ring
