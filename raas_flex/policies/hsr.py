"""hsr: threshold attention with a certified dropped-mass bound (after arXiv 2410.10165).

Source rule: HSR (half-space reporting) returns the keys with q·k >= b and attends only
those, with a provably small softmax error; the paper is theory only, with no code.
Here [project choice, docs/algorithms.md]: the page bound u_p is the half-space test per page.
Each step attends every held page whose bound (max over the GQA group) lies within
log(1/epsilon) of the step's largest bound, plus the current page, and stores in
policy_state["dropped_mass_bound"] ([B, H] float32, the max over the kv head's query
heads) a certified upper bound on the softmax mass that the step dropped, i.e. the share
of the dense attention over the held tokens that falls on tokens not attended.

Certificate. Fix a query head g, let A be the attended tokens and X the dropped ones, and
write l_k = q_g·k·scale. The dropped mass is m = D / (R + D) with R = Σ_{k∈A} e^{l_k},
D = Σ_{k∈X} e^{l_k}; m increases with D and decreases with R, so any D' >= D and any
0 < R' <= R give m <= D' / (R' + D').
  * D': every key k of a page p satisfies l_k <= u_{g,p} = scale·Σ_i max(q_i kmin_p,i,
    q_i kmax_p,i) (each term of q·k is at most the larger of its two corner products), so
    D <= D' = Σ_{p dropped} fill_p · e^{u_{g,p}}. A dropped page has max_g u_{g,p} <
    M - log(1/ε), M the step's largest bound, hence D' <= |X| · ε · e^M: the bound
    shrinks linearly with ε.
  * R': the exact logits of the tokens of two attended pages -- the page with the
    largest bound (always attended: its bound is M) and the current page -- give
    R' = Σ e^{l_k} over those tokens, a subset of A, so R' <= R. This costs O(P) per
    step, not O(N).
Floating point: the fp32 dot products behind u and l_k carry a relative error of at most
about D_head · 2^-24 of scale·Σ_i |q_i|·|k_i|; the bound adds that slack to every u and
subtracts it from every l_k; the log-sum-exps and the final ratio run in float64 (with a
1e-6 margin in log space) and the float32 result is rounded up, so the bound also holds
against exact arithmetic. A positive bound below float32's range is reported as its
smallest normal value (1.2e-38): it is 0 only when nothing was dropped.
Keeps every page (O(N) memory; the pool is sized from prompt + max_new_tokens and
`budget` plays no part: ε alone sets what is attended); see raas_hsr for the evicting form.
Deviation: the certificate covers the held tokens; the per-head bound is reported as
the max over the GQA group.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import Policy, PolicyOptions
from raas_flex.policies.scores import fused_reduction, head_summary_bound

BOUND = "dropped_mass_bound"  # [B, H] float32
ATTEND = "hsr_attend"  # [B, H, S] bool: pages attended this step
LOG_MARGIN = 1e-6


def rounding_slack(q: torch.Tensor, keys_abs: torch.Tensor, scale: float) -> torch.Tensor:
    """Upper bound on the fp32 error of scale·q·k for |k| <= keys_abs: [..., G, N]."""
    return (q.abs() @ keys_abs.transpose(-1, -2)) * (scale * slack_unit(q.shape[-1]))


def slack_unit(head_dim: int) -> float:
    """Relative fp32 error of a head_dim-term dot product, any summation order, with
    room to spare: (head_dim + 2) · 2^-23 of the sum of the terms' magnitudes."""
    return (head_dim + 2) * 2.0**-23


def head_bounds(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """Per query head page bounds plus rounding slack, [B, H, G, S]; -inf on empty slots.
    Compiled: bound and slack are two reductions over the same summary loads (one kernel,
    the summaries read once); the slack bounds the fp32 error of any summation order."""
    if fused_reduction(q.shape[2] * cache.kmax.numel()):
        kmax = torch.nan_to_num(cache.kmax, neginf=0.0)[:, :, :, None]  # [B, H, S, 1, D]
        kmin = torch.nan_to_num(cache.kmin, posinf=0.0)[:, :, :, None]
        qe = q[:, :, None]  # [B, H, 1, G, D]
        slack = (qe.abs() * torch.maximum(kmax.abs(), kmin.abs())).sum(-1).transpose(-1, -2)
        bound = (head_summary_bound(q, cache.kmax, cache.kmin) * scale
                 + slack * (scale * slack_unit(q.shape[-1])))
    else:
        kmax = torch.nan_to_num(cache.kmax.to(q.dtype), neginf=0.0)  # [B, H, S, D]
        kmin = torch.nan_to_num(cache.kmin.to(q.dtype), posinf=0.0)
        bound = (head_summary_bound(q, cache.kmax, cache.kmin) * scale
                 + rounding_slack(q, torch.maximum(kmax.abs(), kmin.abs()), scale))
    return bound.masked_fill((cache.fill == 0)[:, :, None, :], float("-inf"))


def threshold_pages(cache: LayerCache, kv_bound: torch.Tensor, epsilon: float) -> torch.Tensor:
    """[B, H, S] bool: live pages within log(1/epsilon) of the largest bound, plus current."""
    top = kv_bound.amax(-1, keepdim=True)
    slots = torch.arange(cache.num_slots, device=kv_bound.device)
    current = slots == cache.current[..., None]
    return (cache.fill > 0) & ((kv_bound >= top - math.log(1.0 / epsilon)) | current)


def retained_log_partition(q: torch.Tensor, cache: LayerCache, scale: float,
                           kv_bound: torch.Tensor) -> torch.Tensor:
    """A lower bound on log Σ_{attended} e^{logit}, [B, H, G], from the exact logits of
    the largest-bound page and the current page (both always attended)."""
    B, H, G, D = q.shape
    P = cache.page_size
    top = kv_bound.argmax(-1)  # [B, H]
    pages = torch.stack([top, cache.current], dim=-1)  # [B, H, 2]
    offset = torch.arange(P, device=q.device)
    index = (pages[..., None] * P + offset).reshape(B, H, 2 * P)
    keys = cache.k.gather(2, index[..., None].expand(B, H, 2 * P, D)).float()
    fill = cache.fill.gather(-1, pages)  # [B, H, 2]
    once = torch.stack([torch.ones_like(top, dtype=torch.bool), cache.current != top], -1)
    valid = (offset < fill[..., None]) & once[..., None]  # [B, H, 2, P]: each page once
    logits = (q @ keys.transpose(-1, -2)) * scale - rounding_slack(q, keys.abs(), scale)
    logits = logits.masked_fill(~valid.reshape(B, H, 1, 2 * P), float("-inf"))
    return torch.logsumexp(logits.double(), dim=-1) - LOG_MARGIN


def certify(q: torch.Tensor, cache: LayerCache, scale: float, epsilon: float) -> torch.Tensor:
    """Choose the pages to attend and store the dropped-mass bound. Returns the kv-head
    page bounds (max over the group, slack included), [B, H, S]."""
    qf = q.float()
    bounds = head_bounds(qf, cache, scale)  # [B, H, G, S]
    kv_bound = bounds.amax(2)
    attend = threshold_pages(cache, kv_bound, epsilon)
    # float64 from here on: log-sum-exps of logits in the thousands lose ~1e-4 in float32.
    dropped = bounds.double() + torch.log(cache.fill.clamp(min=1).double())[:, :, None, :]
    dropped = dropped.masked_fill(attend[:, :, None, :], float("-inf"))
    log_dropped = torch.logsumexp(dropped, dim=-1) + LOG_MARGIN  # [B, H, G]
    log_kept = retained_log_partition(qf, cache, scale, kv_bound)
    exact = torch.sigmoid(log_dropped - log_kept)  # D' / (R' + D')
    # Round up into float32 (2^-22 > half an ulp); 0 only when nothing was dropped, and a
    # positive bound below float32's range becomes its smallest normal value.
    tiny = torch.finfo(torch.float32).tiny
    bound = (exact * (1 + 2.0**-22)).float().clamp(min=tiny, max=1.0)
    bound = torch.where(torch.isinf(log_dropped), 0.0, bound)
    cache.policy_state[BOUND].copy_(bound.amax(2))
    cache.policy_state[ATTEND].copy_(attend)
    return kv_bound


def init_hsr_state(cache: LayerCache) -> None:
    B, H, _ = cache.fill.shape
    cache.policy_state[BOUND] = torch.zeros(B, H, device=cache.fill.device)
    cache.policy_state[ATTEND] = torch.zeros_like(cache.fill, dtype=torch.bool)


def hsr_visible(cache: LayerCache) -> torch.Tensor:
    return torch.where(cache.policy_state[ATTEND], cache.fill, 0)


@dataclass(frozen=True)
class HSROptions(PolicyOptions):
    """epsilon: attend the pages whose bound lies within log(1/epsilon) of the step's
    largest bound."""

    prefix = "hsr_"
    keeps_all = True
    reads_exact_keys = True  # the certificate's exact logits
    follows_logit_mods = False  # its dropped-mass bound is for plain, uncapped logits
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"hsr_epsilon={self.epsilon} must lie in (0, 1).")


class HSRPolicy(Policy):
    name = "hsr"
    Options = HSROptions

    def init_state(self, cache: LayerCache) -> None:
        init_hsr_state(cache)

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
        return certify(q, cache, scale, self.options.epsilon)

    def select(self, cache: LayerCache, scores: torch.Tensor,
               step: torch.Tensor) -> torch.Tensor:
        return hsr_visible(cache)
