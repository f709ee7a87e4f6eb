"""Every decode graph is compiled under DECODE_INDUCTOR_CONFIG (why: raas_flex/compile/step.py).

These check the wiring without compiling: torch.compile and compile_fx are replaced by
recorders, so the test is fast and says exactly which settings each path hands Inductor.
"""

from __future__ import annotations

import pytest
import torch

from raas_flex.compile import step
from raas_flex.hf.compiled import CompiledDecode


@pytest.fixture
def compile_calls(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)
    step.compile_decode_step.cache_clear()
    yield calls
    step.compile_decode_step.cache_clear()


def test_config_pins_reduction_configs() -> None:
    assert step.DECODE_INDUCTOR_CONFIG == {"deterministic": True}
    assert hasattr(torch._inductor.config, "deterministic")  # a torch without it must fail here


@pytest.mark.parametrize("mode, options", [
    (None, {"deterministic": True}),
    ("reduce-overhead", {"triton.cudagraphs": True, "deterministic": True}),
])
def test_step_compiles_under_the_config(compile_calls, mode, options) -> None:
    step.compile_decode_step(mode)
    assert compile_calls == [dict(fullgraph=True, dynamic=False, options=options)]


def test_max_autotune_keeps_its_own_timing(compile_calls) -> None:
    step.compile_decode_step("max-autotune-no-cudagraphs")
    assert compile_calls == [dict(fullgraph=True, dynamic=False,
                                  mode="max-autotune-no-cudagraphs")]


def test_apply_raas_forward_compiles_under_the_config(monkeypatch) -> None:
    import torch._inductor.compile_fx as compile_fx_module
    patches: list = []
    monkeypatch.setattr(compile_fx_module, "compile_fx",
                        lambda gm, inputs, config_patches=None: patches.append(config_patches))
    decode = CompiledDecode(lambda **kwargs: None)
    decode._backend(torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph()), [])
    assert patches == [step.DECODE_INDUCTOR_CONFIG] and decode.graphs == 1
