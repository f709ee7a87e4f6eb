"""apply_raas(compile=True): the decode forward as one torch.compile(fullgraph=True) graph.

Only decode calls (a filled RaaSCache, one token per sequence) take the compiled path;
prefill and continuation chunks run eagerly. The 2D padding mask is dropped on the compiled
path: decode never reads it (pads are never in the pool) and its growing length would
recompile every step. The keep-all overflow flag is checked after the call, on the host.
With cuda_graph=True the compiled step is captured once per cache and replayed
(raas_flex.hf.graphs), which removes the per-kernel launch cost on the GPU.

Dynamo keeps a compiled graph only for the backend object it was built with (its
BACKEND_MATCH guard), so every CompiledDecode of one model shares one backend: after
remove_raas, a later apply_raas with the same settings on the same model (the accuracy
table's next task family) reuses the graph instead of compiling it again. Another model
gets its own backend, so no graph is shared across models.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Callable

import torch

from raas_flex.compile import step
from raas_flex.hf.cache import RaaSCache
from raas_flex.hf.compat import cache_argument
from raas_flex.hf.graphs import CudaStepGraph, GraphedDecode, StepGraph


class _ModelBackend:
    """The one backend of a model's compiled decode (see the module doc): it hands each graph
    to the CompiledDecode whose call is running, so `graphs` counts per CompiledDecode."""

    def __init__(self) -> None:
        self.running: CompiledDecode | None = None

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        return self.running._backend(gm, example_inputs)


_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> _ModelBackend


def _model_backend(forward: Callable) -> _ModelBackend:
    """The shared backend of the model whose bound forward this is (a new one otherwise)."""
    owner = getattr(forward, "__self__", None)
    if owner is None:
        return _ModelBackend()
    return _BACKENDS.setdefault(owner, _ModelBackend())


class CompiledDecode:
    """Dispatches a model's forward: compiled for decode steps, eager otherwise.

    `graphs` counts the graphs this CompiledDecode compiled (a recompile adds one; a graph an
    earlier apply_raas on the same model built is reused and adds none), for tests and logs.
    """

    def __init__(self, forward: Callable, cuda_graph: bool = False,
                 new_graph: Callable[[], StepGraph] = CudaStepGraph) -> None:
        self.eager = forward
        # generate() reads forward's signature (position_ids, attention_mask, logits_to_keep):
        # without this it would build no position_ids and left-padded rows would shift.
        self.__wrapped__ = forward
        self.__signature__ = inspect.signature(forward)
        self.graphs = 0
        self.shared = _model_backend(forward)
        self.compiled = torch.compile(forward, fullgraph=True, dynamic=False,
                                      backend=self.shared)
        self.graphed = GraphedDecode(self.compiled, new_graph) if cuda_graph else None

    def _backend(self, gm: torch.fx.GraphModule, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.graphs += 1
        return compile_fx(gm, example_inputs, config_patches=step.DECODE_INDUCTOR_CONFIG)

    def __call__(self, *args, **kwargs):
        cache = cache_argument(kwargs)
        ids = kwargs.get("input_ids")
        decode = (not args and isinstance(cache, RaaSCache) and cache.is_prefilled
                  and ids is not None and ids.shape[1] == 1)
        if not decode:
            return self.eager(*args, **kwargs)
        kwargs.pop("attention_mask", None)
        step.refuse_quantized_off_cuda(cache.config.kv_dtype is not None, ids.device,
                                       "Use apply_raas(..., compile=False) there (eager flex "
                                       "takes 8-bit K/V).")
        sinks = any(getattr(layer.pool, "sinks", None) is not None for layer in cache.layers)
        step.refuse_sinks_off_cuda(sinks, ids.device, "Use apply_raas(..., compile=False) "
                                   "there (eager flex returns it).")
        if self.graphed is not None and self.graphed.new_graph is CudaStepGraph and not ids.is_cuda:
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device (inputs are on "
                             f"{ids.device}); apply_raas(..., cuda_graph=False) elsewhere.")
        self.shared.running = self
        try:
            out = self.compiled(**kwargs) if self.graphed is None else self.graphed(cache, kwargs)
        finally:
            self.shared.running = None  # no lasting reference from the backend to the model
        cache.check_overflow()
        return out
