"""R-KV's page scores, computed only on the steps that compress.

rkv (rkv.py) frees pages at checkpoints only (every `rkv_buffer` tokens), and a page score
is read only there: on the other steps it is thrown away. Computing it every step cost
about half an rkv step at N = 128k on the H200 (82 µs against 35 µs for raas, issue 20).
A branch on the step would break the one captured graph, so the scores are one custom op
that always launches and takes the decision on the device, per sequence:
`rkv_page_scores(..., due)` returns the scores of the sequences whose `due` flag is set
and -inf elsewhere. On CUDA it is a Triton kernel (rkv_scores_triton.py) whose programs
read no key when their sequence is not due; elsewhere plain torch (always computed,
then discarded), which is also the reference the kernel is tested against.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from raas_flex.policies.periodic import held_tokens
from raas_flex.policies.scores import layer_softmax


@torch.library.custom_op("raas_flex::rkv_page_scores", mutates_args=())
def rkv_page_scores(ring: torch.Tensor, recorded: torch.Tensor, k: torch.Tensor,
                    fill: torch.Tensor, due: torch.Tensor, sinks: Optional[torch.Tensor],
                    scale: float, softcap: Optional[float], mix_lambda: float,
                    pool_kernel: int) -> torch.Tensor:
    """R-KV page scores, [B, H, S] float32: the sum over a page's held tokens of
    mix_lambda * importance - (1 - mix_lambda) * redundancy; -inf for empty pages and for
    every page of a sequence whose `due` is False.

    ring [B, H, W, G, D] float32: the last W queries; recorded [B, W] bool: ring entries
    holding a real query; k [B, H, S*P, D]: the pool's keys; fill [B, H, S]: tokens held
    per slot; due [B] bool; sinks [H, G] or None: the layer's sink logits; softcap or None.
    """
    importance = observed_importance(ring, recorded, k, fill, scale, pool_kernel, softcap,
                                     sinks)
    tokens = mix_lambda * importance - (1.0 - mix_lambda) * key_redundancy(k, fill)
    B, H, S = fill.shape
    pages = tokens.view(B, H, S, -1).sum(-1).masked_fill(fill == 0, float("-inf"))
    return torch.where(due[:, None, None], pages, float("-inf"))


@rkv_page_scores.register_fake
def _(ring, recorded, k, fill, due, sinks, scale, softcap, mix_lambda, pool_kernel):
    return fill.new_empty(fill.shape, dtype=torch.float32)


@rkv_page_scores.register_kernel("cuda")
def _(ring, recorded, k, fill, due, sinks, scale, softcap, mix_lambda, pool_kernel):
    from raas_flex.policies.rkv_scores_triton import rkv_page_scores_cuda
    return rkv_page_scores_cuda(ring, recorded, k, fill, due, sinks, scale, softcap,
                                mix_lambda, pool_kernel)


def observed_importance(ring: torch.Tensor, recorded: torch.Tensor, k: torch.Tensor,
                        fill: torch.Tensor, scale: float, kernel: int,
                        softcap: float | None = None,
                        sinks: torch.Tensor | None = None) -> torch.Tensor:
    """R-KV importance of every pool token, [B, H, S*P]: softmax over held tokens of the
    group-max logits of each recorded query, under the layer's logit rules (softcap; the
    group-max sink logit in the softmax, as the model attends), averaged over the recorded
    queries, then max-pooled over `kernel` neighbours inside each page; 0 for tokens not held."""
    B, H, W, G, D = ring.shape
    N, S = k.shape[2], fill.shape[-1]
    P = N // S
    held = held_tokens(fill, P)  # [B, H, N]
    logits = ring.view(B, H, W * G, D) @ k.float().transpose(-1, -2)
    logits = logits.view(B, H, W, G, N).amax(3) * scale  # [B, H, W, N]
    # the sink joins the softmax as a group max too (the cap is monotone: max, then cap)
    sink = None if sinks is None else sinks.amax(-1)[None, :, None, None]
    probs = layer_softmax(logits, held[:, :, None], softcap, sink)
    weight = recorded.float()[:, None, :, None]  # [B, 1, W, 1]
    mean = (probs * weight).sum(2) / weight.sum(2).clamp(min=1)  # [B, H, N]
    pooled = F.max_pool1d(mean.view(-1, 1, P), kernel, stride=1, padding=kernel // 2)
    return torch.where(held, pooled.view(B, H, N), 0.0)


def key_redundancy(k: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """R-KV redundancy of every pool token, [B, H, S*P]: softmax over held tokens of the
    token's mean cosine similarity to the held keys (itself counted as 0, mean over all
    held rows), computed from the sum of the unit keys; 0 for tokens not held."""
    held = held_tokens(fill, k.shape[2] // fill.shape[-1])  # [B, H, N]
    keys = k.float()
    unit = keys / (keys.norm(dim=-1, keepdim=True) + 1e-8) * held[..., None]
    total = unit.sum(2, keepdim=True)  # [B, H, 1, D]
    count = held.sum(-1, keepdim=True).clamp(min=1)  # [B, H, 1]
    mean_similarity = ((unit * total).sum(-1) - (unit * unit).sum(-1)) / count
    redundancy = torch.softmax(mean_similarity.masked_fill(~held, float("-inf")), dim=-1)
    return torch.where(held, redundancy, 0.0)
