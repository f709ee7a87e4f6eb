"""far_share on hand-made attention: a head that looks far back, one that looks at the
newest token, and the prompt left out."""

from __future__ import annotations

import torch

from bench.accuracy.far_share import far_share


def test_far_share_separates_a_far_reading_head_from_a_local_one():
    prompt, N, D, span = 4, 40, 8, 10
    k = torch.zeros(1, 2, N, D)
    k[0, 0, 6, 0] = 50.0  # head 0: token 6 stands out along dim 0 (far back from t >= 16)
    k[0, 1, :, 1] = torch.arange(N, dtype=torch.float32) * 50.0  # head 1: the newest key wins
    q = torch.zeros(1, 2, N, D)
    q[0, 0, :, 0] = 1.0
    q[0, 1, :, 1] = 1.0
    shares = far_share(q, k, prompt, span, range(20, N))
    assert shares[0] > 0.99 and shares[1] < 1e-6


def test_far_share_leaves_the_prompt_out():
    prompt, N, D = 8, 30, 4
    k = torch.zeros(1, 1, N, D)
    k[0, 0, 2, 0] = 50.0  # the key that takes all attention lies in the prompt
    q = torch.zeros(1, 1, N, D)
    q[0, 0, :, 0] = 1.0
    assert far_share(q, k, prompt, 5, range(20, N))[0] < 1e-6
