"""rkv's gated Triton page scores (policies/rkv_scores_triton.py) against the torch
reference (the op's CPU body): equal scores on due sequences, -inf on the others, over
GQA groups, page sizes, softcaps, sinks, partial and empty pages. Skipped off CUDA
(the kernel also runs under TRITON_INTERPRET=1 on a CPU with Triton installed)."""

from __future__ import annotations

import pytest
import torch

from raas_flex.policies.rkv_scores import rkv_page_scores

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU check: needs CUDA")

CASES = [  # seed, B, H, W, G, D, S, P, softcap, sinks, pool kernel, key dtype
    (0, 2, 2, 8, 4, 128, 130, 16, None, False, 7, torch.bfloat16),
    (1, 2, 2, 8, 4, 64, 40, 16, 30.0, True, 7, torch.float32),
    (2, 1, 3, 3, 1, 16, 9, 32, None, True, 3, torch.float32),
    (3, 3, 1, 8, 2, 256, 20, 64, 5.0, False, 1, torch.bfloat16),
    (4, 1, 8, 16, 8, 128, 17, 128, None, False, 7, torch.bfloat16),
]


@pytest.mark.parametrize("seed,B,H,W,G,D,S,P,cap,sinks,kernel,dtype", CASES)
def test_kernel_equals_torch_reference(seed, B, H, W, G, D, S, P, cap, sinks, kernel, dtype):
    gen = torch.Generator().manual_seed(seed)
    # the ring holds the model's queries upcast: exact in the pool's dtype
    ring = torch.randn(B, H, W, G, D, generator=gen).to(dtype).float()
    recorded = torch.rand(B, W, generator=gen) < 0.8
    k = (torch.randn(B, H, S * P, D, generator=gen) * 2).to(dtype)
    fill = torch.randint(0, P + 1, (B, H, S), generator=gen).to(torch.int32)
    fill[:, :, -1] = 0  # an empty slot in every row
    due = torch.arange(B) % 2 == 0  # sequence 0 due, 1 not, ...
    sink_logits = torch.randn(H, G, generator=gen) * 3 if sinks else None
    args = (D ** -0.5, cap, 0.1, kernel)
    want = rkv_page_scores(ring, recorded, k, fill, due, sink_logits, *args)
    cuda = [t.cuda() if t is not None else None
            for t in (ring, recorded, k, fill, due, sink_logits)]
    got = rkv_page_scores(*cuda, *args).cpu()
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    assert bool(torch.isneginf(got[~due]).all())
    finite = torch.isfinite(want)
    assert finite.any()
    assert torch.allclose(got[finite], want[finite], rtol=1e-4, atol=1e-6)
