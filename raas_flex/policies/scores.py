"""Page scores shared by the policies: Quest's upper bound and exact attention mass."""

from __future__ import annotations

import math

import torch

from raas_flex.attention.logit_mods import cap_logits
from raas_flex.cache.pool import LayerCache
from raas_flex.masks.dense import visible_token_mask

FUSED_BOUND_ELEMENTS = 1 << 24  # product elements up to which eager mode fuses (fused_reduction)
PAIRWISE_RANK_SLOTS = 512  # slots up to which ranks are counted pairwise, not sorted


def summary_bound(q: torch.Tensor, kmax: torch.Tensor, kmin: torch.Tensor, fill: torch.Tensor,
                  scale: float, softcap: float | None) -> torch.Tensor:
    """Quest's bound from the summaries kmax, kmin [B, H, S, D] and fill [B, H, S]: the
    torch rule of keep_all_ops.quest_bound (its body off CUDA, its kernel's reference)."""
    # The layer's softcap is monotone, so capping the bound keeps it a bound (and the top-k
    # order); capped, it is on the scale the softmax sees (importance="alpha").
    bound = cap_logits(head_summary_bound(q.float(), kmax, kmin).amax(2) * scale, softcap)
    return bound.masked_fill(fill == 0, float("-inf"))


def fused_reduction(product_elements: int) -> bool:
    """Whether a product of the query heads with the page summaries, of `product_elements`
    = G · (summary elements), runs as one broadcast-and-reduce, not fp32 GEMMs: always when
    compiled (Inductor emits one reduction over D without materialising the product; the
    GEMMs with G = 4 rows ran at 39 us each over a 9,217-slot pool on the H200, issue 15,
    ~4x their bytes), and in eager mode for small products only (eager would materialise
    it)."""
    return product_elements <= FUSED_BOUND_ELEMENTS or torch.compiler.is_compiling()


def head_summary_bound(qf: torch.Tensor, kmax: torch.Tensor, kmin: torch.Tensor) -> torch.Tensor:
    """sum_i max(q_i kmin_i, q_i kmax_i) == q⁺·kmax + q⁻·kmin per query head, unscaled:
    [B, H, G, S] float32 from qf [B, H, G, D] float32 and the summaries kmax, kmin
    [B, H, S, D] (the model's dtype, widened exactly). Empty slots hold garbage (±inf
    summaries): callers mask them."""
    if fused_reduction(qf.shape[2] * kmax.numel()):
        kmax = torch.nan_to_num(kmax, neginf=0.0)  # empty slots: masked by callers
        kmin = torch.nan_to_num(kmin, posinf=0.0)
        # [B, H, S, G] with G innermost: a reduction program's neighbouring outputs share
        # one summary row (read once, not once per query head).
        qe = qf[:, :, None]  # [B, H, 1, G, D]
        return (qe.clamp(min=0) * kmax[:, :, :, None]
                + qe.clamp(max=0) * kmin[:, :, :, None]).sum(-1).transpose(-1, -2)
    # Straight from the summaries: the ±inf rows of empty slots give inf/NaN only in their
    # own columns, which callers overwrite (a held page's summaries are finite).
    # nan_to_num here would copy both summaries every step.
    return (qf.clamp(min=0) @ kmax.to(qf.dtype).transpose(-1, -2)
            + qf.clamp(max=0) @ kmin.to(qf.dtype).transpose(-1, -2))


def layer_softmax(logits: torch.Tensor, seen: torch.Tensor, softcap: float | None,
                  sink: torch.Tensor | None) -> torch.Tensor:
    """Softmax of scaled logits [..., N] over the `seen` tokens (broadcastable bool) under the
    layer's own logit rules: the softcap (None: none), and the sink logit [..., 1] (None: no
    sinks) in the softmax and then dropped, so the weights sum to 1 - the sink's share, as
    the model attends. float32 [..., N], 0 where not seen."""
    N = logits.shape[-1]
    logits = cap_logits(logits.float(), softcap).masked_fill(~seen, float("-inf"))
    if sink is not None:  # the sink column joins the softmax, then is dropped
        logits = torch.cat([logits, sink.float().expand(*logits.shape[:-1], 1)], dim=-1)
    probs = torch.softmax(logits, dim=-1)[..., :N]
    return torch.nan_to_num(probs)  # a (never expected) fully hidden row


def token_weights(q: torch.Tensor, cache: LayerCache, scale: float,
                  seen: torch.Tensor) -> torch.Tensor:
    """Softmax weight of every pool token for each query head, over the `seen` tokens and
    under the layer's own logit rules (layer_softmax).

    q: [B, H, G, D]; seen: [B, H, 1, S*P] bool. Returns [B, H, G, S*P] float32, 0 where
    not seen.
    """
    logits = (q.float() @ cache.k.float().transpose(-1, -2)) * scale  # [B, H, G, S*P]
    sink = None if cache.sinks is None else cache.sinks[None, :, :, None]  # [1, H, G, 1]
    return layer_softmax(logits, seen, cache.softcap, sink)


def page_mass(q: torch.Tensor, cache: LayerCache, scale: float,
              visible: torch.Tensor) -> torch.Tensor:
    """Exact softmax mass each slot receives over the `visible` tokens, max over the group,
    under the layer's own logit rules (token_weights).

    q: [B, H, G, D]; visible: [B, H, S] tokens per slot. Returns [B, H, S] float32.
    """
    B, H, G, _ = q.shape
    S, P = cache.num_slots, cache.page_size
    seen = visible_token_mask(visible, P)  # [B, H, 1, S*P]
    return token_weights(q, cache, scale, seen).view(B, H, G, S, P).sum(-1).amax(2)


def log_page_mass(q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor:
    """log of page_mass over every filled token; -inf for empty slots. [B, H, S]."""
    mass = page_mass(q, cache, scale, cache.fill)
    return torch.log(mass).masked_fill(cache.fill == 0, -math.inf)


def rank_descending(scores: torch.Tensor, page_id: torch.Tensor) -> torch.Tensor:
    """Rank of each slot by score, highest first, ties to the older page, then the lower
    slot. [B, H, S] int64. Small pools count, for each slot, the slots that rank before
    it (S² compares, one fused kernel); large ones use two stable sorts."""
    S = scores.shape[-1]
    if S <= PAIRWISE_RANK_SLOTS:
        slot = torch.arange(S, device=scores.device)
        other, this = scores[..., None, :], scores[..., :, None]  # [B, H, S, S]
        p_other, p_this = page_id[..., None, :], page_id[..., :, None]
        older = (p_other < p_this) | ((p_other == p_this) & (slot[None, :] < slot[:, None]))
        return ((other > this) | ((other == this) & older)).sum(-1)
    by_page = torch.argsort(page_id, dim=-1, stable=True)
    order = by_page.gather(-1, torch.argsort(scores.gather(-1, by_page), dim=-1,
                                             descending=True, stable=True))
    positions = torch.arange(S, device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def order_key(scores: torch.Tensor, page_id: torch.Tensor) -> torch.Tensor:
    """int64 keys in rank_descending's order, largest first: the float32 score's bits
    made monotone in the high word, the older page (smaller page_id) in the low word.
    Distinct for distinct (score, page) pairs, i.e. for all held slots of a sequence and
    head (a page is held at most once); NaN scores are not expected (held pages have
    finite scores)."""
    scores = torch.where(scores == 0, 0.0, scores.float())  # -0.0 ties +0.0 (as when ranking)
    bits = scores.view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    older = (2**31 - 1) - page_id.clamp(min=-1)  # in [0, 2^31]: fits the low word
    return ordered * 2**32 + older


def top_slots(scores: torch.Tensor, page_id: torch.Tensor, held: torch.Tensor,
              k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k slots that rank first by (score desc, older page) among `held` ([B, H, S]
    bool) ones: (chosen [B, H, S] bool, index [B, H, k] int64), by torch.topk. Equals
    held & (rank_descending(scores', page_id) < k) where scores' is scores with the slots
    that are not held at -inf. k is capped at S. index lists the chosen slots first, in
    rank order (as the CUDA select writes them), then slots that hold nothing."""
    k = min(k, scores.shape[-1])
    low = torch.iinfo(torch.int64).min
    key = torch.where(held, order_key(scores, page_id), low)
    top = torch.topk(key, k, dim=-1, sorted=True)
    # Held keys are distinct, so the chosen slots are exactly the held ones at or above the
    # k-th largest key: a compare that fuses into the caller's pointwise kernel, where a
    # scatter of the indices was a kernel of its own.
    chosen = held & (key >= top.values.amin(-1, keepdim=True))
    return chosen, top.indices


def check_count_fits(slots: int, numerator: int) -> None:
    """Refuse a top_ratio whose exact count (live pages · numerator, in int64) could
    overflow for a pool of `slots` pages."""
    if slots * numerator >= 2**63:
        raise OverflowError(f"{slots} slots x top_ratio numerator {numerator} "
                            "overflows int64; use a top_ratio with fewer decimals.")


def top_fraction(scores: torch.Tensor, cache: LayerCache, numerator: int,
                 denominator: int) -> torch.Tensor:
    """The top ceil(live pages · numerator / denominator) live slots by score. [B, H, S] bool.

    Counted in int64, exactly: a float product rounds 25 · 0.6 up to 15.000001 and marks 16
    pages. numerator/denominator are Python ints (RaaSConfig.top_ratio_fraction), constants
    of a compiled graph; the host check below runs only while tracing, on static shapes.
    """
    check_count_fits(cache.num_slots, numerator)
    live = cache.fill > 0
    count = (live.sum(-1, keepdim=True) * numerator + (denominator - 1)) // denominator
    return live & (rank_descending(scores, cache.page_id) < count)
