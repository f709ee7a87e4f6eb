"""compile=True on hybrid models: sliding rings, softcap and sinks in one fullgraph decode
graph, no recompiles, the same tokens as eager RaaS decode (with evictions). One Inductor
graph (Gemma 2: sliding + full layers, softcap); gpt-oss's sinks need flex's lse, which
Inductor's CPU flex lacks, so on CPU its graph is checked through Dynamo alone."""

import pytest
import torch

from tests._hf_common import eager_then_compiled, fast_cpu, greedy, prompts  # noqa: F401
from raas_flex import apply_raas, remove_raas
from raas_flex.compile import step
from raas_flex.hf.compiled import CompiledDecode
from raas_flex.hf.tiny import tiny_model

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

NEW_TOKENS = 60  # 30 + 60 tokens: windows of 20/24 slide, 64-token budgets evict
LENGTHS = (30, 6, 3)


def _compiled_vs_eager(family: str) -> tuple[CompiledDecode, torch.Tensor, torch.Tensor]:
    model = tiny_model(family, full_attention=False)
    ids, mask = prompts(LENGTHS)
    eager, compiled = eager_then_compiled(model, ids, mask, NEW_TOKENS, budget=64,
                                          page_size=16)
    torch._dynamo.utils.counters.clear()
    try:
        got = greedy(model, ids, mask, NEW_TOKENS)
        again = greedy(model, ids, mask, NEW_TOKENS)  # a fresh cache reuses the graph
    finally:
        remove_raas(model)
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert torch.equal(again, eager)
    return compiled, got, eager


def test_gemma2_sliding_softcap_one_graph_same_tokens():
    compiled, got, eager = _compiled_vs_eager("gemma2")
    assert compiled.graphs == 1
    assert torch.equal(got, eager)


def test_gpt_oss_sinks_trace_as_one_graph(monkeypatch):
    """Dynamo's capture of the whole decode step (rings, paged RaaS, sinks through the lse)
    run by an eager backend: one graph, no breaks, no recompiles, the eager tokens."""
    def dynamo_only(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward

    monkeypatch.setattr(CompiledDecode, "_backend", dynamo_only)
    monkeypatch.setattr(step, "refuse_sinks_off_cuda", lambda *args: None)
    compiled, got, eager = _compiled_vs_eager("gpt_oss")
    assert compiled.graphs == 1
    assert torch.equal(got, eager)


def test_sinks_refuse_inductor_on_cpu():
    model = tiny_model("gpt_oss", full_attention=False)
    ids, mask = prompts(LENGTHS)
    apply_raas(model, budget=64, page_size=16, compile=True)
    try:
        with pytest.raises(ValueError, match="sinks compile on CUDA only.*compile=False"):
            greedy(model, ids, mask, 4)
    finally:
        remove_raas(model)
