"""mass_trace's measure on hand-made inputs: which tokens a pool holds, the distance bins,
and the share of dense attention that falls on held tokens."""

from __future__ import annotations

import torch

from bench.accuracy.mass_trace import BINS, distance_bins, held_tokens, layer_trace
from bench.accuracy.page_agreement import P


def test_held_tokens_follow_their_pages():
    page_id = torch.tensor([[[0, 2, -1]]])  # one sequence, one kv head: pages 0 and 2 held
    held = held_tokens(page_id, 3 * P)[0, 0]
    assert held[:P].all() and not held[P:2 * P].any() and held[2 * P:].all()


def test_distance_bins_split_prompt_and_tokens_back():
    bins = distance_bins(100, prompt=16)
    assert bins[:16].tolist() == [0] * 16  # the prompt
    assert BINS[int(bins[100])] == "<16" and BINS[int(bins[85])] == "<16"  # 0 and 15 back
    assert BINS[int(bins[84])] == "<64" and BINS[int(bins[36])] == "<128"  # 16 and 64 back


def test_retained_share_is_dense_mass_on_held_pages():
    D, prompt, N = 8, P, 4 * P
    k = torch.zeros(1, 1, N, D, dtype=torch.float64)
    k[0, 0, P:2 * P, 0] = 60.0  # page 1's keys stand out along dim 0
    q = torch.zeros(1, 2, N, D, dtype=torch.float64)  # two query heads share the kv head
    q[0, :, :, 0] = 1.0  # every query looks along dim 0: all its mass on page 1
    steps = range(3 * P, N)  # page 1 lies 17-47 tokens back from these queries
    evicted = {t: torch.tensor([[[0, 2, 3]]]) for t in range(prompt, N)}
    kept = {t: torch.tensor([[[0, 1, 3]]]) for t in range(prompt, N)}
    out = layer_trace(q, k, prompt, {"evicted": evicted, "kept": kept})
    decode = [t - prompt for t in steps]
    assert float(out["kept"]["retained"][0, 0, decode].min()) > 0.999
    assert float(out["evicted"]["retained"][0, 0, decode].max()) < 1e-3
    lost = out["evicted"]["lost"][0, 0, decode]  # [steps, bins]
    assert torch.allclose(lost.sum(-1), 1 - out["evicted"]["retained"][0, 0, decode])
    assert float(lost[:, BINS.index("<64")].min()) > 0.99
