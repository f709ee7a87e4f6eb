"""score_mods: per-score functions FlexAttention applies inside its kernel."""

from __future__ import annotations

import torch


def dequantize_scores(k_scale: torch.Tensor, v_logscale: torch.Tensor, rows: int,
                      softcap: float | None = None):
    """score_mod over an 8-bit pool: score · k_scale[b, h, kv] (the true logit, capped by
    the layer's softcap if any), plus log of V's scale on the first `rows` query rows (see
    attention.decode.attend_quantized for why; the V fold is not a logit, so never capped).

    k_scale, v_logscale: [B, H, N] persistent buffers of the pool (a score_mod must capture
    buffers, not tensors computed inside the compiled graph).
    """

    def dequantize(score, b, h, q_idx, kv_idx):
        fold = torch.where(q_idx < rows, v_logscale[b, h, kv_idx], 0.0)
        logit = score * k_scale[b, h, kv_idx]
        if softcap is not None:
            logit = torch.tanh(logit / softcap) * softcap
        return logit + fold

    return dequantize
