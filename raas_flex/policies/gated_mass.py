"""Per-page logit statistics from one pass over the pool's keys, as custom ops.

page_log_mass: the per-page log attention mass, reading the keys only on the steps that
need it (recycled). page_logit_stats: the same pass on every step, with each page's
largest logit beside its mass, for lazy_eviction's "is any token of the page important"
and the h2o family's page mass: one kernel instead of an fp32 copy of the pool, a GEMV, a
softmax and a page reduction (issue 20).

recycled needs the exact page mass on its full steps (every `period`-th) and nothing on
the steps between. A branch on the step counter would break the one captured graph, so
the pass is one custom op that always launches and takes the decision on the device:
`page_log_mass(q, k, fill, full, scale)` returns log Σ_{token of page p} e^{q·k·scale}
per query head when `full` is set, and -inf everywhere otherwise. On CUDA it is a Triton
kernel (raas_flex.policies.gated_mass_triton) whose programs skip every key load when
`full` is 0, so a recycled step costs O(S) writes instead of an O(N) pass; elsewhere it is
plain torch (always computed, then discarded). The normalisation over pages
(gated_page_mass_from_log, O(S)) is gated the same way.
"""

from __future__ import annotations

from typing import Optional

import torch

from raas_flex.attention.logit_mods import cap_logits
from raas_flex.cache.pool import LayerCache


def page_logits(q: torch.Tensor, k: torch.Tensor, fill: torch.Tensor, scale: float,
                softcap: float | None) -> torch.Tensor:
    """The torch body of both ops: q·k·scale (then the softcap, if any) of every pool token,
    [B, H, G, S, P] float32, -inf for tokens not held."""
    B, H, G, _ = q.shape
    S = fill.shape[-1]
    logits = cap_logits((q.float() @ k.float().transpose(-1, -2)) * scale, softcap)
    logits = logits.view(B, H, G, S, -1)
    held = torch.arange(logits.shape[-1], device=q.device) < fill[:, :, None, :, None]
    return logits.masked_fill(~held, float("-inf"))


@torch.library.custom_op("raas_flex::page_log_mass", mutates_args=())
def page_log_mass(q: torch.Tensor, k: torch.Tensor, fill: torch.Tensor, full: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """q [B, H, G, D], k [B, H, S·P, D] (the pool), fill [B, H, S] tokens held per slot,
    full [] bool. Returns [B, H, G, S] float32: per-page log-sum-exp of the logits of the
    held tokens (-inf for empty pages), or -inf everywhere when `full` is False."""
    out = torch.logsumexp(page_logits(q, k, fill, scale, None), dim=-1)
    return torch.where(full, out, float("-inf"))


@page_log_mass.register_fake
def _(q, k, fill, full, scale):
    B, H, G, _ = q.shape
    return q.new_empty((B, H, G, fill.shape[-1]), dtype=torch.float32)


@page_log_mass.register_kernel("cuda")
def _(q, k, fill, full, scale):
    from raas_flex.policies.gated_mass_triton import page_log_mass_cuda
    return page_log_mass_cuda(q, k, fill, full, scale)[0]


@torch.library.custom_op("raas_flex::page_logit_stats", mutates_args=())
def page_logit_stats(q: torch.Tensor, k: torch.Tensor, fill: torch.Tensor, scale: float,
                     softcap: Optional[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, H, G, D], k [B, H, S·P, D] (the pool), fill [B, H, S]. Returns two [B, H, G, S]
    float32: per page and query head, the log-sum-exp and the max of the held tokens'
    logits (q·k·scale, then the layer's softcap if any); -inf for empty pages."""
    logits = page_logits(q, k, fill, scale, softcap)
    return torch.logsumexp(logits, dim=-1), logits.amax(-1)


@page_logit_stats.register_fake
def _(q, k, fill, scale, softcap):
    B, H, G, _ = q.shape
    shape = (B, H, G, fill.shape[-1])
    return q.new_empty(shape, dtype=torch.float32), q.new_empty(shape, dtype=torch.float32)


@page_logit_stats.register_kernel("cuda")
def _(q, k, fill, scale, softcap):
    from raas_flex.policies.gated_mass_triton import page_log_mass_cuda
    return page_log_mass_cuda(q, k, fill, None, scale, softcap, want_max=True)


def held_page_mass(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """scores.page_mass over every held token (softmax under the layer's rules, summed per
    page, max over the group), from one pass over the keys: e^(log mass − log-sum-exp).
    [B, H, S] float32, 0 for empty pages."""
    log_mass, _ = page_logit_stats(q, cache.k, cache.fill, scale, cache.softcap)
    return torch.exp(log_mass - _log_normaliser(log_mass, cache)).amax(2).nan_to_num(0.0)


def _log_normaliser(log_mass: torch.Tensor, cache: LayerCache) -> torch.Tensor:
    """log Σ over held tokens of e^logit, plus the sink's e^logit if the layer has sinks:
    [B, H, G, 1] from the per-page log masses [B, H, G, S]."""
    total = torch.logsumexp(log_mass, dim=-1, keepdim=True)
    if cache.sinks is not None:  # [H, G]: the sink joins the normaliser
        total = torch.logaddexp(total, cache.sinks.float()[None, :, :, None])
    return total


def page_max_weight(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """The largest softmax weight any held token of each page gets from any query head of
    the group, over every held token under the layer's own logit rules (softcap; the sink
    in the normaliser), as scores.token_weights(...).view(..., S, P).amax over the group
    and the page. [B, H, S] float32, 0 for empty pages."""
    log_mass, top = page_logit_stats(q, cache.k, cache.fill, scale, cache.softcap)
    return torch.exp(top - _log_normaliser(log_mass, cache)).amax(2).nan_to_num(0.0)


def page_mass_from_log(log_mass: torch.Tensor) -> torch.Tensor:
    """Softmax mass of each page, max over the GQA group: [B, H, G, S] -> [B, H, S].
    Equal to scores.page_mass over every held token (the softmax normalised per query
    head, then summed per page)."""
    total = torch.logsumexp(log_mass, dim=-1, keepdim=True)  # [B, H, G, 1]
    return torch.exp(log_mass - total).amax(2)


@torch.library.custom_op("raas_flex::gated_page_mass_from_log", mutates_args=())
def gated_page_mass_from_log(log_mass: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """page_mass_from_log ([B, H, G, S] -> [B, H, S] float32) when `full` ([] bool) is
    set; undefined otherwise. On CUDA one gated Triton program per (sequence, kv head)
    that returns at once unless `full`, where Inductor ran four or five reductions and
    pointwise kernels every step (~8 µs of a recycled step at 128k on the H200, issue 15,
    lever 27); elsewhere plain torch, always computed."""
    return page_mass_from_log(log_mass)


@gated_page_mass_from_log.register_fake
def _(log_mass, full):
    B, H, _, S = log_mass.shape
    return log_mass.new_empty((B, H, S))


@gated_page_mass_from_log.register_kernel("cuda")
def _(log_mass, full):
    from raas_flex.policies.gated_mass_triton import gated_page_mass_cuda
    return gated_page_mass_cuda(log_mass, full)


def gated_page_mass(q: torch.Tensor, cache: LayerCache, scale: float,
                    full: torch.Tensor) -> torch.Tensor:
    """scores.page_mass over every held token when `full` ([] bool) is set; undefined
    otherwise, when the caller reads none of it. [B, H, S] float32."""
    log_mass = page_log_mass(q, cache.k, cache.fill, full, scale)
    return gated_page_mass_from_log(log_mass, full)
