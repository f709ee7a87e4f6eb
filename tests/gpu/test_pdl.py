"""Programmatic dependent launch (raas_flex/triton_pdl.py) inside a replayed CUDA graph.

quest's and raas's compiled steps, whose append, bound and select kernels launch with PDL
on Hopper and newer, must give bit for bit the outputs and state of the same graph with
ordinary launches, replay after replay: a kernel that read before the previous one had
finished would differ. Skipped below compute capability 9 (no PDL there)."""

from __future__ import annotations

import pytest
import torch

import raas_flex as rf
from bench.latency.decode_state import decode_inputs, seen_cache
from raas_flex.compile import compile_decode_step

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
    reason="PDL check: needs a Hopper or newer GPU")

STATE = ("k", "v", "fill", "visible", "timestamp", "pinned", "page_id", "current", "length",
         "kmin", "kmax", "overflow")


def _replays(name: str, replays: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs of `replays` replays of one captured step (each appends a token: pages
    open every 16), and the state after them, from a fixed 4k-token state."""
    gen = torch.Generator(device="cuda").manual_seed(3)
    policy = rf.make_policy(rf.RaaSConfig(budget=512, page_size=16, policy=name))
    cache, step = seen_cache(policy, 2, 8, 128, 4096, 256, torch.bfloat16, "cuda", gen)
    q, k, v = decode_inputs(2, gen)
    compiled = compile_decode_step(None)
    compiled(q, k, v, cache, policy, step, 128 ** -0.5)  # compiles; a step like the others
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = compiled(q, k, v, cache, policy, step, 128 ** -0.5)
    outs = []
    for _ in range(replays):
        graph.replay()
        outs.append(out.clone())
    torch.cuda.synchronize()
    return torch.stack(outs), {f: getattr(cache, f).clone() for f in STATE}


@pytest.mark.parametrize("name", ["quest", "raas"])
def test_graph_with_pdl_matches_ordinary_launches(name, monkeypatch):
    from raas_flex import triton_pdl
    monkeypatch.setattr(triton_pdl, "ENABLED", False)
    assert not triton_pdl.launches_with_pdl(torch.device("cuda"))
    plain_out, plain_state = _replays(name, 40)
    monkeypatch.setattr(triton_pdl, "ENABLED", True)
    assert triton_pdl.launches_with_pdl(torch.device("cuda"))
    pdl_out, pdl_state = _replays(name, 40)
    assert torch.equal(pdl_out, plain_out)
    for field, value in plain_state.items():
        assert torch.equal(pdl_state[field], value), field
    assert int(plain_state["length"][0]) == 4096 + 41  # the warm-up step and 40 replays
