"""Tensor parallelism needs no collective: a cache over a slice of the kv heads makes the
decisions that slice of a full cache makes (raas_flex.hf.tensor_parallel relies on it).

Every policy that declares `per_kv_head` is run over 4 kv heads and, separately, over heads
0-1 and 2-3 (the shards of 2 tensor-parallel ranks) on the same inputs: the held and
attended sets must be identical and the outputs equal. `random` is left out: its hash
reads the local head index, so a rank draws independently of one GPU (still uniform).
"""

from __future__ import annotations

import pytest
import torch

from raas_flex import RaaSConfig
from raas_flex.policies import available_policies, policy_class
from tests.policy_harness import Sequence, make_sequence, run_policy, settings_for

P = 16
KV_HEADS, GROUP = 4, 2
SHARDED = tuple(name for name in available_policies()
                if policy_class(name).Options.per_kv_head and name != "random")


def head_slice(seq: Sequence, first: int, count: int) -> Sequence:
    """The inputs a rank holding kv heads first .. first+count-1 sees (its q heads too)."""
    kv, q = slice(first, first + count), slice(first * GROUP, (first + count) * GROUP)
    return Sequence(q_prompt=seq.q_prompt[:, q], k_prompt=seq.k_prompt[:, kv],
                    v_prompt=seq.v_prompt[:, kv], q_decode=seq.q_decode[:, q],
                    k_decode=seq.k_decode[:, kv], v_decode=seq.v_decode[:, kv],
                    lengths=seq.lengths)


@pytest.mark.parametrize("policy", SHARDED)
@pytest.mark.parametrize("seed", [0, 1])
def test_half_the_heads_decide_as_half_a_full_cache(policy: str, seed: int) -> None:
    seq = make_sequence(seed, batch=2, kv_heads=KV_HEADS, group=GROUP, prompt_lengths=[20, 7],
                        steps=60, key_scale=3.0)
    peers = settings_for(policy, recycled_period=3, recycled_pages=1, hsr_epsilon=0.05,
                         rkv_buffer=16, lazy_window=16)
    config = RaaSConfig.from_fields(budget=4 * P, page_size=P, policy=policy,
                                    attention_kernel="sdpa", **peers)
    full = run_policy(config, seq)
    half = KV_HEADS // 2
    shards = [run_policy(config, head_slice(seq, r * half, half)) for r in range(2)]
    for t in range(seq.steps):
        held = torch.cat([s.held[t] for s in shards], dim=1)
        attended = torch.cat([s.attended[t] for s in shards], dim=1)
        assert torch.equal(held, full.held[t]), f"step {t}: a shard held other tokens"
        assert torch.equal(attended, full.attended[t]), f"step {t}: a shard attended others"
        out = torch.cat([s.outputs[t] for s in shards], dim=1)
        torch.testing.assert_close(out, full.outputs[t], rtol=1e-6, atol=1e-6)


def test_every_evicting_run_here_evicts() -> None:
    """The cases above are not vacuous: at this budget raas drops tokens it once held."""
    seq = make_sequence(0, batch=2, kv_heads=KV_HEADS, group=GROUP, prompt_lengths=[20, 7],
                        steps=60)
    trace = run_policy(RaaSConfig(budget=4 * P, page_size=P, attention_kernel="sdpa"), seq)
    ever = torch.stack(trace.held).any(0)
    assert (ever & ~trace.held[-1]).any()
