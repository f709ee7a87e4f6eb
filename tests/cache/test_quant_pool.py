"""A quantized pool through prefill and many decode steps with evictions, eager flex.

One drive per (kv_dtype, input dtype) is recorded once per module and shared:
- the decisions (fill, page ids, visibility, timestamps) and the exact page summaries equal
  those of the unquantized pool fed the same tokens, since the policy only reads summaries;
- the V-scale fold is exact: the output equals float64 attention over the dequantized pool;
- the output differs from the unquantized pool's by the format's error only (bound below).

Accuracy bound. With ε the format's RMS relative error per element, both dequantized
operands carry ~ε: V directly, K through the logits (q·Δk·scale has the RMS of ε·|logit|),
so the per-step relative output error ||ô - o|| / ||o|| is ~2ε; we allow 3ε. On these
Gaussian rows (D = 64): int8 ε = E[absmax]/(127·√12)/σ ≈ 2.4/440 ≈ 0.0055 -> 0.0165, plus
bf16's own output rounding (2^-8) where the reference is a bf16 pool -> bound 0.02;
float8_e4m3fn ε = 2^-4/√3 ≈ 0.036 (uniform relative rounding) -> bound 0.11.
Measured (64 steps, seeds 0-2, worst step): int8 0.0123 against the fp32 pool, 0.0115
against the bf16 pool; fp8 0.0424 / 0.0418. Fold against float64 over the dequantized pool:
≤ 1.5e-6 with fp32 queries, ≤ 9.2e-3 with bf16 ones (bf16 scores and output, as in a plain
bf16 flex call).
"""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from raas_flex.cache.quant import dequantize
from raas_flex.masks.dense import visible_token_mask
from raas_flex.policies.keep_all_ops import quest_bound
from raas_flex.policies.scores import summary_bound
from tests._hf_common import fast_cpu  # noqa: F401  (module fixture: eager flex, 1 thread)
from tests.layer_harness import Drive, Shapes
from tests.reference_attention import reference_attention

SHAPES = Shapes(batch=2, kv_heads=2, group=4, head_dim=64)
PROMPTS = [40, 33]  # 3 prompt pages of the budget's 6: decoding evicts after 2 pages
STEPS = 64  # 104 tokens = 7 pages: at least one eviction per sequence and head
BOUND = {"int8": 0.02, "float8_e4m3fn": 0.11}
FOLD_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}  # bf16: ~2 ulps of |out| < 2
DECISIONS = ("fill", "visible", "timestamp", "pinned", "page_id", "current", "length",
             "kmin", "kmax")


def _config(kv_dtype: str | None) -> rf.RaaSConfig:
    return rf.RaaSConfig(budget=96, page_size=16, kv_dtype=kv_dtype)


def _record(kv_dtype: str | None, dtype: torch.dtype, seed: int) -> list[dict]:
    config = _config(kv_dtype)
    drive = Drive(config, rf.make_policy(config), SHAPES, PROMPTS, STEPS, seed=seed,
                  dtype=dtype)
    steps = []
    for step in drive.run():
        c = step.cache
        row = {"out": step.out.double(), **{n: getattr(c, n).clone() for n in DECISIONS}}
        if c.quantized:
            keys = dequantize(c.k, c.k_scale)  # [B, H, S*P, D]: the test's reference only
            values = dequantize(c.v, torch.exp(c.v_logscale))
            seen = visible_token_mask(c.visible, c.page_size)[:, :, 0]
            row["pool_reference"] = reference_attention(step.q, keys, values, seen)
        steps.append(row)
    return steps


@pytest.fixture(scope="module")
def runs():
    cases = [(kv, dtype, 0) for dtype in (torch.float32, torch.bfloat16)
             for kv in (None, *BOUND)]
    return {case: _record(*case) for case in cases}


def _pairs(runs):
    for (kv, dtype, seed), steps in runs.items():  # each quantized run with its plain twin
        if kv is not None:
            yield kv, dtype, steps, runs[(None, dtype, seed)]


def test_decisions_and_summaries_equal_the_unquantized_pool(runs):
    evicted = False
    for _, _, steps, plain in _pairs(runs):
        for i, (q, p) in enumerate(zip(steps, plain)):
            for name in DECISIONS:
                assert torch.equal(q[name], p[name]), f"{name} differs at step {i + 1}"
            evicted |= bool(q["page_id"].amax() >= q["page_id"].shape[-1])  # page 7 of 6 slots
    assert evicted, "the drive should evict pages"


@pytest.mark.parametrize("kv_dtype", [None, "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_summaries_are_exact_in_the_model_dtype(kv_dtype, dtype):
    """kmin/kmax are the min/max of the input keys (for a quantized pool: not of the codes),
    stored exactly in the model's dtype; Quest's bound from them equals the bound from
    float32 copies (the widening is exact), on CPU and through the quest_bound op."""
    config = _config(kv_dtype)
    drive = Drive(config, rf.make_policy(config), SHAPES, PROMPTS, 3, dtype=dtype)
    for step in drive.run():
        c = step.cache
        assert c.kmin.dtype == c.kmax.dtype == dtype
        live = c.page_id >= 0
        for b in range(SHAPES.batch):
            for h in range(SHAPES.kv_heads):
                for s in live[b, h].nonzero()[:, 0].tolist():
                    n, p = int(c.fill[b, h, s]), int(c.page_id[b, h, s]) * c.page_size
                    page = step.keys[b, h, p:p + n]
                    assert torch.equal(c.kmin[b, h, s], page.amin(0))
                    assert torch.equal(c.kmax[b, h, s], page.amax(0))
        q = step.q.view(SHAPES.batch, SHAPES.kv_heads, SHAPES.group, -1)
        args = (c.fill, 0.125, None)
        assert torch.equal(quest_bound(q, c.kmax, c.kmin, *args),
                           summary_bound(q, c.kmax.float(), c.kmin.float(), *args))


def test_fold_is_exact_attention_over_the_dequantized_pool(runs):
    for _, dtype, steps, _ in _pairs(runs):
        for i, row in enumerate(steps):
            err = (row["out"] - row["pool_reference"]).abs().max().item()
            assert err <= FOLD_TOL[dtype], f"step {i + 1}: {err}"


def test_output_error_against_the_unquantized_pool_is_within_the_format_bound(runs):
    for kv, dtype, steps, plain in _pairs(runs):
        worst = max(((q["out"] - p["out"]).norm() / p["out"].norm()).item()
                    for q, p in zip(steps, plain))
        assert worst <= BOUND[kv], f"{kv} vs {dtype} pool: {worst:.4f}"


def test_compiled_step_traces_to_one_graph_without_breaks():
    """dynamo only (no Inductor: compiled CPU flex rejects 8-bit K/V; GPU Triton takes it)."""
    from raas_flex.functional import decode_step_tensors

    for kv in BOUND:
        config = _config(kv)
        policy = rf.make_policy(config)
        cache = rf.new_layer_cache(config, policy, 1, 2, 16, prompt_tokens=20)
        gen = torch.Generator().manual_seed(0)
        qkv = [torch.randn(1, n, 20, 16, generator=gen) for n in (4, 2, 2)]
        rf.prefill(*qkv, cache, policy)
        new = [torch.randn(1, n, 1, 16, generator=gen) for n in (4, 2, 2)]
        explain = torch._dynamo.explain(decode_step_tensors)(
            *new, cache, policy, torch.tensor(1), 0.25)
        torch._dynamo.reset()
        assert (explain.graph_count, explain.graph_break_count) == (1, 0), \
            explain.break_reasons


def test_compiled_step_over_a_quantized_pool_is_refused_off_cuda():
    from raas_flex.compile import compiled_decode_step

    config = rf.RaaSConfig(budget=64, page_size=16, kv_dtype="int8")
    policy = rf.make_policy(config)
    cache = rf.new_layer_cache(config, policy, 1, 2, 8, prompt_tokens=16)
    q, kv = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 1, 8)
    with pytest.raises(ValueError, match="CUDA only.*eager decode_step"):
        compiled_decode_step(q, kv, kv, cache, policy, torch.tensor(0), 0.35)
