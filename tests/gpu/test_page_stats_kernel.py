"""The Triton page statistics (policies/gated_mass_triton.py) against their torch bodies:
lazy_eviction's page_logit_stats (log mass and max logit per page, softcap or not) and
recycled's gated page_log_mass and its normalisation. Skipped off CUDA."""

from __future__ import annotations

import pytest
import torch

from raas_flex.policies.gated_mass import (
    gated_page_mass_from_log, page_log_mass, page_logit_stats, page_mass_from_log,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU check: needs CUDA")


@pytest.mark.parametrize("seed,B,H,G,D,S,P,cap,dtype", [
    (0, 1, 8, 4, 128, 130, 16, None, torch.bfloat16),
    (1, 2, 2, 2, 64, 9, 32, 30.0, torch.float32),
    (2, 3, 1, 8, 256, 5, 128, 2.0, torch.bfloat16),
])
def test_page_stats_equal_torch(seed, B, H, G, D, S, P, cap, dtype):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, G, D, generator=gen).to(dtype)
    k = (torch.randn(B, H, S * P, D, generator=gen) * 2).to(dtype)
    fill = torch.randint(0, P + 1, (B, H, S), generator=gen).to(torch.int32)
    fill[:, :, -1] = 0
    scale = D ** -0.5
    want = page_logit_stats(q, k, fill, scale, cap)
    got = page_logit_stats(q.cuda(), k.cuda(), fill.cuda(), scale, cap)
    for w, g in zip(want, got):
        g = g.cpu()
        finite = torch.isfinite(w)
        assert torch.equal(finite, torch.isfinite(g)) and finite.any()
        assert torch.allclose(g[finite], w[finite], rtol=1e-5, atol=1e-4)
    full = torch.tensor(True)
    gated = page_log_mass(q.cuda(), k.cuda(), fill.cuda(), full.cuda(), scale).cpu()
    plain = page_log_mass(q, k, fill, full, scale)
    assert torch.allclose(gated[torch.isfinite(plain)], plain[torch.isfinite(plain)],
                          rtol=1e-5, atol=1e-4)
    idle = page_log_mass(q.cuda(), k.cuda(), fill.cuda(), (~full).cuda(), scale)
    assert bool(torch.isneginf(idle).all())
    mass = gated_page_mass_from_log(gated.cuda(), full.cuda()).cpu()
    want_mass = page_mass_from_log(plain)
    held = (fill > 0).any(-1)  # rows with a held page: the others are NaN in both
    assert torch.allclose(mass[held], want_mass[held], rtol=1e-5, atol=1e-7)
