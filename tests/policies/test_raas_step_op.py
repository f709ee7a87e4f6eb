"""raas_flex::raas_bookkeeping's torch body is the staged RaaS step (functional's
staged_bookkeeping with RaaSPolicy's hooks): the same writes, bit for bit; where the fused
kernel may run (fused_layout, RaaSPolicy.fused_step); the op's registration (opcheck). The
CUDA kernel is checked against this body in tests/gpu/test_raas_step_kernel.py."""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from raas_flex.compile import clone_cache
from raas_flex.functional import staged_bookkeeping
from raas_flex.policies import raas_step_op
from raas_flex.policies.raas import RaaSPolicy
from raas_flex.policies.raas_step_layout import FusedLayout, fused_layout
from raas_flex.policies.raas_step_op import raas_bookkeeping
from tests.raas_state import random_raas_state

FIELDS = ("k", "v", "fill", "visible", "timestamp", "pinned", "page_id", "kmin", "kmax",
          "current", "length", "overflow")
SCALE = 0.125


def _run_op(inputs, ratio: tuple[int, int]) -> torch.Tensor:
    c = inputs.cache
    return raas_bookkeeping(c.k, c.v, c.fill, c.visible, c.timestamp, c.pinned, c.page_id,
                            c.kmin, c.kmax, c.current, c.length, c.overflow,
                            c.policy_state["arrivals"], inputs.step, inputs.k, inputs.v,
                            inputs.q, c.page_size, SCALE, *ratio)


@pytest.mark.parametrize("seed,B,H,S,P,G,top_ratio,all_pinned", [
    (0, 2, 2, 9, 16, 2, 0.5, False), (1, 3, 1, 16, 16, 4, 0.6, False),
    (2, 1, 4, 5, 32, 1, 0.15, False), (3, 2, 2, 7, 16, 3, 1.0, False),
    (4, 2, 3, 6, 16, 2, 0.5, True),
])
def test_torch_body_is_the_staged_step(seed, B, H, S, P, G, top_ratio, all_pinned):
    config = rf.RaaSConfig(budget=S * P, page_size=P, top_ratio=top_ratio)
    policy = rf.make_policy(config)
    staged = random_raas_state(seed, B, H, S, P, 16, G, torch.float32, "cpu",
                               all_pinned=all_pinned)
    fused = random_raas_state(seed, B, H, S, P, 16, G, torch.float32, "cpu",
                              all_pinned=all_pinned)
    staged_bookkeeping(staged.q, staged.k, staged.v, staged.cache, policy, staged.step, SCALE)
    scores = _run_op(fused, policy.top_ratio)
    for name in FIELDS:
        assert torch.equal(getattr(fused.cache, name), getattr(staged.cache, name)), name
    assert torch.equal(scores, policy.score(staged.q, staged.cache, SCALE))
    assert int(fused.cache.policy_state["arrivals"].abs().sum()) == 0
    assert bool(fused.cache.overflow) == all_pinned  # a page opened with no room: flagged


def test_layout_holds_what_fits_one_block():
    assert fused_layout(128, 128, 4, torch.bfloat16) == FusedLayout(512, 16, 1)
    assert fused_layout(64, 128, 4, torch.bfloat16) == FusedLayout(256, 16, 1)
    assert fused_layout(256, 128, 4, torch.bfloat16) is None  # 1,024 threads: would spill
    assert fused_layout(8, 256, 1, torch.float32) == FusedLayout(128, 32, 2)
    assert fused_layout(128, 128, 4, torch.bfloat16, 4) == FusedLayout(128, 16, 1, 4)
    assert fused_layout(256, 128, 4, torch.bfloat16, 4) == FusedLayout(256, 16, 1, 4)
    assert fused_layout(1024, 128, 4, torch.bfloat16, 4) is None  # a block's 256: spills
    assert fused_layout(257, 128, 4, torch.bfloat16) is None  # > 4 chunks a thread
    assert fused_layout(128, 128, 8, torch.bfloat16) is None  # 8 x 4 partial sums: spills
    assert fused_layout(128, 80, 4, torch.bfloat16) is None  # 10 chunks: not a power of two
    assert fused_layout(16, 128, 4, torch.int8) is None  # an 8-bit pool runs staged
    assert fused_layout(16, 128, 64, torch.bfloat16) is None  # group too large


def test_fused_step_only_for_raas_rule_on_cuda():
    config = rf.RaaSConfig(budget=64, page_size=16)
    inputs = random_raas_state(0, 1, 1, 4, 16, 16, 1, torch.float32, "cpu")
    args = (inputs.q, inputs.k, inputs.v, inputs.cache, inputs.step, SCALE)
    assert RaaSPolicy(config).fused_step(*args) is None  # the CPU runs the stages
    assert not raas_step_op.fuses(inputs.cache, inputs.q)
    guard = rf.make_policy(rf.RaaSConfig(budget=64, page_size=16, policy="raas_guard"))
    assert guard.fused_step(*args) is None


def test_raas_allocates_the_arrival_counter():
    config = rf.RaaSConfig(budget=64, page_size=16)
    cache = rf.new_layer_cache(config, rf.make_policy(config), 3, 2, 16, prompt_tokens=8)
    arrivals = cache.policy_state["arrivals"]
    assert arrivals.shape == (3,) and arrivals.dtype == torch.int32 and not arrivals.any()
    assert clone_cache(cache).policy_state["arrivals"] is not arrivals


def test_op_passes_opcheck():
    inputs = random_raas_state(5, 2, 2, 6, 16, 16, 2, torch.float32, "cpu")
    c = inputs.cache
    args = (c.k, c.v, c.fill, c.visible, c.timestamp, c.pinned, c.page_id, c.kmin, c.kmax,
            c.current, c.length, c.overflow, c.policy_state["arrivals"], inputs.step,
            inputs.k, inputs.v, inputs.q, 16, SCALE, 1, 2)
    torch.library.opcheck(raas_bookkeeping, args)
