"""Triton helpers both policy kernels use for logits under the layer's rules
(gated_mass_triton.py, rkv_scores_triton.py): one place for how a 16-bit pool multiplies
and how the softcap is applied. Imported on first CUDA use only (no Triton on the CPU)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def pool_dot(a, keys, LOWP: tl.constexpr):
    """a [M, DP] @ keys [T, DP]^T -> [M, T] float32. A 16-bit pool (LOWP) multiplies `a` in
    the pool's dtype on tensor cores with fp32 accumulation (exact inputs when `a` holds the
    model's own queries, which have that dtype); an fp32 pool in ieee fp32."""
    if LOWP:
        out = tl.dot(a.to(keys.dtype), tl.trans(keys))
    else:
        out = tl.dot(a.to(tl.float32), tl.trans(keys.to(tl.float32)), input_precision="ieee")
    return out


@triton.jit
def softcap(logits, cap, HAS_CAP: tl.constexpr):
    """cap * tanh(logits / cap) when HAS_CAP (tanh from exp: saturates to ±1 without
    overflow), else the logits unchanged; as attention/logit_mods.cap_logits."""
    if HAS_CAP:
        logits = cap * (2.0 / (1.0 + tl.exp(-2.0 * logits / cap)) - 1.0)
    return logits
