"""The fused RaaS bookkeeping kernel makes the same decisions as the generic step.

Runs the Triton kernel through Triton's CPU interpreter (TRITON_INTERPRET=1), so it needs
the `triton` package and is skipped where it is absent (CI's CPU torch has none). The GPU
check of the whole fused step is bench/latency/decode_probe.py (results in bench/results/latency/).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernel's definition
triton = pytest.importorskip("triton")

import raas_flex as rf  # noqa: E402
from raas_flex.compile import clone_cache  # noqa: E402
from raas_flex.functional import decode_step_tensors  # noqa: E402
from raas_flex.masks import decode_block_mask  # noqa: E402

FIELDS = ("k", "v", "kmin", "kmax", "fill", "visible", "timestamp", "pinned", "page_id",
          "current", "length", "overflow")


def _seen_cache(policy, batch: int, heads: int, dim: int, gen: torch.Generator):
    """A full pool after a prompt and enough decode steps to have evicted."""
    config = policy.config
    T = config.page_size + 3
    cache = rf.new_layer_cache(config, policy, batch, heads, dim, prompt_tokens=T)
    rf.prefill(torch.randn(batch, heads * 4, T, dim, generator=gen),
               torch.randn(batch, heads, T, dim, generator=gen),
               torch.randn(batch, heads, T, dim, generator=gen), cache, policy)
    for t in range(1, config.budget + 2 * config.page_size):
        decode_step_tensors(torch.randn(batch, heads * 4, 1, dim, generator=gen),
                            torch.randn(batch, heads, 1, dim, generator=gen),
                            torch.randn(batch, heads, 1, dim, generator=gen),
                            cache, policy, torch.tensor(t), dim ** -0.5)
    return cache


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                    reason="needs Triton's interpreter")
@pytest.mark.parametrize("budget,page", [(96, 16), (128, 32)])
def test_fused_kernel_matches_generic_step(budget: int, page: int) -> None:
    from bench.latency.fused_raas import _raas_manage

    gen = torch.Generator().manual_seed(budget)
    B, H, G, D = 2, 2, 4, 32
    policy = rf.make_policy(rf.RaaSConfig(budget=budget, page_size=page))
    fused = _seen_cache(policy, B, H, D, gen)
    generic = clone_cache(fused)
    S = fused.num_slots
    bufs = [torch.zeros(B, H, 1, dtype=torch.int32), torch.zeros(B, H, 1, S, dtype=torch.int32),
            torch.zeros(B, H, 1, dtype=torch.int32), torch.zeros(B, H, 1, S, dtype=torch.int32)]
    start = int(fused.length.max())
    for t in range(start, start + 2 * page + 3):  # crosses two page boundaries
        q = torch.randn(B, H * G, 1, D, generator=gen)
        k, v = torch.randn(B, H, 1, D, generator=gen), torch.randn(B, H, 1, D, generator=gen)
        step = torch.tensor(t)
        c = fused
        _raas_manage[(B * H,)](
            q, k, v, c.k, c.v, c.kmin, c.kmax, c.fill, c.visible, c.timestamp, c.pinned,
            c.page_id, c.current, c.length, c.overflow, step, *bufs, D ** -0.5,
            policy.config.top_ratio, H=H, S=S, SB=triton.next_power_of_2(S), P=page, D=D,
            DC=16, G=G, GB=4)
        c.length.add_(1)
        decode_step_tensors(q, k, v, generic, policy, step, D ** -0.5)
        mask = decode_block_mask(generic.visible, page, G)
        assert [f for f in FIELDS if not torch.equal(getattr(fused, f), getattr(generic, f))] == []
        assert torch.equal(bufs[0], mask.kv_num_blocks)
        assert torch.equal(bufs[1], mask.kv_indices)
        assert torch.equal(bufs[2], mask.full_kv_num_blocks)
        assert torch.equal(bufs[3], mask.full_kv_indices)
