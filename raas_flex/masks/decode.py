"""Decode BlockMask: which pool pages one step attends, per (sequence, kv head).

Full pages go to the kernel's full-block list (no mask_mod call); the partly visible
pages (in practice the page being filled) go to the partial list, where `mask_mod` hides
their unwritten tail. Eager FlexAttention ignores the block lists and evaluates `mask_mod`
everywhere, so `mask_mod` encodes the whole selection and eager and compiled agree.
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask

PREFIX_SUM_SLOTS = 2048  # measured fine up to 5,121 slots; 9,217 failed to compile
# One query block holds every query row of a GQA group (decode folds the group into rows).
QUERY_BLOCK = 128


def visible_tokens_mask_mod(visible: torch.Tensor, page_size: int, padded: bool = False):
    """mask_mod: token kv of the pool is attended iff its offset < visible[b, h, page].

    `visible` must be a persistent buffer (updated in place with scatter_), not a tensor
    computed inside the compiled graph: the CPU flex kernel cannot lower the latter.
    padded: the kernel's last block reaches past the pool (blocks of several pages over a
    pool whose slots they do not divide); those tokens are masked and never index past
    `visible`.
    """

    def attend_visible_prefix(b, h, q_idx, kv_idx):
        return (kv_idx % page_size) < visible[b, h, kv_idx // page_size]

    def attend_visible_prefix_padded(b, h, q_idx, kv_idx):
        slots = visible.shape[-1]
        page = torch.clamp(kv_idx // page_size, max=slots - 1)
        return (kv_idx < slots * page_size) & ((kv_idx % page_size) < visible[b, h, page])

    return attend_visible_prefix_padded if padded else attend_visible_prefix


def _slots_first(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count [B, H, 1] int32, indices [B, H, 1, S] int32) with the chosen slots first.

    Chosen slots ascending, then the rest ascending (a stable argsort of ~chosen). Pools of
    up to PREFIX_SUM_SLOTS slots use a prefix sum and one scatter (one fused kernel where
    the sort took several); larger ones sort, because on torch 2.11 + H100 Inductor failed
    to generate the scatter for a 9,217-slot pool (keep-all, N = 128k, P = 16).
    """
    S = chosen.shape[-1]
    count = chosen.sum(-1, dtype=torch.int32)[..., None]  # [B, H, 1]
    if S > PREFIX_SUM_SLOTS:
        order = torch.argsort((~chosen).to(torch.int8), dim=-1, stable=True)
        return count, order.to(torch.int32)[:, :, None, :]
    c = chosen.to(torch.int32)
    before = torch.cumsum(c, -1, dtype=torch.int32) - c  # chosen slots before each slot
    slot = torch.arange(S, device=chosen.device, dtype=torch.int32)
    position = torch.where(chosen, before, count + slot - before)  # a permutation of 0..S-1
    order = torch.zeros_like(position).scatter_(-1, position.long(), slot.expand_as(position))
    return count, order[:, :, None, :]


def decode_block_mask(visible: torch.Tensor, page_size: int, query_rows: int) -> BlockMask:
    """BlockMask over a pool of S pages for `query_rows` query rows per kv head.

    visible: [B, H, S] int32 persistent buffer, tokens of each page to attend.
    """
    full = visible == page_size
    partial = (visible > 0) & ~full
    partial_count, partial_index = _slots_first(partial)
    full_count, full_index = _slots_first(full)
    pool_tokens = visible.shape[-1] * page_size
    return BlockMask.from_kv_blocks(
        partial_count, partial_index, full_count, full_index,
        BLOCK_SIZE=(QUERY_BLOCK, page_size),
        mask_mod=visible_tokens_mask_mod(visible, page_size),
        seq_lengths=(query_rows, pool_tokens), compute_q_blocks=False,
    )


def listed_block_mask(visible: torch.Tensor, page_size: int, query_rows: int,
                      count: torch.Tensor, index: torch.Tensor,
                      block_pages: int = 1) -> BlockMask:
    """BlockMask whose kernel block list is given, no compaction: the first count[b, h, 0]
    entries of index[b, h, 0, :] are the kernel blocks it reads (block j = pages
    j·block_pages .. (j+1)·block_pages - 1), every one as a partial block, so `mask_mod`
    (offset < visible) hides whatever they hold that is not selected.

    Correct whenever the listed blocks include every page with visible > 0 (a listed page
    with visible == 0 is read and fully masked). count [B, H, 1] int32, index [B, H, 1, K]
    int32. No full-block list: the decode kernel then compiles without its full-block loop.
    block_pages > 1 (an evicting pool listed whole, masks.pool_blocks) lets the kernel read
    wider tiles than one page.
    """
    slots = visible.shape[-1]
    return BlockMask.from_kv_blocks(
        count, index, BLOCK_SIZE=(QUERY_BLOCK, page_size * block_pages),
        mask_mod=visible_tokens_mask_mod(visible, page_size, slots % block_pages != 0),
        seq_lengths=(query_rows, slots * page_size), compute_q_blocks=False,
    )


SCAN_WIDTH = 128  # chosen_blocks' prefix sum runs in rows of this many slots


def chosen_blocks(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count [B, H, 1], index [B, H, 1, S]) int32 listing the `chosen` ([B, H, S] bool)
    slots first, ascending; entries past count are S - 1 (the kernel never reads them).

    For selections of data-dependent size over large keep-all pools: a prefix sum and a
    binary search (the j-th chosen slot is the first whose running count reaches j + 1),
    O(S log S) over page flags; no sort, no scatter (Inductor failed to generate the
    prefix-sum scatter for 9,217 slots, _slots_first). The prefix sum runs in two levels
    (within rows of SCAN_WIDTH slots, then over the row totals): on torch 2.11 + H200 one
    cumsum over 8,449+ slots, fused with the selection that feeds it, failed Inductor's
    Triton codegen (get_block_shape), and short scans stay single-pass kernels.
    """
    B, H, S = chosen.shape
    rows = -(-S // SCAN_WIDTH)
    flags = torch.nn.functional.pad(chosen.long(), (0, rows * SCAN_WIDTH - S))
    within = torch.cumsum(flags.view(B, H, rows, SCAN_WIDTH), -1)  # [B, H, rows, W]
    totals = within[..., -1]  # [B, H, rows]
    before = torch.cumsum(totals, -1) - totals  # chosen slots in earlier rows
    running = (within + before[..., None]).view(B, H, rows * SCAN_WIDTH)[..., :S]
    running = running.contiguous()
    wanted = torch.arange(1, S + 1, device=chosen.device).expand_as(running).contiguous()
    # int64 throughout: with out_int32 the compiled CPU step attended the wrong pages
    # (torch 2.13; the standalone function was right), int64 matched eager.
    index = torch.searchsorted(running, wanted).clamp(max=S - 1)
    count = running[..., -1:].to(torch.int32)  # [B, H, 1]
    return count, index.to(torch.int32)[:, :, None, :].contiguous()


def pool_blocks(visible: torch.Tensor, pages: torch.Tensor | int | None = None,
                block_pages: int = 1) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(count [B, H, 1], index [B, H, 1, K], block_pages) listing the kernel blocks that
    cover pages 0 .. pages-1 of the pool (`pages` [B, H] or an int; None: all S), each
    block `block_pages` pages wide (listed_block_mask's last argument). With an int, the
    lists are constants of the graph: the mask costs no kernel at all."""
    B, H, S = visible.shape
    blocks = -(-S // block_pages)
    index = torch.arange(blocks, device=visible.device, dtype=torch.int32)
    index = index.expand(B, H, 1, blocks)
    if pages is None or isinstance(pages, int):
        count = torch.full((B, H, 1), -(-(S if pages is None else pages) // block_pages),
                           dtype=torch.int32, device=visible.device)
    else:
        count = (pages.to(torch.int32)[..., None] + block_pages - 1) // block_pages
    return count, index, block_pages
