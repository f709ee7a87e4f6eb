"""`raas_flex.stats(cache)`: what a RaaSCache holds, attended and evicted, per layer.

Every figure is per sequence and kv head (the unit the budget counts: each kv head keeps
its own pages), averaged over the batch's sequences and the layer's kv heads; only real
tokens count, never pads. "Pages evicted" needs no counter in the decode step: a sequence
opens each logical page exactly once and an evicted page never comes back, so
evicted = pages opened (ceil(tokens seen / page_size)) - pages held.
A sliding-window layer's row names its kind ("window W"): it holds the last min(seen, W)
tokens, attends all of them, and evicts and pins nothing (tokens leave its window by the
model's own rule, not by a policy).
Reading the figures syncs with the device: call it after generate(), not inside a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raas_flex.cache import FREE, LayerCache
from raas_flex.cache.window import WindowCache


@dataclass(frozen=True)
class LayerStats:
    """One layer's pool (or the sum over layers, layer=None), per sequence and kv head."""

    layer: int | None
    policy: str  # the layer's policy ("dense" for a keep-all dense layer)
    capacity: int  # tokens the pool has room for: the budget, or prompt + new tokens
    seen: float  # real tokens the sequence has produced so far (prompt + decoded)
    held: float  # tokens in the pool now
    attended: float  # tokens the last decode step attended (0 before the first step)
    evicted_pages: float  # pages evicted so far
    pinned_pages: float  # pages that are never evicted (the prompt, sinks)


@dataclass(frozen=True)
class CacheStats:
    """Per-layer figures plus their sum over layers (`total`), with a table as __str__."""

    budget: int
    page_size: int
    policy: str
    batch: int
    kv_heads: int
    layers: tuple[LayerStats, ...]
    total: LayerStats

    def __str__(self) -> str:
        return format_table(self)


def stats(cache) -> CacheStats:
    """Per-layer eviction statistics of a prefilled RaaSCache (e.g. generate()'s returned
    cache: `return_dict_in_generate=True`, then `out.cache` / `out.past_key_values`)."""
    from raas_flex.hf.cache import RaaSCache

    if not isinstance(cache, RaaSCache):
        raise TypeError(f"stats() takes a RaaSCache, got {type(cache).__name__}.")
    if not cache.is_prefilled:
        raise ValueError("this RaaSCache is empty: run generate() or a prefill with it first.")
    layers = tuple(window_stats(layer.pool, i) if isinstance(layer.pool, WindowCache)
                   else layer_stats(layer.pool, i, layer.policy.name)
                   for i, layer in enumerate(cache.layers))
    B, H = cache.layers[0].pool.k.shape[:2]
    return CacheStats(cache.config.budget, cache.config.page_size, cache.config.policy, B, H,
                      layers, _sum(layers))


def layer_stats(pool: LayerCache, layer: int | None = None, policy: str = "") -> LayerStats:
    """The figures of one layer's pool (functional API users pass their LayerCache)."""
    live = pool.page_id != FREE  # [B, H, S]
    held_pages = live.sum(-1)  # [B, H]
    opened = (pool.length + pool.page_size - 1) // pool.page_size  # [B]
    return LayerStats(
        layer=layer, policy=policy, capacity=pool.capacity,
        seen=_mean(pool.length),
        held=_mean(torch.where(live, pool.fill, 0).sum(-1)),
        attended=_mean(torch.where(live, pool.visible, 0).sum(-1)),
        evicted_pages=_mean(opened[:, None] - held_pages),
        pinned_pages=_mean((live & pool.pinned).sum(-1)),
    )


def window_stats(ring: WindowCache, layer: int | None = None) -> LayerStats:
    """The figures of a sliding-window layer's ring (see the module docstring)."""
    held = _mean(ring.length.clamp(max=ring.window))
    return LayerStats(layer=layer, policy=f"window {ring.window}", capacity=ring.window,
                      seen=_mean(ring.length), held=held, attended=held,
                      evicted_pages=0.0, pinned_pages=0.0)


def _mean(counts: torch.Tensor) -> float:
    return round(counts.double().mean().item(), 2)


def _sum(layers: tuple[LayerStats, ...]) -> LayerStats:
    """Sums over layers (seen is per sequence, the same in every layer: kept as is)."""
    def total(name: str) -> float:
        return round(sum(getattr(s, name) for s in layers), 2)

    return LayerStats(None, "", sum(s.capacity for s in layers), layers[0].seen,
                      total("held"), total("attended"), total("evicted_pages"),
                      total("pinned_pages"))


COLUMNS = (("layer", "layer"), ("policy", "policy"), ("capacity", "capacity"),
           ("held", "held"), ("attended", "attended"), ("evicted_pages", "evicted pages"),
           ("pinned_pages", "pinned pages"))


def format_table(report: CacheStats) -> str:
    """A plain-text table: one row per layer and a total row."""
    rows = [[_cell(getattr(s, name)) for name, _ in COLUMNS] for s in report.layers]
    rows.append([_cell(getattr(report.total, name)) for name, _ in COLUMNS])
    rows[-1][0] = "all"
    header = [title for _, title in COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    intro = (f"{report.policy} policy, budget {report.budget} tokens, page size "
             f"{report.page_size}; {report.total.seen:g} tokens seen; tokens and pages per "
             f"sequence and kv head (mean over {report.batch} x {report.kv_heads})")
    return "\n".join([intro, *lines])


def _cell(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
