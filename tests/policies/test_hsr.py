"""hsr / raas_hsr: the stored dropped-mass bound is >= the true dropped softmax mass."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raas_flex import RaaSConfig
from raas_flex.cache import allocate_layer_cache, write_prompt
from raas_flex.policies.hsr import ATTEND, BOUND, certify, init_hsr_state
from tests.policy_harness import SDPA, examples, make_sequence, run_policy

P = 16


def true_dropped_mass(q: torch.Tensor, k: torch.Tensor, held: torch.Tensor,
                      attended: torch.Tensor, scale: float) -> torch.Tensor:
    """float64 softmax mass over `held` that misses `attended`. q [B, H, G, D], k [B, H, N, D],
    masks [B, H, N]. Returns [B, H] (max over the group)."""
    logits = (q.double() @ k.double().transpose(-1, -2)) * scale
    probs = torch.softmax(logits.masked_fill(~held[:, :, None, :], float("-inf")), dim=-1)
    mass = (probs * (held & ~attended)[:, :, None, :]).sum(-1).amax(-1)
    return mass.clamp(max=1.0)  # a float64 sum of probabilities can round past 1


def pool_masks(cache) -> tuple[torch.Tensor, torch.Tensor]:
    """(held, attended) over pool positions [B, H, S*P] after `certify`."""
    offset = torch.arange(cache.page_size)
    held = offset < cache.fill[..., None]  # [B, H, S, P]
    attended = held & cache.policy_state[ATTEND][..., None]
    B, H, S, _ = held.shape
    return held.reshape(B, H, -1), attended.reshape(B, H, -1)


@st.composite
def hsr_cases(draw):
    B, H, G = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    D = draw(st.sampled_from([4, 8, 16]))
    T = draw(st.integers(1, 6 * P))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**20)))
    key_scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    k = torch.randn(B, H, T, D, generator=g) * key_scale
    q = torch.randn(B, H, G, D, generator=g) * draw(st.sampled_from([0.1, 1.0, 30.0]))
    mode = draw(st.sampled_from(["gaussian", "huge", "equal", "equal_plus_huge", "aligned",
                                 "page_constant"]))
    if mode == "page_constant":  # one key per page: the bound is then exact for that page
        pages = torch.randn(B, H, -(-T // P), D, generator=g) * key_scale
        k = pages.repeat_interleave(P, dim=2)[:, :, :T].clone()
    if mode in ("equal", "equal_plus_huge"):
        k = k[:, :, :1].expand(B, H, T, D).clone()
    if mode in ("huge", "equal_plus_huge"):  # a few keys with enormous logits
        for _ in range(draw(st.integers(1, 3))):
            t = draw(st.integers(0, T - 1))
            k[:, :, t] = q[:, :, 0] * draw(st.sampled_from([50.0, 1e3]))
    if mode == "aligned":  # keys along (or against) the query: tight, extreme bounds
        sign = torch.randint(0, 2, (B, H, T, 1), generator=g) * 2 - 1
        k = sign * q[:, :, :1] * torch.rand(B, H, T, 1, generator=g) * 5
    epsilon = draw(st.sampled_from([0.5, 1e-2, 1e-4, 1e-8]))
    free = draw(st.integers(0, 1))
    return q, k, epsilon, free, mode


@settings(max_examples=examples(100), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=hsr_cases())
def test_certified_bound_covers_true_dropped_mass(case) -> None:
    q, k, epsilon, free, mode = case
    B, H, T, D = k.shape
    cache = allocate_layer_cache(B, H, D, -(-T // P) + free, P)
    init_hsr_state(cache)
    write_prompt(cache, k, k.clone(), torch.full((B,), T), pin=True)
    scale = 1.0 / math.sqrt(D)
    certify(q, cache, scale, epsilon)
    bound = cache.policy_state[BOUND]
    held, attended = pool_masks(cache)
    true = true_dropped_mass(q, cache.k, held, attended, scale)
    assert torch.isfinite(bound).all()
    assert (bound >= 0).all() and (bound <= 1).all()
    assert (bound.double() >= true).all(), (bound, true)
    # The current page is always attended.
    current = cache.policy_state[ATTEND].gather(-1, cache.current[..., None])
    assert current.all()
    if mode == "page_constant":
        # Exactness: each dropped page's bound is its tokens' logit, and when only the top
        # and current pages are attended the retained partition is computed exactly too.
        top = certify(q, cache, scale, epsilon).argmax(-1)
        only_two = cache.policy_state[ATTEND].sum(-1) == 1 + (top != cache.current).long()
        tight = bound.double() <= true * 1.02 + 1e-6
        assert tight[only_two].all(), (bound, true)


def test_nothing_dropped_gives_zero_bound() -> None:
    q = torch.randn(1, 2, 2, 8)
    k = torch.randn(1, 2, 40, 8)
    cache = allocate_layer_cache(1, 2, 8, 3, P)
    init_hsr_state(cache)
    write_prompt(cache, k, k, torch.tensor([40]), pin=True)
    certify(q, cache, 0.35, epsilon=1e-30)
    assert cache.policy_state[ATTEND][cache.fill > 0].all()
    assert torch.equal(cache.policy_state[BOUND], torch.zeros(1, 2))


def test_bound_shrinks_with_epsilon_on_sharp_attention() -> None:
    """A sanity check that the certificate is informative, not only safe."""
    g = torch.Generator().manual_seed(0)
    k = torch.randn(1, 1, 96, 8, generator=g)
    q = torch.randn(1, 1, 1, 8, generator=g) * 0.1
    k[0, 0, 90] = q[0, 0, 0] * 400  # one page carries almost all the mass
    cache = allocate_layer_cache(1, 1, 8, 6, P)
    init_hsr_state(cache)
    write_prompt(cache, k, k, torch.tensor([96]), pin=True)
    certify(q, cache, 1.0, epsilon=0.5)
    assert float(cache.policy_state[BOUND]) < 1e-3
    assert int(cache.policy_state[ATTEND].sum()) < 6


@pytest.mark.parametrize("policy", ["hsr", "raas_hsr"])
@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), epsilon=st.sampled_from([0.3, 1e-2]),
       key_scale=st.sampled_from([1.0, 4.0]))
def test_decode_steps_report_a_valid_bound(policy: str, seed: int, epsilon: float,
                                           key_scale: float) -> None:
    seq = make_sequence(seed, batch=2, prompt_lengths=[30, 17], steps=12, key_scale=key_scale)
    k = seq.history("k")
    B, H, _, D = k.shape
    bounds: list[torch.Tensor] = []
    config = RaaSConfig.from_fields(budget=80, page_size=P, attention_kernel=SDPA,
                                    policy=policy, hsr_epsilon=epsilon)
    def keep_bound(t, cache, _policy):
        bounds.append(cache.policy_state[BOUND].clone())

    trace = run_policy(config, seq, on_step=keep_bound)
    for t, bound in enumerate(bounds):
        held, attended = trace.held[t], trace.attended[t]
        q = seq.q_decode[:, :, t].view(B, H, -1, D)
        true = true_dropped_mass(q, k, held, attended, 1.0 / math.sqrt(D))
        assert (bound.double() >= true).all()
        nothing_dropped = ~(held & ~attended).any(-1)  # [B, H]
        assert (bound[nothing_dropped] == 0).all()
