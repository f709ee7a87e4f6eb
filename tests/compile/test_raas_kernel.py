"""The CUDA RaaS step (one Triton bookkeeping kernel + listed mask) makes the generic
step's decisions and returns its output, step after step, page boundaries and evictions
included.

Runs the Triton kernel through Triton's CPU interpreter (TRITON_INTERPRET=1), so it needs
the `triton` package and is skipped where it is absent (CI's CPU torch has none). The GPU
check of the compiled step is bench/latency/decode_probe.py.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernel's definition
triton = pytest.importorskip("triton")

import raas_flex as rf  # noqa: E402
from raas_flex.compile import clone_cache  # noqa: E402
from raas_flex.functional import decode_step_tensors  # noqa: E402

FIELDS = ("k", "v", "kmin", "kmax", "fill", "visible", "timestamp", "pinned", "page_id",
          "current", "length", "overflow")


def _draw(gen, scale, ties, *shape):
    x = torch.randn(*shape, generator=gen) * scale
    return x.round() if ties else x  # integer-valued keys: equal bounds happen often


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                    reason="needs Triton's interpreter")
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 2), heads=st.integers(1, 2),
       group=st.sampled_from((1, 2, 4)), budget_pages=st.integers(3, 9),
       page=st.sampled_from((16, 32)), prompt=st.integers(1, 40), ties=st.booleans(),
       top_ratio=st.sampled_from((0.5, 0.3, 1.0)))
def test_kernel_step_equals_generic_step(seed, batch, heads, group, budget_pages, page,
                                         prompt, ties, top_ratio) -> None:
    from raas_flex.compile.raas_kernel import raas_decode_step

    gen = torch.Generator().manual_seed(seed)
    D = 32
    config = rf.RaaSConfig(budget=budget_pages * page, page_size=page, top_ratio=top_ratio)
    prompt = min(prompt, (budget_pages - 2) * page)
    policy = rf.make_policy(config)
    fast = rf.new_layer_cache(config, policy, batch, heads, D, prompt_tokens=prompt)
    rf.prefill(_draw(gen, 1.0, ties, batch, heads * group, prompt, D),
               _draw(gen, 1.0, ties, batch, heads, prompt, D),
               _draw(gen, 1.0, ties, batch, heads, prompt, D), fast, policy)
    generic = clone_cache(fast)
    # Enough steps to fill the pool and evict over several page boundaries.
    for t in range(1, budget_pages * page + 2 * page + 2):
        q = _draw(gen, 1.0, ties, batch, heads * group, 1, D)
        k = _draw(gen, 1.0, ties, batch, heads, 1, D)
        v = _draw(gen, 1.0, ties, batch, heads, 1, D)
        step = torch.tensor(t)
        out = raas_decode_step(q, k, v, fast, policy, step, D ** -0.5)
        expected = decode_step_tensors(q, k, v, generic, policy, step, D ** -0.5)
        differ = [f for f in FIELDS if not torch.equal(getattr(fast, f), getattr(generic, f))]
        assert differ == [], (t, differ)
        assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5), t
