"""The HF integration on a GPU: greedy equivalence per supported family and the compiled
decode (one graph, same tokens as eager). Skipped off CUDA; correctness only, no timing."""

from __future__ import annotations

import pytest
import torch

from raas_flex import apply_raas, remove_raas
from raas_flex.hf.families import FAMILIES, WINDOWED
from raas_flex.hf.state import raas_state
from raas_flex.hf.tiny import tiny_model
from tests._hf_common import greedy, prompts

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


def test_compiled_decode_equals_eager_on_cuda(batch):
    ids, mask = batch
    model = tiny_model("llama").cuda()
    apply_raas(model, budget=64)  # evicts: the comparison covers eviction
    try:
        eager = greedy(model, ids, mask, 100)
    finally:
        remove_raas(model)
    apply_raas(model, budget=64, compile=True)
    try:
        first, again = greedy(model, ids, mask, 100), greedy(model, ids, mask, 100)
        graphs = raas_state(model).compiled.graphs
    finally:
        remove_raas(model)
    assert torch.equal(first, eager) and torch.equal(again, eager)
    assert graphs == 1


@pytest.mark.parametrize("family", WINDOWED)
def test_hybrid_compiled_decode_equals_eager_on_cuda(family, batch):
    """The family's own layers (sliding rings, softcap, sinks through flex's lse, which
    only CUDA's compiled flex returns) through Inductor: one graph, the eager tokens."""
    ids, mask = batch
    model = tiny_model(family, full_attention=False).cuda()
    apply_raas(model, budget=64)
    try:
        eager = greedy(model, ids, mask, 100)
    finally:
        remove_raas(model)
    apply_raas(model, budget=64, compile=True)
    try:
        got = greedy(model, ids, mask, 100)
        graphs = raas_state(model).compiled.graphs
    finally:
        remove_raas(model)
    assert torch.equal(got, eager) and graphs == 1
