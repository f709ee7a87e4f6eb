"""The page statistics of policies/gated_mass.py: recycled's gated page mass against
scores.page_mass (the same masses on a full step, nothing computed otherwise), and
lazy_eviction's page max weight and h2o's page mass against the materialised weights."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raas_flex.cache import allocate_layer_cache, write_prompt
from raas_flex.policies.gated_mass import (
    gated_page_mass, gated_page_mass_from_log, held_page_mass, page_log_mass, page_max_weight,
)
from raas_flex.policies.periodic import held_token_mask
from raas_flex.policies.scores import page_mass, token_weights

P = 16


def _cache(seed: int, B: int, H: int, D: int, T: int, S: int):
    gen = torch.Generator().manual_seed(seed)
    cache = allocate_layer_cache(B, H, D, S, P, torch.float32, "cpu")
    k = torch.randn(B, H, T, D, generator=gen) * 3
    v = torch.randn(B, H, T, D, generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    write_prompt(cache, k, v, lengths, pin=True)
    return cache, gen


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**20), B=st.integers(1, 2), H=st.integers(1, 2),
       G=st.integers(1, 4), T=st.integers(1, 5 * P))
def test_full_step_mass_equals_page_mass(seed, B, H, G, T) -> None:
    D = 8
    cache, gen = _cache(seed, B, H, D, T, S=6)
    q = torch.randn(B, H, G, D, generator=gen)
    expected = page_mass(q, cache, D ** -0.5, cache.fill)
    got = gated_page_mass(q, cache, D ** -0.5, torch.tensor(True))
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    skipped = page_log_mass(q, cache.k, cache.fill, torch.tensor(False), D ** -0.5)
    assert skipped.shape == (B, H, G, 6)
    assert bool(torch.isneginf(skipped).all())


def test_gated_normalisation_is_a_well_formed_op() -> None:
    log_mass = torch.randn(2, 3, 4, 7)
    for full in (True, False):
        torch.library.opcheck(gated_page_mass_from_log, (log_mass, torch.tensor(full)))
    got = gated_page_mass_from_log(log_mass, torch.tensor(True))
    assert torch.equal(got, torch.exp(log_mass - log_mass.logsumexp(-1, keepdim=True)).amax(2))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**20), G=st.integers(1, 4), T=st.integers(1, 5 * P),
       cap=st.sampled_from([None, 2.0]), sinks=st.booleans())
def test_one_pass_page_statistics_equal_the_materialised_weights(seed, G, T, cap,
                                                                 sinks) -> None:
    """lazy_eviction's page max weight and the h2o family's page mass, both from one pass
    (page_logit_stats), against the materialised softmax weights under the layer's rules
    (softcap, sink in the normaliser)."""
    B, H, D = 2, 2, 8
    cache, gen = _cache(seed, B, H, D, T, S=6)
    cache.softcap = cap
    cache.sinks = torch.randn(H, G, generator=gen) * 3 if sinks else None
    q = torch.randn(B, H, G, D, generator=gen) * 2
    held = held_token_mask(cache)[:, :, None]
    want = token_weights(q, cache, D ** -0.5, held).view(B, H, G, 6, P).amax(dim=(2, 4))
    got = page_max_weight(q, cache, D ** -0.5)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert bool((got[cache.fill == 0] == 0).all())
    mass = held_page_mass(q, cache, D ** -0.5)
    assert torch.allclose(mass, page_mass(q, cache, D ** -0.5, cache.fill), rtol=1e-5,
                          atol=1e-7)
