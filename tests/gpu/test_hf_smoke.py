"""The HF integration on a GPU: greedy equivalence per supported family and the compiled
decode (one graph, same tokens as eager). Skipped off CUDA; correctness only, no timing."""

from __future__ import annotations

import pytest
import torch

from raas_flex import apply_raas, remove_raas
from raas_flex.hf.families import FAMILIES, WINDOWED
from raas_flex.hf.tiny import tiny_model
from tests._hf_common import eager_then_compiled, greedy, prompts

pytestmark = [
    pytest.mark.hf,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU check: needs CUDA"),
]


@pytest.fixture(scope="module")
def batch():
    ids, mask = prompts((11, 6, 3))
    return ids.cuda(), mask.cuda()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_decodes_the_unpatched_tokens_on_cuda(family, batch):
    ids, mask = batch
    model = tiny_model(family).cuda()
    want = greedy(model, ids, mask, 128)
    apply_raas(model, budget=160)  # room for everything: must equal the unpatched model
    try:
        got = greedy(model, ids, mask, 128)
    finally:
        remove_raas(model)
    assert torch.equal(got, want)


# llama: every layer full; the windowed families with their own layers (sliding rings,
# softcap, sinks through flex's lse, which only CUDA's compiled flex returns).
COMPILED = [("llama", True)] + [(family, False) for family in WINDOWED]


@pytest.mark.parametrize("family,full_attention", COMPILED)
def test_compiled_decode_equals_eager_on_cuda(family, full_attention, batch):
    ids, mask = batch
    model = tiny_model(family, full_attention=full_attention).cuda()
    # budget 64 evicts: the comparison covers eviction
    eager, compiled = eager_then_compiled(model, ids, mask, 100, budget=64)
    try:
        first, again = greedy(model, ids, mask, 100), greedy(model, ids, mask, 100)
    finally:
        remove_raas(model)
    assert torch.equal(first, eager) and torch.equal(again, eager)
    assert compiled.graphs == 1
