"""apply_raas(compile=True): the decode forward as one torch.compile(fullgraph=True) graph.

Only decode calls (a filled RaaSCache, one token per sequence) take the compiled path;
prefill and continuation chunks run eagerly. The 2D padding mask is dropped on the compiled
path: decode never reads it (pads are never in the pool) and its growing length would
recompile every step. The keep-all overflow flag is checked after the call, on the host.
With cuda_graph=True the compiled step is captured once per cache and replayed
(raas_flex.hf.graphs), which removes the per-kernel launch cost on the GPU.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from raas_flex.compile import step
from raas_flex.hf.cache import RaaSCache
from raas_flex.hf.compat import cache_argument
from raas_flex.hf.graphs import CudaStepGraph, GraphedDecode, StepGraph


class CompiledDecode:
    """Dispatches a model's forward: compiled for decode steps, eager otherwise.

    `graphs` counts the graphs compiled so far (a recompile adds one), for tests and logs.
    """

    def __init__(self, forward: Callable, cuda_graph: bool = False,
                 new_graph: Callable[[], StepGraph] = CudaStepGraph) -> None:
        self.eager = forward
        # generate() reads forward's signature (position_ids, attention_mask, logits_to_keep):
        # without this it would build no position_ids and left-padded rows would shift.
        self.__wrapped__ = forward
        self.__signature__ = inspect.signature(forward)
        self.graphs = 0
        self.compiled = torch.compile(forward, fullgraph=True, dynamic=False,
                                      backend=self._backend)
        self.graphed = GraphedDecode(self.compiled, new_graph) if cuda_graph else None

    def _backend(self, gm: torch.fx.GraphModule, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.graphs += 1
        return compile_fx(gm, example_inputs)

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
        if self.graphed is None:
            out = self.compiled(**kwargs)
        elif self.graphed.new_graph is CudaStepGraph and not ids.is_cuda:
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device (inputs are on "
                             f"{ids.device}); apply_raas(..., cuda_graph=False) elsewhere.")
        else:
            out = self.graphed(cache, kwargs)
        cache.check_overflow()
        return out
