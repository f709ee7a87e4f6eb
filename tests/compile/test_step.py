"""The compiled decode step: one graph, no breaks, no recompiles, same result as eager.

One module-scope drive of 200 decode steps (page openings and evictions included) feeds
every test, so the whole file compiles the step once (~10-30 s on a small CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import raas_flex as rf
from raas_flex.cache import LayerCache
from raas_flex.compile import (
    clone_cache, compile_count, compile_decode_step, count_graph_breaks, recompile_count,
)
from raas_flex.functional import decode_step_tensors

# A small pool keeps the 200 steps evicting; large pools are covered by
# tests/compile/test_compiled.py (a torch 2.13 CPU bug there is worked around in
# raas_flex/attention/workarounds.py).
from tests.compiled_setup import CONFIG, POLICY, SHAPES
from tests.reference_attention import reference_attention

B, H, G, D = SHAPES.batch, SHAPES.kv_heads, SHAPES.group, SHAPES.head_dim
BUDGET, PAGE = CONFIG.budget, CONFIG.page_size
PROMPTS = (20, 13)  # left-padded batch: page boundaries at different steps per sequence
STEPS = 200
SCALE = D ** -0.5
STATE = ("k", "v", "kmin", "kmax", "fill", "visible", "timestamp", "pinned", "page_id",
         "current", "length", "overflow")


@dataclass
class DriveResult:
    compiles_after_first: int
    compiles_after_all: int
    max_err_vs_eager: float
    max_err_vs_reference: float
    state_mismatches: list[str]
    pages_opened: int
    final: LayerCache
    policy: object


def _reference(q: torch.Tensor, cache) -> torch.Tensor:
    """float64 attention of q over exactly the pool tokens cache.visible marks."""
    seen = (torch.arange(PAGE) < cache.visible[..., None]).flatten(2)  # [B, H, S*P]
    return reference_attention(q, cache.k, cache.v, seen, SCALE)


@pytest.fixture(scope="module")
def drive() -> DriveResult:
    gen = torch.Generator().manual_seed(0)
    config, policy = CONFIG, POLICY  # shared with the other compiled tests: one graph
    T = max(PROMPTS)
    cache = rf.new_layer_cache(config, policy, B, H, D, prompt_tokens=T)
    mask = torch.arange(T)[None] >= T - torch.tensor(PROMPTS)[:, None]
    rf.prefill(torch.randn(B, H * G, T, D, generator=gen), torch.randn(B, H, T, D, generator=gen),
               torch.randn(B, H, T, D, generator=gen), cache, policy, attention_mask=mask.long())
    eager = clone_cache(cache)
    step_fn = compile_decode_step(None)
    after_first = 0
    err_eager = err_ref = 0.0
    mismatches: list[str] = []
    for t in range(1, STEPS + 1):
        q = torch.randn(B, H * G, 1, D, generator=gen)
        k, v = torch.randn(B, H, 1, D, generator=gen), torch.randn(B, H, 1, D, generator=gen)
        step = torch.tensor(t)
        out = step_fn(q, k, v, cache, policy, step, SCALE)
        if t == 1:
            after_first = compile_count(step_fn)
        expected = decode_step_tensors(q, k, v, eager, policy, step, SCALE)
        err_eager = max(err_eager, (out - expected).abs().max().item())
        err_ref = max(err_ref, (out.double() - _reference(q, cache)).abs().max().item())
        mismatches += [f"step {t}: {name}" for name in STATE
                       if not torch.equal(getattr(cache, name), getattr(eager, name))]
    opened = int(cache.page_id.max()) + 1 - -(-max(PROMPTS) // PAGE)
    return DriveResult(after_first, compile_count(step_fn), err_eager, err_ref, mismatches,
                       opened, cache, policy)


def test_200_steps_reuse_one_graph(drive: DriveResult) -> None:
    assert drive.compiles_after_first >= 1
    assert drive.compiles_after_all == drive.compiles_after_first  # no recompilation


def test_drive_crossed_page_boundaries_and_evicted(drive: DriveResult) -> None:
    cache = drive.final
    assert cache.length.tolist() == [p + STEPS for p in PROMPTS]
    assert drive.pages_opened > cache.num_slots  # more pages opened than the pool holds
    held = (cache.page_id >= 0).sum(-1)
    assert bool((held * PAGE <= BUDGET).all())
    assert bool((cache.page_id[..., 0] == 0).all()) and bool(cache.pinned[..., 0].all())


def test_compiled_equals_eager(drive: DriveResult) -> None:
    assert drive.state_mismatches == []
    assert drive.max_err_vs_eager <= 1e-5


def test_compiled_equals_float64_reference(drive: DriveResult) -> None:
    assert drive.max_err_vs_reference <= 1e-5


def test_step_traces_as_one_graph_without_breaks(drive: DriveResult) -> None:
    cache = clone_cache(drive.final)
    q = torch.randn(B, H * G, 1, D)
    k, v = torch.randn(B, H, 1, D), torch.randn(B, H, 1, D)
    breaks, graphs = count_graph_breaks(decode_step_tensors, q, k, v, cache, drive.policy,
                                        torch.tensor(STEPS + 1), SCALE)
    assert (breaks, graphs) == (0, 1)


def test_compile_decode_step_is_cached_and_validates_mode() -> None:
    assert compile_decode_step(None) is compile_decode_step(None)
    with pytest.raises(ValueError, match="choose one of"):
        compile_decode_step("fastest")


def test_guards_count_breaks_and_recompiles() -> None:
    def with_break(x: torch.Tensor) -> torch.Tensor:
        y = x + 1
        torch._dynamo.graph_break()
        return y * 2

    assert count_graph_breaks(with_break, torch.ones(3)) == (1, 2)

    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    compiled = torch.compile(double, backend="eager", dynamic=False)
    compiled(torch.ones(3))
    compiled(torch.ones(3))
    assert (compile_count(compiled), recompile_count(compiled)) == (1, 0)
    compiled(torch.ones(4))  # a new static shape recompiles
    assert recompile_count(compiled) == 1


def test_clone_cache_is_independent(drive: DriveResult) -> None:
    copy = clone_cache(drive.final)
    copy.fill.zero_()
    assert bool((drive.final.fill > 0).any())
    assert copy.page_size == drive.final.page_size
