"""apply_raas(model, kv_dtype=...) end to end on a tiny Llama (eager, CPU).

Greedy tokens of a random-weight tiny model are a fragile measure: its logits are nearly
flat (top-2 margins down to 0.004), so a 1% perturbation can flip a token and every token
after it. The test therefore teacher-forces the unquantized run's tokens through both
caches and compares per-step logits and argmaxes on the same prefixes.

Measured (3 prompts, 32 steps, budget 80 so pages are evicted): int8 logits differ by
1.6% (relative Frobenius), argmax agreement 0.97; float8_e4m3fn 8.9%, 0.89. Free-running
greedy generate() (not asserted, for the reason above): int8 rows first diverge at tokens
30, never and 17 of 32; fp8 at 23, 4 and 2. The
layer-level error is ~1% (int8) / ~4% (fp8) per attention call (tests/cache/test_quant_pool.py), and
two layers plus the MLPs compound it to roughly twice that in the logits; the bounds
below allow ~2-3x the measured figures.
"""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from raas_flex.hf.cache import RaaSCache
from raas_flex.hf.tiny import tiny_model
from raas_flex.hf.compat import returned_cache
from tests._hf_common import fast_cpu, greedy, prompts, with_cache  # noqa: F401

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

LENGTHS = (40, 29, 35)
NEW = 32
BUDGET = 80  # 5 pages: the 40-token prompt takes 3, decoding evicts
# kv_dtype -> (max relative logit error, min teacher-forced argmax agreement)
BOUNDS = {"int8": (0.05, 0.9), "float8_e4m3fn": (0.2, 0.75)}


def _patched(kv_dtype):
    return rf.apply_raas(tiny_model("llama"), budget=BUDGET, page_size=16, kv_dtype=kv_dtype)


def _forced_logits(model, ids, mask, tokens) -> torch.Tensor:
    """[B, NEW, vocab]: the logits predicting each of `tokens`, fed one by one."""
    cache = RaaSCache.for_model(model)
    with torch.no_grad():
        logits = [model(ids, attention_mask=mask, **with_cache(cache),
                        use_cache=True).logits[:, -1]]
        for token in tokens.T[:-1]:
            logits.append(model(token[:, None], **with_cache(cache),
                                use_cache=True).logits[:, -1])
    return torch.stack(logits, 1)


@pytest.fixture(scope="module")
def reference():
    ids, mask = prompts(LENGTHS)
    model = _patched(None)
    tokens = greedy(model, ids, mask, NEW)[:, ids.shape[1]:]
    return ids, mask, tokens, _forced_logits(model, ids, mask, tokens)


@pytest.mark.parametrize("kv_dtype", BOUNDS)
def test_generate_runs_end_to_end_with_a_quantized_pool(kv_dtype, reference):
    ids, mask, tokens, _ = reference
    out = greedy(_patched(kv_dtype), ids, mask, NEW, return_dict_in_generate=True)
    assert out.sequences.shape == (len(LENGTHS), ids.shape[1] + NEW)
    assert torch.equal(out.sequences[:, :ids.shape[1] + 1], torch.cat(
        [ids, tokens[:, :1]], 1)), "the first token comes from the full-precision prefill"
    cache = returned_cache(out)
    layer = cache.layers[0]
    assert layer.pool.k.dtype == getattr(torch, kv_dtype)
    D, dtype = layer.pool.k.shape[-1], layer.dtype
    per_layer = len(LENGTHS) * layer.pool.k.shape[1] * layer.pool.capacity
    promised = len(cache.layers) * per_layer * cache.config.kv_bytes_per_token(D, dtype)
    assert cache.nbytes()[0] == promised


@pytest.mark.parametrize("kv_dtype", BOUNDS)
def test_teacher_forced_logits_match_the_unquantized_run(kv_dtype, reference):
    ids, mask, tokens, plain = reference
    logits = _forced_logits(_patched(kv_dtype), ids, mask, tokens)
    max_rel, min_agree = BOUNDS[kv_dtype]
    rel = ((logits - plain).norm() / plain.norm()).item()
    agree = (logits.argmax(-1) == tokens).float().mean().item()
    assert rel <= max_rel, f"relative logit error {rel:.4f}"
    assert agree >= min_agree, f"argmax agreement {agree:.3f}"



def test_compiled_decode_on_cpu_is_refused_naming_the_eager_path():
    ids, mask = prompts(LENGTHS)
    model = rf.apply_raas(tiny_model("llama"), budget=BUDGET, kv_dtype="int8", compile=True)
    with pytest.raises(ValueError, match="compile=False"):
        greedy(model, ids, mask, 2)


def test_missing_torchao_is_refused_at_apply_time(monkeypatch):
    import sys

    from raas_flex.hf.patch import STATE_ATTR

    for name in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchao", None)
    model = tiny_model("llama")
    with pytest.raises(ImportError, match='pip install "torchao>=0.18,<0.19"'):
        rf.apply_raas(model, budget=BUDGET, kv_dtype="int8")
    assert not hasattr(model, STATE_ATTR)
