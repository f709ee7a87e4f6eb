"""raas_flex::raas_bookkeeping's CUDA kernel (raas_step.cu) against its torch body
(raas_step_op.raas_bookkeeping_torch, the staged rules): with integer-valued keys and
queries every bound is exact, so every write must match bit for bit, ties included (equal
timestamps, equal bounds, free slots, pinned slots, a row with no room); with normal keys
the bounds agree to rounding and the stamps are the torch rule's for the kernel's bounds.
Then whole decode steps on CUDA, fused against staged, eager and compiled. CUDA only."""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from raas_flex.cache.append import append_token, open_slot
from raas_flex.cache.slots import choose_slot
from raas_flex.compile import clone_cache, compile_decode_step
from raas_flex.functional import decode_step_tensors
from raas_flex.policies import raas_step_layout, raas_step_op
from raas_flex.policies.raas_step_layout import fused_layout, row_blocks
from raas_flex.policies.raas_step_op import raas_bookkeeping, raas_bookkeeping_torch
from raas_flex.policies.scores import summary_bound, top_fraction
from tests.raas_state import random_raas_state

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

FIELDS = ("k", "v", "fill", "visible", "timestamp", "pinned", "page_id", "kmin", "kmax",
          "current", "length", "overflow")
SCALE = 0.0883883


def _op(inputs, ratio, body=raas_bookkeeping):
    c = inputs.cache
    args = (c.k, c.v, c.fill, c.visible, c.timestamp, c.pinned, c.page_id, c.kmin, c.kmax,
            c.current, c.length, c.overflow)
    if body is raas_bookkeeping:
        args += (c.policy_state["arrivals"],)
    return body(*args, inputs.step, inputs.k, inputs.v, inputs.q, c.page_size, SCALE, *ratio)


def _pair(seed, B, H, S, P, D, G, dtype, **kw):
    return [random_raas_state(seed, B, H, S, P, D, G, dtype, "cuda", **kw) for _ in range(2)]


CASES = [  # seed, B, H, S, P, D, G, dtype, (num, den)
    (0, 1, 8, 128, 16, 128, 4, torch.bfloat16, (1, 2)),
    (1, 3, 2, 64, 16, 128, 4, torch.bfloat16, (3, 5)),
    (2, 2, 4, 64, 16, 128, 8, torch.bfloat16, (1, 2)),
    (3, 2, 2, 33, 32, 64, 1, torch.float16, (1, 2)),
    (4, 1, 3, 16, 16, 256, 2, torch.float32, (1, 1)),
    (5, 4, 2, 8, 128, 128, 7, torch.float32, (3, 20)),
    (6, 2, 1, 2, 16, 128, 4, torch.bfloat16, (1, 2)),
    (7, 32, 8, 128, 16, 128, 4, torch.bfloat16, (1, 2)),
]


@pytest.mark.parametrize("blocks", [1, 2, 4])
@pytest.mark.parametrize("seed,B,H,S,P,D,G,dtype,ratio", CASES)
def test_kernel_writes_as_torch_rule_exact_bounds(seed, B, H, S, P, D, G, dtype, ratio, blocks,
                                                  monkeypatch):
    """blocks: a row's thread blocks (a cluster of them from Hopper on)."""
    monkeypatch.setattr(raas_step_layout, "CLUSTER_BLOCKS", blocks)
    layout = fused_layout(S, D, G, dtype, row_blocks(torch.device("cuda"), B * H))
    assert layout is not None  # the kernel runs, not the torch body
    kernel, torch_rule = _pair(seed, B, H, S, P, D, G, dtype)
    got = _op(kernel, ratio)
    want = _op(torch_rule, ratio, raas_bookkeeping_torch)
    for name in FIELDS:
        assert torch.equal(getattr(kernel.cache, name), getattr(torch_rule.cache, name)), name
    assert torch.equal(got, want)
    assert not kernel.cache.policy_state["arrivals"].any()


def test_rows_too_large_for_the_kernel_run_the_torch_rule():
    assert fused_layout(1024, 128, 4, torch.bfloat16, row_blocks(torch.device("cuda"), 2)) is None
    kernel, torch_rule = _pair(10, 1, 2, 1024, 16, 128, 4, torch.bfloat16)
    assert torch.equal(_op(kernel, (1, 2)), _op(torch_rule, (1, 2), raas_bookkeeping_torch))
    for name in FIELDS:
        assert torch.equal(getattr(kernel.cache, name), getattr(torch_rule.cache, name)), name


def test_row_without_room_flags_overflow_and_writes_slot_zero():
    kernel, torch_rule = _pair(8, 2, 2, 6, 16, 64, 2, torch.bfloat16, all_pinned=True)
    kernel.cache.length.fill_(16 * 7)  # both sequences open a page
    torch_rule.cache.length.fill_(16 * 7)
    _op(kernel, (1, 2))
    _op(torch_rule, (1, 2), raas_bookkeeping_torch)
    assert bool(kernel.cache.overflow)
    for name in FIELDS:
        assert torch.equal(getattr(kernel.cache, name), getattr(torch_rule.cache, name)), name


@pytest.mark.parametrize("seed,B,H,S,P,D,G,dtype,ratio", CASES[:5])
def test_kernel_stamps_torch_rule_on_its_bounds(seed, B, H, S, P, D, G, dtype, ratio):
    """Normal keys: bounds equal to rounding; stamps, opens and writes exactly the torch
    rule's given the kernel's bounds (a near-tie may order differently under rounding)."""
    kernel, ref = _pair(seed, B, H, S, P, D, G, dtype, integer_valued=False)
    before = ref.cache.timestamp.clone()
    got = _op(kernel, ratio)
    c = ref.cache
    slot, room = choose_slot(c, c.timestamp)
    open_slot(c, slot, room, ref.step)
    append_token(c, ref.k, ref.v)
    want = summary_bound(ref.q, c.kmax, c.kmin, c.fill, SCALE, None)
    live = c.fill > 0
    assert torch.equal(got.isinf() & (got < 0), ~live)
    torch.testing.assert_close(got[live], want[live], rtol=1e-5, atol=1e-5)
    fresh = top_fraction(got, c, *ratio)
    c.timestamp.copy_(torch.where(fresh, ref.step, c.timestamp))
    c.visible.copy_(c.fill)
    for name in FIELDS:
        assert torch.equal(getattr(kernel.cache, name), getattr(c, name)), name
    assert bool((kernel.cache.timestamp != before).any())


def test_strided_token_and_query_inputs():
    kernel, torch_rule = _pair(9, 2, 4, 32, 16, 128, 4, torch.bfloat16)
    for inputs in (kernel, torch_rule):  # k, v as slices of one fused projection
        kv = torch.cat([inputs.k, inputs.v], dim=-1)
        inputs.k, inputs.v = kv[..., :128], kv[..., 128:]
        inputs.q = inputs.q.transpose(1, 2).contiguous().transpose(1, 2)
    _op(kernel, (1, 2))
    _op(torch_rule, (1, 2), raas_bookkeeping_torch)
    for name in FIELDS:
        assert torch.equal(getattr(kernel.cache, name), getattr(torch_rule.cache, name)), name


def _decode(steps: int, fused: bool, compiled: bool, B=2, H=4, G=4, S=16, P=16, D=128):
    """`steps` decode steps from one prompt with integer-valued inputs: (outputs, cache)."""
    config = rf.RaaSConfig(budget=S * P, page_size=P)
    policy = rf.make_policy(config)
    gen = torch.Generator(device="cuda").manual_seed(3)
    draw = lambda *s: torch.randint(-3, 4, s, generator=gen, device="cuda").to(torch.bfloat16)
    T = 40
    cache = rf.new_layer_cache(config, policy, B, H, D, prompt_tokens=T,
                               dtype=torch.bfloat16, device="cuda")
    rf.prefill(draw(B, H * G, T, D), draw(B, H, T, D), draw(B, H, T, D), cache, policy)
    assert raas_step_op.fuses(cache, draw(B, H, G, D))
    fn = compile_decode_step(None) if compiled else decode_step_tensors
    outs = []
    raas_step_op.ENABLED = fused
    try:
        for i in range(steps):
            step = torch.tensor(i + 1, device="cuda")
            q, k, v = draw(B, H * G, 1, D), draw(B, H, 1, D), draw(B, H, 1, D)
            outs.append(fn(q, k, v, cache, policy, step, 0.125).clone())
    finally:
        raas_step_op.ENABLED = True
    return torch.stack(outs), cache


def test_fused_decode_equals_staged_decode():
    """150 eager steps (pages open, pinned prompt pages stay, unpinned ones are evicted)."""
    fused_out, fused = _decode(150, fused=True, compiled=False)
    staged_out, staged = _decode(150, fused=False, compiled=False)
    for name in FIELDS:
        assert torch.equal(getattr(fused, name), getattr(staged, name)), name
    assert torch.equal(fused_out, staged_out)
    assert int(fused.length[0]) == 40 + 150


def test_compiled_fused_decode_equals_eager():
    compiled_out, compiled = _decode(60, fused=True, compiled=True)
    eager_out, eager = _decode(60, fused=True, compiled=False)
    for name in FIELDS:
        assert torch.equal(getattr(compiled, name), getattr(eager, name)), name
    torch.testing.assert_close(compiled_out, eager_out, rtol=2e-2, atol=2e-2)
