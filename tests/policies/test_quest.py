"""quest: keeps every token; attends the current page plus the top pages by the bound."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from tests.policy_harness import (
    SDPA, causal_positions, current_page, examples, make_sequence, page_sets, run_policy,
)

P = 16


def reference_bounds(seq, t: int) -> torch.Tensor:
    """float64 Quest bound of every logical page at decode step t, max over the group:
    [B, H, pages]; -inf for pages not yet written."""
    k = seq.history("k").double()
    B, H, N, D = k.shape
    q = seq.q_decode[:, :, t].double().view(B, H, -1, D)
    seen = causal_positions(seq, t)[..., None]  # [B, H, N, 1]
    pages = -(-N // P)
    pad = pages * P - N
    kmax = torch.nn.functional.pad(k.masked_fill(~seen, -math.inf), (0, 0, 0, pad),
                                   value=-math.inf).view(B, H, pages, P, D).amax(3)
    kmin = torch.nn.functional.pad(k.masked_fill(~seen, math.inf), (0, 0, 0, pad),
                                   value=math.inf).view(B, H, pages, P, D).amin(3)
    live = torch.isfinite(kmax).all(-1)  # [B, H, pages]
    kmax, kmin = kmax.nan_to_num(neginf=0.0), kmin.nan_to_num(posinf=0.0)
    bound = torch.maximum(q[:, :, :, None, :] * kmax[:, :, None], q[:, :, :, None, :]
                          * kmin[:, :, None]).sum(-1).amax(2) / math.sqrt(D)
    return bound.masked_fill(~live, -math.inf)


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), length=st.integers(1, 70), budget_pages=st.integers(1, 3),
       batch=st.integers(1, 2))
def test_quest_never_evicts_and_attends_top_pages(seed, length, budget_pages, batch) -> None:
    seq = make_sequence(seed, batch=batch, prompt_lengths=length, steps=16, key_scale=2.0)
    config = RaaSConfig(budget=budget_pages * P, page_size=P, attention_kernel=SDPA,
                        policy="quest")
    trace = run_policy(config, seq)
    for t, (attended, held) in enumerate(zip(trace.attended, trace.held)):
        assert torch.equal(held, causal_positions(seq, t)), "quest evicted a token"
        bounds = reference_bounds(seq, t)
        current = current_page(seq, t, P)
        for b, per_head in enumerate(page_sets(attended, P)):
            for h, chosen in enumerate(per_head):
                present = int(current[b]) + 1
                assert int(current[b]) in chosen
                assert len(chosen) == min(budget_pages, present)
                others = set(range(present)) - chosen
                rest = chosen - {int(current[b])}
                if others and rest:  # every chosen page outranks every skipped page
                    worst_chosen = min(float(bounds[b, h, p]) for p in rest)
                    best_skipped = max(float(bounds[b, h, p]) for p in others)
                    assert worst_chosen >= best_skipped - 1e-4
                # a chosen page is attended whole: no partial selection inside a page
                row = attended[b, h]
                assert int(row.sum()) == sum(int(causal_positions(seq, t)[b, h,
                                              p * P:(p + 1) * P].sum()) for p in chosen)
