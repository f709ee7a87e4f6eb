"""RaaS and dense against dense attention: whole-budget equality and masked-dense equality."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import raas_flex as rf
from raas_flex.positions import held_positions
from tests.layer_harness import Drive, masked_dense
from tests.strategies import PAGE_SIZES, kernel_and_steps, prompt_lengths, shapes

TOL = 1e-5


def _max_err(step, attended=None) -> float:
    return (step.out.double() - masked_dense(step, attended)).abs().max().item()


@given(data=st.data(), shape=shapes(), page_size=st.sampled_from(PAGE_SIZES),
       policy=st.sampled_from(("raas", "dense")), run=kernel_and_steps(60))
def test_budget_covering_everything_equals_dense(data, shape, page_size, policy, run):
    kernel, steps = run
    prompts = data.draw(prompt_lengths(shape.batch, page_size, max_pages=3))
    pages = -(-(max(prompts) + steps) // page_size)
    budget = (max(pages, -(-max(prompts) // page_size) + 2) + data.draw(st.integers(0, 2)))
    config = rf.RaaSConfig(budget=budget * page_size, page_size=page_size, policy=policy,
                           attention_kernel=kernel)
    drive = Drive(config, rf.make_policy(config), shape, prompts, steps,
                  seed=data.draw(st.integers(0, 2**16)))
    for step in drive.run():
        assert _max_err(step) <= TOL, f"step {step.index} differs from dense"


@given(data=st.data(), shape=shapes(), page_size=st.sampled_from(PAGE_SIZES),
       keep_prefill=st.booleans(), run=kernel_and_steps(120))
def test_any_budget_equals_masked_dense_and_holds_invariants(
        data, shape, page_size, keep_prefill, run):
    kernel, steps = run
    prompts = data.draw(prompt_lengths(shape.batch, page_size, max_pages=2))
    prompt_pages = -(-max(prompts) // page_size)
    slots = prompt_pages + data.draw(st.integers(2, 4))
    config = rf.RaaSConfig(budget=slots * page_size, page_size=page_size,
                           keep_prefill=keep_prefill, attention_kernel=kernel)
    drive = Drive(config, rf.make_policy(config), shape, prompts, steps,
                  seed=data.draw(st.integers(0, 2**16)))
    pool = None
    for step in drive.run():
        cache = step.cache
        if pool is None:
            pool = (cache.k.data_ptr(), cache.k.shape, cache.v.data_ptr(), cache.fill.shape)
        assert _max_err(step, step.attended) <= TOL, f"step {step.index}"
        # Never more than L tokens per (sequence, kv head), prompt included; pool fixed.
        assert int(cache.fill.sum(-1).max()) <= config.budget
        assert (cache.k.data_ptr(), cache.k.shape, cache.v.data_ptr(),
                cache.fill.shape) == pool
        # RaaS attends everything it holds, and holds each sequence's newest token.
        held = held_positions(cache, step.keys.shape[2])
        assert torch.equal(held, step.attended)
        newest = step.lengths - 1
        assert held[torch.arange(shape.batch), :, newest].all()
        if keep_prefill:  # pinned prompt pages are never evicted
            for b, n in enumerate(prompts):
                assert held[b, :, :n].all()
