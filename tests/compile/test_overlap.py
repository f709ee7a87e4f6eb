"""Bookkeeping beside the attention (raas_flex/overlap.py): same decisions as the serial step.

Off CUDA the two custom ops run the bookkeeping inline, so these eager CPU tests check the
plumbing (named tensor lists, the rebuilt cache, the policy registry) and that a deferred
step decides and attends exactly as the serial one; the stream overlap itself is checked
on the GPU by bench/latency/overlap_check.py.
"""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from raas_flex import overlap
from raas_flex.compile import clone_cache
from raas_flex.functional import decode_step_tensors

B, H, G, D, PAGE = 2, 2, 2, 16, 16
STATE = ("k", "v", "kmin", "kmax", "fill", "visible", "timestamp", "pinned", "page_id",
         "current", "length")


def _drive(policy_name: str, overlap_on: bool, steps: int, seed: int):
    config = rf.RaaSConfig(budget=64, page_size=PAGE, policy=policy_name,
                           attention_kernel="sdpa", overlap_bookkeeping=overlap_on)
    policy = rf.make_policy(config)
    gen = torch.Generator().manual_seed(seed)
    T = 20
    cache = rf.new_layer_cache(config, policy, B, H, D, prompt_tokens=T, max_new_tokens=steps)
    q = torch.randn(B, H * G, T, D, generator=gen)
    k, v = torch.randn(B, H, T, D, generator=gen), torch.randn(B, H, T, D, generator=gen)
    rf.prefill(q, k, v, cache, policy)
    outs = []
    for i in range(steps):
        q = torch.randn(B, H * G, 1, D, generator=gen)
        k, v = torch.randn(B, H, 1, D, generator=gen), torch.randn(B, H, 1, D, generator=gen)
        outs.append(decode_step_tensors(q, k, v, cache, policy, torch.tensor(T + i), D ** -0.5))
    return cache, torch.stack(outs)


@pytest.mark.parametrize("name", ["raas", "raas_guard", "h2o", "h2o_decay"])
def test_deferred_step_equals_serial_step(name: str) -> None:
    deferred, out_deferred = _drive(name, True, 80, seed=3)
    serial, out_serial = _drive(name, False, 80, seed=3)
    for field in STATE:
        assert torch.equal(getattr(deferred, field), getattr(serial, field)), field
    for key, tensor in serial.policy_state.items():
        assert torch.equal(deferred.policy_state[key], tensor), key
    assert torch.equal(out_deferred, out_serial)
    assert int(serial.page_id.max()) > 64 // PAGE  # pages were evicted along the way


def test_deferred_writes_are_what_update_writes() -> None:
    """Each deferring policy's update writes exactly the tensors it names, nothing else."""
    for name in ("raas", "raas_guard", "h2o", "h2o_decay"):
        cache, _ = _drive(name, False, 20, seed=5)
        policy = rf.make_policy(rf.RaaSConfig(budget=64, page_size=PAGE, policy=name))
        before = clone_cache(cache)
        query = torch.randn(B, H, G, D)
        overlap.bookkeeping(policy, query, cache, torch.tensor(999), D ** -0.5)
        names, _, _ = overlap.cache_tensors(cache, ())
        changed = {n for n in names
                   if not torch.equal(_get(cache, n), _get(before, n))}
        assert changed <= set(policy.deferred_writes()), (name, changed)


def _get(cache, name: str) -> torch.Tensor:
    if name.startswith(overlap.STATE):
        return cache.policy_state[name[len(overlap.STATE):]]
    return getattr(cache, name)


def test_policies_that_must_not_defer() -> None:
    for name in ("raas_hsr", "quest", "streaming", "rkv", "lazy_eviction", "dense"):
        assert rf.make_policy(rf.RaaSConfig(policy=name)).deferred_writes() is None, name


def test_unknown_deferred_write_is_refused() -> None:
    cache, _ = _drive("raas", False, 1, seed=1)
    with pytest.raises(ValueError, match="not tensors of the cache"):
        overlap.cache_tensors(cache, ("timestamps",))


def test_overlap_flag_must_be_bool() -> None:
    with pytest.raises(TypeError, match="overlap_bookkeeping must be True or False"):
        rf.RaaSConfig(overlap_bookkeeping=1)
