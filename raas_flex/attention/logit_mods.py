"""The model's own logit rules beyond q·k·scale: a tanh softcap and learned attention sinks.

Softcap (Gemma 2): every logit x = q·k·scale becomes cap · tanh(x / cap) before the
softmax; as a FlexAttention score_mod it runs inside the kernel, on exactly the logits the
kernel computes.

Sinks (gpt-oss): each query head h has a learned logit s_h that joins the softmax as one
extra column and is then dropped, so the weights are p_j = e^{x_j} / (Σ_i e^{x_i} + e^{s_h}).
The kernel computes o = Σ_j e^{x_j} v_j / Σ_i e^{x_i} and lse = log Σ_i e^{x_i}; then
  Σ_j p_j v_j = o · Σ_i e^{x_i} / (Σ_i e^{x_i} + e^{s_h}) = o · 1 / (1 + e^{s_h - lse})
              = o · sigmoid(lse - s_h),
exact, one elementwise rescale per query row. A row that sees nothing (lse = -inf) gets 0,
as the sink then takes the whole softmax.
"""

from __future__ import annotations

import torch


def softcap_score_mod(cap: float):
    """score_mod: x -> cap · tanh(x / cap) (x is already scaled by flex)."""

    def softcap(score, b, h, q_idx, kv_idx):
        return torch.tanh(score / cap) * cap

    return softcap


def cap_logits(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """The same rule on materialised logits (page scores); identity without a cap."""
    return logits if cap is None else torch.tanh(logits / cap) * cap


def fold_sinks(out: torch.Tensor, lse: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """out [..., D] (the kernel's softmax without the sink), lse [...] its natural-log
    normaliser, sinks broadcastable to lse: the output with the sink column in the
    softmax (module docstring). float32."""
    return out.float() * torch.sigmoid(lse.float() - sinks.float())[..., None]


def check_kernel(kernel: str, softcap: bool, sinks: bool) -> None:
    """Softcap needs a score_mod and sinks need the lse: only the flex kernel has both.
    softcap, sinks: whether the layer has them."""
    if kernel != "flex" and (softcap or sinks):
        what = "logit softcapping" if softcap else "attention sinks"
        raise ValueError(f"this model's {what} runs inside FlexAttention (score_mod / lse), "
                         f"which attention_kernel={kernel!r} lacks; use "
                         "attention_kernel=\"flex\".")
