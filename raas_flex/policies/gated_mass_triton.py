"""CUDA body of raas_flex::page_log_mass and raas_flex::page_logit_stats (gated_mass.py):
one Triton program per (sequence·kv head, chunk of pages). Gated (page_log_mass), each
program reads the device flag `full` first; when it is 0 it only writes -inf, so a step
that needs no mass reads no keys. A 16-bit pool multiplies on tensor cores
(triton_logits.pool_dot): the ieee fp32 product it replaced took 90 µs per call at 2,048
tokens on the H200 (issue 20). Imported on first CUDA use only (no Triton on the CPU)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from raas_flex.policies.triton_logits import pool_dot, softcap

CHUNK_TOKENS = 128  # keys per program: one [128, D] tile


@triton.jit
def _page_stats(q_ptr, k_ptr, fill_ptr, out_ptrs, max_ptrs, out_mask, b, h, chunk, S, scale,
                cap, sq_b, sq_h, sq_g, sk_b, sk_h, sk_n, sf_b, sf_h, G: tl.constexpr,
                GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, P: tl.constexpr,
                PAGES: tl.constexpr, HAS_CAP: tl.constexpr, WANT_MAX: tl.constexpr,
                LOWP: tl.constexpr):
    """One chunk of pages: per page and query head, the log-sum-exp (and the max) of the
    held tokens' logits."""
    g = tl.arange(0, GP)
    d = tl.arange(0, DP)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + g[:, None] * sq_g + d[None, :],
                mask=(g[:, None] < G) & (d[None, :] < D), other=0.0)
    t = tl.arange(0, PAGES * P)  # token within the chunk
    tok_page = chunk * PAGES + t // P
    held = tl.load(fill_ptr + b * sf_b + h * sf_h + tok_page, mask=tok_page < S, other=0)
    valid = (t % P) < held  # [T]
    k = tl.load(k_ptr + b * sk_b + h * sk_h + (chunk * PAGES * P + t)[:, None] * sk_n
                + d[None, :], mask=valid[:, None] & (d[None, :] < D),
                other=0.0)  # [T, DP]
    logits = softcap(pool_dot(q, k, LOWP) * scale, cap, HAS_CAP)  # [GP, T] float32
    logits = tl.where(valid[None, :], logits, float("-inf"))
    per_page = tl.reshape(logits, (GP, PAGES, P))
    top = tl.max(per_page, axis=2)  # [GP, PAGES]
    safe = tl.where(top == float("-inf"), 0.0, top)
    total = tl.sum(tl.exp(per_page - safe[:, :, None]), axis=2)
    tl.store(out_ptrs, safe + tl.log(total), mask=out_mask)  # log 0 = -inf: empty page
    if WANT_MAX:
        tl.store(max_ptrs, top, mask=out_mask)


@triton.jit
def _page_log_mass_kernel(q_ptr, k_ptr, fill_ptr, full_ptr, out_ptr, max_ptr, S, scale, cap,
                          sq_b, sq_h, sq_g, sk_b, sk_h, sk_n, sf_b, sf_h, so_b, so_h, so_g,
                          H: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                          D: tl.constexpr, DP: tl.constexpr, P: tl.constexpr,
                          PAGES: tl.constexpr, GATED: tl.constexpr, HAS_CAP: tl.constexpr,
                          WANT_MAX: tl.constexpr, LOWP: tl.constexpr):
    bh = tl.program_id(0)
    chunk = tl.program_id(1)
    b = bh // H
    h = bh % H
    g = tl.arange(0, GP)
    page = chunk * PAGES + tl.arange(0, PAGES)  # [PAGES]
    offsets = b * so_b + h * so_h + g[:, None] * so_g + page[None, :]
    out_mask = (g[:, None] < G) & (page[None, :] < S)
    if GATED:
        if tl.load(full_ptr) != 0:
            _page_stats(q_ptr, k_ptr, fill_ptr, out_ptr + offsets, max_ptr + offsets,
                        out_mask, b, h, chunk, S, scale, cap, sq_b, sq_h, sq_g, sk_b, sk_h,
                        sk_n, sf_b, sf_h, G, GP, D, DP, P, PAGES, HAS_CAP, WANT_MAX, LOWP)
        else:
            tl.store(out_ptr + offsets, tl.full((GP, PAGES), float("-inf"), tl.float32),
                     mask=out_mask)
    else:
        _page_stats(q_ptr, k_ptr, fill_ptr, out_ptr + offsets, max_ptr + offsets, out_mask,
                    b, h, chunk, S, scale, cap, sq_b, sq_h, sq_g, sk_b, sk_h, sk_n, sf_b,
                    sf_h, G, GP, D, DP, P, PAGES, HAS_CAP, WANT_MAX, LOWP)


def page_log_mass_cuda(q: torch.Tensor, k: torch.Tensor, fill: torch.Tensor,
                       full: torch.Tensor | None, scale: float, softcap: float | None = None,
                       want_max: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """raas_flex::page_log_mass (gated by `full`) and raas_flex::page_logit_stats (full
    None, want_max) on CUDA, shapes as there; no host sync. Returns (log mass, max logit
    or None)."""
    B, H, G, D = q.shape
    S = fill.shape[-1]
    P = k.shape[2] // S
    if k.stride(-1) != 1 or q.stride(-1) != 1 or fill.stride(-1) != 1:
        raise ValueError("page_log_mass needs q, k and fill contiguous in their last dim; "
                         "pass the pool tensors as allocated.")
    pages = max(1, CHUNK_TOKENS // P)
    out = torch.empty((B, H, G, S), dtype=torch.float32, device=q.device)
    top = torch.empty_like(out) if want_max else None
    grid = (B * H, triton.cdiv(S, pages))
    _page_log_mass_kernel[grid](
        q, k, fill, full if full is not None else fill, out, top if want_max else out, S,
        float(scale), float(softcap) if softcap is not None else 1.0,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        fill.stride(0), fill.stride(1), out.stride(0), out.stride(1), out.stride(2),
        H=H, G=G, GP=max(16, triton.next_power_of_2(G)), D=D,
        DP=max(16, triton.next_power_of_2(D)), P=P, PAGES=pages, GATED=full is not None,
        HAS_CAP=softcap is not None, WANT_MAX=want_max,
        LOWP=k.dtype in (torch.bfloat16, torch.float16), num_warps=4)
    return out, top


@triton.jit
def _gated_page_mass_kernel(log_ptr, full_ptr, out_ptr, S, sl_b, sl_h, sl_g, so_b, so_h,
                            H: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
                            BLOCK: tl.constexpr, TILES: tl.constexpr):
    """gated_mass.page_mass_from_log when the device flag *full_ptr is set, one program per
    (sequence, kv head): an online log-sum-exp over the row's pages per query head, then
    the pages' e^(log mass - lse), max over the group. Returns at once otherwise."""
    if tl.load(full_ptr) == 0:
        return
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    g = tl.arange(0, GP)
    rows = log_ptr + b * sl_b + h * sl_h + g[:, None] * sl_g  # [GP, 1]
    top = tl.full((GP,), float("-inf"), tl.float32)
    total = tl.zeros((GP,), tl.float32)
    for tile in range(TILES):  # cdiv(S, BLOCK), a constant (the interpreter needs one)
        s = tile * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(rows + s[None, :], mask=(g[:, None] < G) & (s[None, :] < S),
                    other=float("-inf"))  # [GP, BLOCK]
        new_top = tl.maximum(top, tl.max(x, axis=1))
        safe = tl.where(new_top == float("-inf"), 0.0, new_top)
        total = total * tl.exp(top - safe) + tl.sum(tl.exp(x - safe[:, None]), axis=1)
        top = new_top
    lse = top + tl.log(total)  # [GP]; -inf for a row with no held token
    for tile in range(TILES):
        s = tile * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(rows + s[None, :], mask=(g[:, None] < G) & (s[None, :] < S),
                    other=float("-inf"))
        mass = tl.where(g[:, None] < G, tl.exp(x - lse[:, None]), float("-inf"))
        tl.store(out_ptr + b * so_b + h * so_h + s, tl.max(mass, axis=0), mask=s < S)


def gated_page_mass_cuda(log_mass: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """raas_flex::gated_page_mass_from_log on CUDA: log_mass [B, H, G, S] float32 ->
    [B, H, S] float32, written only when `full` is set (else left uninitialised: its
    caller reads it only then). No host sync."""
    B, H, G, S = log_mass.shape
    if log_mass.stride(-1) != 1:
        raise ValueError("gated_page_mass_from_log needs log_mass contiguous in its last dim.")
    out = torch.empty((B, H, S), dtype=torch.float32, device=log_mass.device)
    block = min(1024, max(16, triton.next_power_of_2(S)))
    _gated_page_mass_kernel[(B * H,)](
        log_mass, full, out, S, log_mass.stride(0), log_mass.stride(1), log_mass.stride(2),
        out.stride(0), out.stride(1), H=H, G=G, GP=max(2, triton.next_power_of_2(G)),
        BLOCK=block, TILES=triton.cdiv(S, block), num_warps=8)
    return out
