"""apply_raas(compile=True): the decode forward as one torch.compile(fullgraph=True) graph.

Only decode calls (a filled RaaSCache, one token per sequence) take the compiled path;
prefill and continuation chunks run eagerly. The 2D padding mask is dropped on the compiled
path: decode never reads it (pads are never in the pool) and its growing length would
recompile every step. The keep-all overflow flag is checked after the call, on the host.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from raas_flex.hf.cache import RaaSCache


class CompiledDecode:
    """Dispatches a model's forward: compiled for decode steps, eager otherwise.

    `graphs` counts the graphs compiled so far (a recompile adds one), for tests and logs.
    """

    def __init__(self, forward: Callable) -> None:
        self.eager = forward
        # generate() reads forward's signature (position_ids, attention_mask, logits_to_keep):
        # without this it would build no position_ids and left-padded rows would shift.
        self.__wrapped__ = forward
        self.__signature__ = inspect.signature(forward)
        self.graphs = 0
        self.compiled = torch.compile(forward, fullgraph=True, dynamic=False,
                                      backend=self._backend)

    def _backend(self, gm: torch.fx.GraphModule, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.graphs += 1
        return compile_fx(gm, example_inputs)

    def __call__(self, *args, **kwargs):
        cache = kwargs.get("past_key_values")
        ids = kwargs.get("input_ids")
        decode = (not args and isinstance(cache, RaaSCache) and cache.is_prefilled
                  and ids is not None and ids.shape[1] == 1)
        if not decode:
            return self.eager(*args, **kwargs)
        kwargs.pop("attention_mask", None)
        out = self.compiled(**kwargs)
        cache.check_overflow()
        return out
