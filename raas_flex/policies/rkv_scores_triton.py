"""CUDA body of raas_flex::rkv_page_scores (rkv_scores.py): three gated Triton kernels.

Every program reads its sequence's `due` flag first and returns at once when it is 0, so a
step between checkpoints reads no key (three near-empty launches). When due, the pool is
cut into chunks of TOK tokens, one program per (sequence, kv head, chunk), so a checkpoint
spreads over the GPU (one program per head ran 8 programs at batch 1: ~3 ms per checkpoint
on the H200, issue 20):
  A. per chunk: each observation query's max logit and partial softmax normaliser, the sum
     of the unit keys and the number of held tokens;
  B. per chunk, from all chunks' partials: each token's importance (mean over the recorded
     queries, max-pooled inside its page) summed per page, and per page the max and sum of
     e^(similarity) for the redundancy softmax;
  C. per (sequence, kv head): the redundancy softmax's normaliser over the pages, and each
     page's score; -inf for empty pages and for sequences not due.
The logits multiply the ring (the model's queries upcast, so exact in the pool's dtype) by
the keys as triton_logits.pool_dot does. Imported on first CUDA use only (the CPU install has no Triton)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from raas_flex.policies.triton_logits import pool_dot, softcap

CHUNK_TOKENS = 64  # tokens per program (at least one page)
TILE_ELEMENTS = 4096  # logits per program: [observation rows, tokens] fp32 in registers
PARTIAL_BLOCK = 16  # chunks' partials combined per iteration


@triton.jit
def _tile(ring, k_row, fill_row, sk_n, chunk, scale, cap, S: tl.constexpr, P: tl.constexpr,
          TOK: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, WP: tl.constexpr,
          GP: tl.constexpr, G: tl.constexpr, HAS_CAP: tl.constexpr, LOWP: tl.constexpr):
    """One chunk: held [TOK] bool, unit keys [TOK, DP] float32 (0 rows where not held) and
    the group-max logits [WP, TOK] (scaled, capped; -inf where not held)."""
    tok = chunk * TOK + tl.arange(0, TOK)
    d = tl.arange(0, DP)
    held = (tok % P) < tl.load(fill_row + tok // P, mask=tok < S * P, other=0)
    keys = tl.load(k_row + tok[:, None] * sk_n + d[None, :],
                   mask=held[:, None] & (d < D)[None, :], other=0.0)
    logits = tl.reshape(pool_dot(ring, keys, LOWP), (WP, GP, TOK))  # fp32
    g = tl.arange(0, GP)
    logits = tl.max(tl.where((g < G)[None, :, None], logits, float("-inf")), axis=1) * scale
    logits = softcap(logits, cap, HAS_CAP)
    logits = tl.where(held[None, :], logits, float("-inf"))
    keys = keys.to(tl.float32)
    unit = keys / (tl.sqrt(tl.sum(keys * keys, axis=1)) + 1e-8)[:, None]
    return held, unit, logits


@triton.jit
def _load_ring(ring_ptr, b, h, sr_b, sr_h, sr_w, sr_g, W: tl.constexpr, G: tl.constexpr,
               WP: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr):
    """The observation queries as [WP*GP, DP] float32 rows (w major), 0 rows as padding."""
    w = tl.arange(0, WP)
    g = tl.arange(0, GP)
    d = tl.arange(0, DP)
    rows = (w[:, None] < W) & (g[None, :] < G)
    ring = tl.load(ring_ptr + b * sr_b + h * sr_h + w[:, None, None] * sr_w
                   + g[None, :, None] * sr_g + d[None, None, :],
                   mask=rows[:, :, None] & (d < D)[None, None, :], other=0.0)
    return tl.reshape(ring.to(tl.float32), (WP * GP, DP))


@triton.jit
def _stats_kernel(ring_ptr, k_ptr, fill_ptr, due_ptr, m_ptr, z_ptr, unit_ptr, count_ptr,
                  scale, cap, sr_b, sr_h, sr_w, sr_g, sk_b, sk_h, sk_n, sf_b, sf_h,
                  S: tl.constexpr, C: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                  G: tl.constexpr, WP: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                  DP: tl.constexpr, P: tl.constexpr, TOK: tl.constexpr,
                  HAS_CAP: tl.constexpr, LOWP: tl.constexpr):
    """Pass A: per (sequence·kv head, chunk) partials into [B*H, C, ...] scratch."""
    bh = tl.program_id(0)
    chunk = tl.program_id(1)
    b = bh // H
    h = bh % H
    if tl.load(due_ptr + b) != 0:
        ring = _load_ring(ring_ptr, b, h, sr_b, sr_h, sr_w, sr_g, W, G, WP, GP, D, DP)
        held, unit, logits = _tile(ring, k_ptr + b * sk_b + h * sk_h,
                                   fill_ptr + b * sf_b + h * sf_h, sk_n, chunk, scale, cap,
                                   S, P, TOK, D, DP, WP, GP, G, HAS_CAP, LOWP)
        m = tl.max(logits, axis=1)  # [WP]
        safe = tl.where(m == float("-inf"), 0.0, m)
        z = tl.sum(tl.exp(logits - safe[:, None]), axis=1)
        part = bh * C + chunk
        w = tl.arange(0, WP)
        tl.store(m_ptr + part * WP + w, m)
        tl.store(z_ptr + part * WP + w, z)
        tl.store(unit_ptr + part * DP + tl.arange(0, DP), tl.sum(unit, axis=0))
        tl.store(count_ptr + part, tl.sum(held.to(tl.float32), axis=0))


@triton.jit
def _pages_kernel(ring_ptr, rec_ptr, k_ptr, fill_ptr, due_ptr, sink_ptr, m_ptr, z_ptr,
                  unit_ptr, count_ptr, imp_ptr, rmax_ptr, rsum_ptr, scale, cap, mix_lambda,
                  sr_b, sr_h, sr_w, sr_g, srec_b, sk_b, sk_h, sk_n, sf_b, sf_h, ss_h,
                  S: tl.constexpr, C: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                  G: tl.constexpr, WP: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                  DP: tl.constexpr, P: tl.constexpr, TOK: tl.constexpr, HALF: tl.constexpr,
                  CB: tl.constexpr, HAS_CAP: tl.constexpr, HAS_SINK: tl.constexpr,
                  LOWP: tl.constexpr):
    """Pass B: per chunk, page sums of importance and the redundancy's page partials."""
    bh = tl.program_id(0)
    chunk = tl.program_id(1)
    b = bh // H
    h = bh % H
    if tl.load(due_ptr + b) != 0:
        w = tl.arange(0, WP)
        dd = tl.arange(0, DP)
        # every chunk's partials -> the importance softmax per query, the unit-key sum
        m = tl.full((WP,), float("-inf"), tl.float32)
        z = tl.zeros((WP,), tl.float32)
        total = tl.zeros((DP,), tl.float32)
        count = tl.sum(tl.zeros((CB,), tl.float32), axis=0)
        for c0 in range(0, C, CB):
            c = c0 + tl.arange(0, CB)
            part = bh * C + c
            inside = c < C
            mc = tl.load(m_ptr + part[:, None] * WP + w[None, :], mask=inside[:, None],
                         other=float("-inf"))
            zc = tl.load(z_ptr + part[:, None] * WP + w[None, :], mask=inside[:, None],
                         other=0.0)
            new_m = tl.maximum(m, tl.max(mc, axis=0))
            safe = tl.where(new_m == float("-inf"), 0.0, new_m)
            z = z * tl.exp(m - safe) + tl.sum(zc * tl.exp(mc - safe[None, :]), axis=0)
            m = new_m
            total += tl.sum(tl.load(unit_ptr + part[:, None] * DP + dd[None, :],
                                    mask=inside[:, None], other=0.0), axis=0)
            count += tl.sum(tl.load(count_ptr + part, mask=inside, other=0.0), axis=0)
        if HAS_SINK:  # the sink joins the softmax (group max, uncapped, as the model does)
            g = tl.arange(0, GP)
            sink = tl.max(tl.load(sink_ptr + h * ss_h + g, mask=g < G,
                                  other=float("-inf")).to(tl.float32), axis=0)
            new_m = tl.maximum(m, sink)
            safe = tl.where(new_m == float("-inf"), 0.0, new_m)
            z = z * tl.exp(m - safe) + tl.exp(sink - safe)
            m = new_m
        m = tl.where(m == float("-inf"), 0.0, m)
        inv_z = tl.where(z > 0, 1.0 / z, 0.0)  # a query with nothing held: weights 0
        count = tl.maximum(count, 1.0)
        weight = tl.load(rec_ptr + b * srec_b + w, mask=w < W, other=0).to(tl.float32)
        recorded = tl.maximum(tl.sum(weight, axis=0), 1.0)

        ring = _load_ring(ring_ptr, b, h, sr_b, sr_h, sr_w, sr_g, W, G, WP, GP, D, DP)
        held, unit, logits = _tile(ring, k_ptr + b * sk_b + h * sk_h,
                                   fill_ptr + b * sf_b + h * sf_h, sk_n, chunk, scale, cap,
                                   S, P, TOK, D, DP, WP, GP, G, HAS_CAP, LOWP)
        PG: tl.constexpr = TOK // P
        probs = tl.exp(logits - m[:, None]) * inv_z[:, None]  # [WP, TOK]
        mean = tl.reshape(tl.sum(probs * weight[:, None], axis=0) / recorded, (PG, P))
        i = tl.arange(0, P)
        band = tl.abs(i[:, None] - i[None, :]) <= HALF  # [P, P]: pooling neighbours
        pooled = tl.max(tl.where(band[None, :, :], mean[:, None, :], float("-inf")), axis=2)
        held_pg = tl.reshape(held, (PG, P))
        importance = tl.sum(tl.where(held_pg, pooled, 0.0), axis=1)  # [PG]
        sim = (tl.sum(unit * total[None, :], axis=1) - tl.sum(unit * unit, axis=1)) / count
        sim = tl.reshape(tl.where(held, sim, float("-inf")), (PG, P))
        top = tl.max(sim, axis=1)  # [PG], -inf on an empty page
        safe = tl.where(top == float("-inf"), 0.0, top)
        page = chunk * PG + tl.arange(0, PG)
        row = bh * S + page
        tl.store(imp_ptr + row, mix_lambda * importance, mask=page < S)
        tl.store(rmax_ptr + row, top, mask=page < S)
        tl.store(rsum_ptr + row, tl.sum(tl.exp(sim - safe[:, None]), axis=1), mask=page < S)


@triton.jit
def _combine_kernel(due_ptr, fill_ptr, imp_ptr, rmax_ptr, rsum_ptr, out_ptr, mix_lambda,
                    sf_b, sf_h, so_b, so_h, S: tl.constexpr, H: tl.constexpr,
                    BLOCK: tl.constexpr):
    """Pass C: the redundancy softmax over pages, then each page's score (or -inf)."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    out_row = out_ptr + b * so_b + h * so_h
    if tl.load(due_ptr + b) == 0:
        for p0 in range(0, S, BLOCK):
            page = p0 + tl.arange(0, BLOCK)
            tl.store(out_row + page, tl.full((BLOCK,), float("-inf"), tl.float32),
                     mask=page < S)
    else:
        ms = tl.max(tl.full((BLOCK,), float("-inf"), tl.float32), axis=0)
        zs = tl.sum(tl.zeros((BLOCK,), tl.float32), axis=0)
        for p0 in range(0, S, BLOCK):
            page = p0 + tl.arange(0, BLOCK)
            top = tl.load(rmax_ptr + bh * S + page, mask=page < S, other=float("-inf"))
            part = tl.load(rsum_ptr + bh * S + page, mask=page < S, other=0.0)
            new_ms = tl.maximum(ms, tl.max(top, axis=0))
            safe = tl.where(new_ms == float("-inf"), 0.0, new_ms)
            zs = zs * tl.exp(ms - safe) + tl.sum(part * tl.exp(top - safe), axis=0)
            ms = new_ms
        ms = tl.where(ms == float("-inf"), 0.0, ms)
        inv_zs = tl.where(zs > 0, 1.0 / zs, 0.0)
        for p0 in range(0, S, BLOCK):
            page = p0 + tl.arange(0, BLOCK)
            inside = page < S
            top = tl.load(rmax_ptr + bh * S + page, mask=inside, other=float("-inf"))
            part = tl.load(rsum_ptr + bh * S + page, mask=inside, other=0.0)
            importance = tl.load(imp_ptr + bh * S + page, mask=inside, other=0.0)
            score = importance - (1.0 - mix_lambda) * part * tl.exp(top - ms) * inv_zs
            filled = tl.load(fill_ptr + b * sf_b + h * sf_h + page, mask=inside, other=0)
            tl.store(out_row + page, tl.where(filled > 0, score, float("-inf")), mask=inside)


def rkv_page_scores_cuda(ring: torch.Tensor, recorded: torch.Tensor, k: torch.Tensor,
                         fill: torch.Tensor, due: torch.Tensor, sinks: torch.Tensor | None,
                         scale: float, softcap: float | None, mix_lambda: float,
                         pool_kernel: int) -> torch.Tensor:
    """raas_flex::rkv_page_scores on CUDA (shapes as there); no host sync."""
    B, H, W, G, D = ring.shape
    S = fill.shape[-1]
    P = k.shape[2] // S
    tensors = dict(ring=ring, recorded=recorded, k=k, fill=fill, due=due)
    if sinks is not None:
        tensors["sinks"] = sinks
    for name, tensor in tensors.items():
        if tensor.stride(-1) != 1:
            raise ValueError(f"rkv_page_scores needs {name} contiguous in its last dim; "
                             "pass the pool and policy-state tensors as allocated.")
    WP = triton.next_power_of_2(W)
    GP = max(triton.next_power_of_2(G), triton.next_power_of_2(max(1, 16 // WP)))
    DP = max(16, triton.next_power_of_2(D))
    tok = max(P, min(CHUNK_TOKENS, TILE_ELEMENTS // (WP * GP)))
    chunks = triton.cdiv(S * P, tok)
    f32 = dict(dtype=torch.float32, device=k.device)
    m, z = torch.empty(B * H, chunks, WP, **f32), torch.empty(B * H, chunks, WP, **f32)
    unit, count = torch.empty(B * H, chunks, DP, **f32), torch.empty(B * H, chunks, **f32)
    importance, rmax, rsum = (torch.empty(B * H, S, **f32) for _ in range(3))
    out = torch.empty(B, H, S, **f32)
    cap = float(softcap) if softcap is not None else 1.0
    ring_strides = (ring.stride(0), ring.stride(1), ring.stride(2), ring.stride(3))
    key_strides = (k.stride(0), k.stride(1), k.stride(2), fill.stride(0), fill.stride(1))
    shape = dict(S=S, C=chunks, H=H, W=W, G=G, WP=WP, GP=GP, D=D, DP=DP, P=P, TOK=tok,
                 HAS_CAP=softcap is not None, LOWP=k.dtype in (torch.bfloat16, torch.float16))
    _stats_kernel[(B * H, chunks)](ring, k, fill, due, m, z, unit, count, float(scale), cap,
                                   *ring_strides, *key_strides, **shape, num_warps=4)
    _pages_kernel[(B * H, chunks)](
        ring, recorded, k, fill, due, sinks if sinks is not None else out, m, z, unit, count,
        importance, rmax, rsum, float(scale), cap, float(mix_lambda), *ring_strides[:2],
        *ring_strides[2:], recorded.stride(0), *key_strides,
        sinks.stride(0) if sinks is not None else 0, **shape, HALF=pool_kernel // 2,
        CB=PARTIAL_BLOCK, HAS_SINK=sinks is not None, num_warps=4)
    _combine_kernel[(B * H,)](due, fill, importance, rmax, rsum, out, float(mix_lambda),
                              fill.stride(0), fill.stride(1), out.stride(0), out.stride(1),
                              S=S, H=H, BLOCK=128, num_warps=4)
    return out
