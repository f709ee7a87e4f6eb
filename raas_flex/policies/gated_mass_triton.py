"""CUDA body of raas_flex::page_log_mass (gated_mass.py): one Triton program per
(sequence·kv head, chunk of pages). Each program reads the device flag `full` first; when
it is 0 it only writes -inf, so a step that needs no mass reads no keys. Imported on
first CUDA use only (the CPU install has no Triton)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK_TOKENS = 128  # keys per program: one [128, D] tile


@triton.jit
def _page_log_mass_kernel(q_ptr, k_ptr, fill_ptr, full_ptr, out_ptr, S, scale,
                          sq_b, sq_h, sq_g, sk_b, sk_h, sk_n, sf_b, sf_h, so_b, so_h, so_g,
                          H: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                          D: tl.constexpr, DP: tl.constexpr, P: tl.constexpr,
                          PAGES: tl.constexpr):
    bh = tl.program_id(0)
    chunk = tl.program_id(1)
    b = bh // H
    h = bh % H
    g = tl.arange(0, GP)
    page = chunk * PAGES + tl.arange(0, PAGES)  # [PAGES]
    out_ptrs = out_ptr + b * so_b + h * so_h + g[:, None] * so_g + page[None, :]
    out_mask = (g[:, None] < G) & (page[None, :] < S)
    full = tl.load(full_ptr)
    if full != 0:
        d = tl.arange(0, DP)
        q = tl.load(q_ptr + b * sq_b + h * sq_h + g[:, None] * sq_g + d[None, :],
                    mask=(g[:, None] < G) & (d[None, :] < D), other=0.0).to(tl.float32)
        t = tl.arange(0, PAGES * P)  # token within the chunk
        tok_page = chunk * PAGES + t // P
        held = tl.load(fill_ptr + b * sf_b + h * sf_h + tok_page, mask=tok_page < S, other=0)
        valid = (t % P) < held  # [T]
        k = tl.load(k_ptr + b * sk_b + h * sk_h + (chunk * PAGES * P + t)[:, None] * sk_n
                    + d[None, :], mask=valid[:, None] & (d[None, :] < D),
                    other=0.0).to(tl.float32)  # [T, DP]
        logits = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [GP, T]
        logits = tl.where(valid[None, :], logits, float("-inf"))
        per_page = tl.reshape(logits, (GP, PAGES, P))
        top = tl.max(per_page, axis=2)  # [GP, PAGES]
        safe = tl.where(top == float("-inf"), 0.0, top)
        total = tl.sum(tl.exp(per_page - safe[:, :, None]), axis=2)
        tl.store(out_ptrs, safe + tl.log(total), mask=out_mask)  # log 0 = -inf: empty page
    else:
        tl.store(out_ptrs, tl.full((GP, PAGES), float("-inf"), tl.float32), mask=out_mask)


def page_log_mass_cuda(q: torch.Tensor, k: torch.Tensor, fill: torch.Tensor,
                       full: torch.Tensor, scale: float) -> torch.Tensor:
    """raas_flex::page_log_mass on CUDA (shapes as there); no host sync."""
    B, H, G, D = q.shape
    S = fill.shape[-1]
    P = k.shape[2] // S
    if k.stride(-1) != 1 or q.stride(-1) != 1 or fill.stride(-1) != 1:
        raise ValueError("page_log_mass needs q, k and fill contiguous in their last dim; "
                         "pass the pool tensors as allocated.")
    pages = max(1, CHUNK_TOKENS // P)
    out = torch.empty((B, H, G, S), dtype=torch.float32, device=q.device)
    grid = (B * H, triton.cdiv(S, pages))
    _page_log_mass_kernel[grid](
        q, k, fill, full, out, S, float(scale),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        fill.stride(0), fill.stride(1), out.stride(0), out.stride(1), out.stride(2),
        H=H, G=G, GP=max(16, triton.next_power_of_2(G)), D=D,
        DP=max(16, triton.next_power_of_2(D)), P=P, PAGES=pages, num_warps=4)
    return out
