"""Drive one layer's cache through a prompt and decode steps, keeping the full K/V history
so a test can build dense and masked-dense references for every step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

import raas_flex as rf
from raas_flex.cache import LayerCache
from raas_flex.positions import attended_positions
from raas_flex.policies import Policy
from tests.reference_attention import reference_attention


@dataclass
class Shapes:
    batch: int
    kv_heads: int
    group: int
    head_dim: int

    @property
    def q_heads(self) -> int:
        return self.kv_heads * self.group


@dataclass
class Step:
    """What one decode step produced, with its inputs and the history so far."""

    index: int
    q: torch.Tensor  # [B, Hq, 1, D]
    out: torch.Tensor  # [B, Hq, 1, D]
    keys: torch.Tensor  # [B, H, N, D] real tokens in logical order (padded past lengths)
    values: torch.Tensor  # [B, H, N, D]
    lengths: torch.Tensor  # [B] tokens seen
    attended: torch.Tensor  # [B, H, N] bool as reported by the cache
    cache: LayerCache


@dataclass
class Drive:
    config: rf.RaaSConfig
    policy: Policy
    shapes: Shapes
    prompt_lengths: list[int]
    steps: int
    seed: int = 0
    integer_valued: bool = False  # exact arithmetic: decisions tie-free of rounding
    dtype: torch.dtype = torch.float32
    step_fn: Callable | None = None  # defaults to rf.decode_step
    cache: LayerCache | None = field(default=None, init=False)

    def _draw(self, gen: torch.Generator, *shape: int) -> torch.Tensor:
        if self.integer_valued:
            return torch.randint(-3, 4, shape, generator=gen).to(self.dtype)
        return torch.randn(shape, generator=gen).to(self.dtype)

    def run(self) -> Iterator[Step]:
        s = self.shapes
        gen = torch.Generator().manual_seed(self.seed)
        T = max(self.prompt_lengths)
        lengths = torch.tensor(self.prompt_lengths)
        mask = torch.arange(T)[None, :] >= (T - lengths)[:, None]
        q = self._draw(gen, s.batch, s.q_heads, T, s.head_dim)
        k = self._draw(gen, s.batch, s.kv_heads, T, s.head_dim)
        v = self._draw(gen, s.batch, s.kv_heads, T, s.head_dim)
        self.cache = rf.new_layer_cache(
            self.config, self.policy, s.batch, s.kv_heads, s.head_dim,
            prompt_tokens=T, max_new_tokens=self.steps, dtype=self.dtype,
        )
        rf.prefill(q, k, v, self.cache, self.policy, attention_mask=mask.long())
        N = T + self.steps
        keys = torch.zeros(s.batch, s.kv_heads, N, s.head_dim, dtype=self.dtype)
        values = torch.zeros_like(keys)
        for b, n in enumerate(self.prompt_lengths):
            keys[b, :, :n] = k[b, :, T - n:]
            values[b, :, :n] = v[b, :, T - n:]
        seen = lengths.clone()
        step_fn = self.step_fn or rf.decode_step
        for t in range(1, self.steps + 1):
            q = self._draw(gen, s.batch, s.q_heads, 1, s.head_dim)
            k = self._draw(gen, s.batch, s.kv_heads, 1, s.head_dim)
            v = self._draw(gen, s.batch, s.kv_heads, 1, s.head_dim)
            out = step_fn(q, k, v, self.cache, self.policy, t)
            keys[torch.arange(s.batch), :, seen] = k[:, :, 0]
            values[torch.arange(s.batch), :, seen] = v[:, :, 0]
            seen += 1
            yield Step(t, q, out, keys, values, seen.clone(),
                       attended_positions(self.cache, N), self.cache)


def masked_dense(step: Step, attended: torch.Tensor | None = None) -> torch.Tensor:
    """float64 softmax attention of step.q over the `attended` history ([B, H, N] bool;
    default: every real token). Returns [B, Hq, 1, D]."""
    N = step.keys.shape[2]
    real = torch.arange(N)[None, None, :] < step.lengths[:, None, None]
    allowed = real if attended is None else attended & real
    return reference_attention(step.q, step.keys, step.values,
                               allowed.expand(-1, step.keys.shape[1], -1))
