"""The compiled decode step agrees with eager, decision for decision, and stays bounded
over a long run."""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from raas_flex.functional import decode_step_tensors
from tests.compiled_setup import CONFIG, POLICY, SCALE, SHAPES, compiled_step
from tests.layer_harness import Drive


@pytest.mark.parametrize("prompts, seed", [([20, 7], 0), ([33, 33], 1), ([1, 40], 2)])
def test_compiled_step_agrees_with_eager(prompts, seed):
    eager = Drive(CONFIG, POLICY, SHAPES, prompts, steps=70, seed=seed).run()
    compiled = Drive(CONFIG, POLICY, SHAPES, prompts, steps=70, seed=seed,
                     step_fn=compiled_step).run()
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b.out, a.out, atol=1e-5, rtol=1e-5)
        for name in ("fill", "visible", "timestamp", "pinned", "page_id", "current", "length"):
            assert torch.equal(getattr(a.cache, name), getattr(b.cache, name)), name


def test_two_thousand_compiled_steps_stay_bounded_and_finite():
    drive = Drive(CONFIG, POLICY, SHAPES, [21, 9], steps=2000, step_fn=compiled_step)
    for step in drive.run():
        assert torch.isfinite(step.out).all()
        assert int(step.cache.fill.sum(-1).max()) <= CONFIG.budget
    cache = drive.cache
    assert cache.k.shape[2] == CONFIG.budget  # the pool never grew
    assert int(cache.length.min()) == 9 + 2000
    assert int(cache.page_id.max()) == (21 + 2000 - 1) // 16  # decoding reached the end
    assert bool(cache.pinned[0, :, :2].all())  # the 21-token prompt's two pages stay
    assert int((cache.page_id >= 0).sum(-1).min()) == CONFIG.slots  # the budget is used


def test_compiled_step_over_a_large_pool_agrees_with_eager():
    """Regression: torch 2.13's compiled CPU flex misread a folded query view over pools of
    1024+ tokens (see raas_flex.attention.workarounds.materialised_on_cpu)."""
    config = rf.RaaSConfig(budget=1024, page_size=16)
    policy = rf.make_policy(config)
    step = torch.compile(decode_step_tensors, fullgraph=True, dynamic=False)
    eager = Drive(config, policy, SHAPES, [20, 7], steps=40, seed=3).run()
    compiled = Drive(config, policy, SHAPES, [20, 7], steps=40, seed=3,
                     step_fn=lambda q, k, v, c, p, t: step(q, k, v, c, p, torch.tensor(t),
                                                           SCALE)).run()
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b.out, a.out, atol=1e-5, rtol=1e-5)
