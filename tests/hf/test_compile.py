"""compile=True: one fullgraph decode graph, no recompiles across steps and page boundaries,
the same tokens as eager RaaS decode (with evictions). One compile for the whole module."""

import pytest
import torch

from tests._hf_common import eager_then_compiled, fast_cpu, greedy, prompts  # noqa: F401
from raas_flex import apply_raas, remove_raas
from raas_flex.hf.graphs import GraphedDecode
from raas_flex.hf.state import raas_state
from raas_flex.hf.tiny import tiny_model
from tests.fake_graph import FakeStepGraph

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

NEW_TOKENS = 60  # 12 + 60 tokens through a 64-token budget: 4 page openings, evictions


def test_compiled_decode_one_graph_same_tokens():
    model = tiny_model("llama")
    ids, mask = prompts((12, 7))
    eager, compiled = eager_then_compiled(model, ids, mask, NEW_TOKENS, budget=64,
                                          page_size=16)
    torch._dynamo.utils.counters.clear()
    got = greedy(model, ids, mask, NEW_TOKENS)
    assert compiled.graphs == 1  # 59 decode steps, page boundaries included: no recompile
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert torch.equal(got, eager)
    again = greedy(model, ids, mask, NEW_TOKENS)  # a fresh RaaSCache reuses the graph
    assert compiled.graphs == 1 and torch.equal(again, eager)

    # cuda_graph=True's plumbing on the same compiled step: inputs copied into static
    # buffers, one capture per generate() call, every later step a replay.
    compiled.graphed = GraphedDecode(compiled.compiled, FakeStepGraph)
    replayed = greedy(model, ids, mask, NEW_TOKENS)
    assert compiled.graphed.captures == 1 and compiled.graphs == 1
    assert torch.equal(replayed, eager)
    assert FakeStepGraph.replays >= NEW_TOKENS - 3  # warm step and prefill run directly
    remove_raas(model)
    assert "forward" not in vars(model)

    # apply_raas again with the same options (as the accuracy table does per task family):
    # the model's shared backend lets Dynamo reuse the graph built above, no compile
    apply_raas(model, compile=True, budget=64, page_size=16)
    torch._dynamo.utils.counters.clear()
    assert torch.equal(greedy(model, ids, mask, NEW_TOKENS), eager)
    assert raas_state(model).compiled.graphs == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0
    remove_raas(model)


def test_compiled_rkv_decode_one_graph_same_tokens():
    """R-KV sizes its query ring at prefill (eager), so the compiled decode forward is
    still one graph across checkpoints that free pages, with eager R-KV's tokens."""
    model = tiny_model("llama")
    ids, mask = prompts((12, 7))
    eager, compiled = eager_then_compiled(model, ids, mask, NEW_TOKENS, budget=64,
                                          page_size=16, policy="rkv", rkv_buffer=16,
                                          rkv_window=4)
    torch._dynamo.utils.counters.clear()
    got = greedy(model, ids, mask, NEW_TOKENS)
    assert compiled.graphs == 1
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert torch.equal(got, eager)
    remove_raas(model)
