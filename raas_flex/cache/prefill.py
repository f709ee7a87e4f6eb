"""Writing a (left-padded) prompt into an empty pool: real tokens only, packed into pages."""

from __future__ import annotations

import torch

from raas_flex.cache.append import store_tokens, summary_keys
from raas_flex.cache.pool import FREE, LayerCache


def prompt_lengths(attention_mask: torch.Tensor | None, batch: int, seq_len: int,
                   device: torch.device) -> torch.Tensor:
    """Real tokens per sequence, [B] int64, from a left-padding 2D mask (1 = token)."""
    if attention_mask is None:
        return torch.full((batch,), seq_len, dtype=torch.int64, device=device)
    if attention_mask.shape != (batch, seq_len):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
            f"{(batch, seq_len)} (batch, prompt length)."
        )
    mask = attention_mask.to(torch.bool)
    lengths = mask.sum(-1)
    # Left padding means every sequence's real tokens are its last `length` positions.
    expected = torch.arange(seq_len, device=mask.device) >= (seq_len - lengths)[:, None]
    if not torch.equal(mask, expected):
        raise ValueError(
            "attention_mask must be left-padded (zeros only before the tokens); "
            "set tokenizer.padding_side = 'left'."
        )
    if bool((lengths == 0).any()):
        raise ValueError("every sequence needs at least one real prompt token.")
    return lengths.to(device=device, dtype=torch.int64)


def write_prompt(cache: LayerCache, k: torch.Tensor, v: torch.Tensor,
                 lengths: torch.Tensor, pin: bool) -> None:
    """Copy the prompt's real keys/values ([B, H, T, D], left-padded) into pages 0, 1, ...

    The last prompt page may be partly filled; decoding continues filling it.
    """
    B, H, T, D = k.shape
    P, S = cache.page_size, cache.num_slots
    pages_needed = (lengths + P - 1) // P  # [B]
    # Only the first ceil(T/P) pages can hold prompt tokens: gather and summarise those
    # (prompt-sized temporaries, never pool-sized) and zero the rest of the pool in place.
    W = -(-T // P)  # pages written
    positions = torch.arange(W * P, device=k.device)
    source = ((T - lengths)[:, None] + positions).clamp(0, T - 1)  # [B, W*P]
    real = positions < lengths[:, None]  # [B, W*P]
    index = source[:, None, :, None].expand(B, H, W * P, D)
    keep = real[:, None, :, None]
    keys = torch.where(keep, k.gather(2, index), 0)  # [B, H, W*P, D]
    values = torch.where(keep, v.gather(2, index), 0)
    written = (slice(None), slice(None), slice(0, W * P))
    _clear_pool_from(cache, W * P)  # the written rows are fully overwritten next
    store_tokens(cache, written, keys, values)
    slots = torch.arange(S, device=k.device)
    fill = (lengths[:, None] - slots * P).clamp(0, P)  # [B, S]
    live = (slots < pages_needed[:, None])[:, None, :].expand(B, H, S)
    cache.fill.copy_(fill[:, None, :].expand(B, H, S).to(torch.int32))
    cache.visible.zero_()
    cache.timestamp.zero_()
    cache.pinned.copy_(live & pin)
    cache.page_id.copy_(torch.where(live, slots, FREE))
    keys = summary_keys(cache, keys).view(B, H, W, P, D)
    valid = real.view(B, 1, W, P, 1)
    cache.kmin.fill_(float("inf"))
    cache.kmax.fill_(float("-inf"))
    cache.kmin[:, :, :W].copy_(torch.where(valid, keys, float("inf")).amin(3))
    cache.kmax[:, :, :W].copy_(torch.where(valid, keys, float("-inf")).amax(3))
    cache.current.copy_((pages_needed - 1).clamp(min=0)[:, None].expand(B, H))
    cache.length.copy_(lengths)


def _clear_pool_from(cache: LayerCache, start: int) -> None:
    """Zero the K/V codes and reset the scales of pool tokens [start:], in place."""
    cache.k[:, :, start:].zero_()
    cache.v[:, :, start:].zero_()
    if cache.quantized:
        cache.k_scale[:, :, start:].fill_(1.0)
        cache.v_logscale[:, :, start:].zero_()
