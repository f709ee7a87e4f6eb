"""Softcap and attention sinks inside flex, and the sliding-window ring, against a float64
softmax written the way transformers' eager attention writes it (Gemma 2's tanh cap,
gpt-oss's sink column joined to the softmax and dropped)."""

import pytest
import torch
import torch.nn.attention.flex_attention as flex_module

import raas_flex as rf
from raas_flex.windowed import new_window_cache, window_decode_step, window_prefill

B, HQ, H, D, T = 2, 4, 2, 16, 40
CAP, W, SCALE = 2.0, 20, 0.3


@pytest.fixture(autouse=True)
def eager_flex():
    debug = flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG
    flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
    yield
    flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = debug


def eager_reference(q, k, v, allowed, softcap, sinks):
    """q [B, Hq, Tq, D], k/v [B, H, N, D], allowed [B, Tq, N] -> [B, Hq, Tq, D] float64."""
    k, v = (x.double().repeat_interleave(HQ // H, dim=1) for x in (k, v))
    logits = q.double() @ k.transpose(-1, -2) * SCALE
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    if sinks is not None:
        column = sinks.double()[None, :, None, None].expand(*logits.shape[:3], 1)
        logits = torch.cat([logits, column], dim=-1)
    probs = torch.softmax(logits, dim=-1)[..., :k.shape[2]]
    return probs @ v


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, T, D, generator=gen) * 2
    k = torch.randn(B, H, T, D, generator=gen) * 2
    v = torch.randn(B, H, T, D, generator=gen)
    sinks = torch.randn(HQ, generator=gen) * 3
    lengths = torch.tensor([T, 13])
    mask = (torch.arange(T) >= T - lengths[:, None]).long()
    return q, k, v, sinks, lengths, mask


def _window_allowed(lengths):
    """[B, T, T]: causal, real tokens only, q - kv < W (pad rows see only themselves)."""
    qi, ki = torch.arange(T)[:, None], torch.arange(T)[None, :]
    first = (T - lengths)[:, None, None]
    real = (ki >= first) & (ki <= qi) & (ki > qi - W)
    return real | (ki == qi)


@pytest.mark.parametrize("softcap,with_sinks", [(CAP, False), (None, True), (CAP, True)])
def test_window_prefill_and_decode_match_eager(softcap, with_sinks):
    """A 40-token prompt (one left-padded to 13), then 30 decode steps through the ring."""
    q, k, v, sinks, lengths, mask = _inputs()
    sinks = sinks if with_sinks else None
    config = rf.RaaSConfig(budget=64, page_size=16)
    ring = new_window_cache(config, B, H, D, W, softcap=softcap, sinks=sinks)
    out = window_prefill(q, k, v, ring, mask, SCALE)
    real = mask.bool()[:, :, None].expand(B, T, 1)
    want = eager_reference(q, k, v, _window_allowed(lengths), softcap, sinks)
    assert torch.allclose(out.double() * real[:, None], want * real[:, None], atol=1e-5)

    keys, values = k.clone(), v.clone()  # the whole history, for the reference
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        qn, kn, vn = (torch.randn(B, n, 1, D, generator=gen) for n in (HQ, H, H))
        keys, values = torch.cat([keys, kn], 2), torch.cat([values, vn], 2)
        out = window_decode_step(qn, kn, vn, ring, SCALE)
        N = keys.shape[2]
        first = (T - lengths)[:, None, None]
        pos = torch.arange(N)[None, None, :]
        allowed = (pos >= first) & (pos > N - 1 - W)  # the last W real tokens
        want = eager_reference(qn, keys, values, allowed, softcap, sinks)
        assert torch.allclose(out.double(), want, atol=1e-5)
    assert ring.k.shape[2] == 32  # W = 20 rounded up to whole 16-token pages: O(W)


def test_paged_decode_folds_softcap_and_sinks():
    """A full-attention layer's paged pool (dense policy: nothing evicted) with both."""
    q, k, v, sinks, lengths, mask = _inputs(2)
    config = rf.RaaSConfig(budget=64, page_size=16, policy="dense")
    policy = rf.make_policy(config)
    cache = rf.new_layer_cache(config, policy, B, H, D, T, 8, softcap=CAP, sinks=sinks)
    out = rf.prefill(q, k, v, cache, policy, mask, SCALE)
    qi, ki = torch.arange(T)[:, None], torch.arange(T)[None, :]
    causal = ((ki >= (T - lengths)[:, None, None]) & (ki <= qi)) | (ki == qi)
    real = mask.bool()[:, None, :, None]
    want = eager_reference(q, k, v, causal, CAP, sinks)
    assert torch.allclose(out.double() * real, want * real, atol=1e-5)
    qn, kn, vn = (torch.randn(B, n, 1, D) for n in (HQ, H, H))
    out = rf.decode_step(qn, kn, vn, cache, policy, 1, SCALE)
    keys, values = torch.cat([k, kn], 2), torch.cat([v, vn], 2)
    allowed = (torch.arange(T + 1)[None, None, :] >= (T - lengths)[:, None, None])
    assert torch.allclose(out.double(), eager_reference(qn, keys, values, allowed, CAP, sinks),
                          atol=1e-5)


def test_sdpa_kernel_refuses_softcap_and_sinks():
    config = rf.RaaSConfig(budget=64, page_size=16, attention_kernel="sdpa")
    with pytest.raises(ValueError, match='attention_kernel="flex"'):
        new_window_cache(config, B, H, D, W, softcap=CAP)
    with pytest.raises(ValueError, match="attention sinks"):
        rf.new_layer_cache(config, rf.make_policy(config), B, H, D, T, sinks=torch.zeros(HQ))
