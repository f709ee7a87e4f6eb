"""score_mods: per-score functions FlexAttention applies inside its kernel."""

from __future__ import annotations

import torch


def dequantize_scores(k_scale: torch.Tensor, v_logscale: torch.Tensor, rows: int):
    """score_mod over an 8-bit pool: score · k_scale[b, h, kv], plus log of V's scale on
    the first `rows` query rows (see attention.decode.attend_quantized for why).

    k_scale, v_logscale: [B, H, N] persistent buffers of the pool (a score_mod must capture
    buffers, not tensors computed inside the compiled graph).
    """

    def dequantize(score, b, h, q_idx, kv_idx):
        fold = torch.where(q_idx < rows, v_logscale[b, h, kv_idx], 0.0)
        return score * k_scale[b, h, kv_idx] + fold

    return dequantize
