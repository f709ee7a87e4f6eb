"""CUDA-graph replay of the compiled decode forward (apply_raas(compile=True, cuda_graph=True)).

Why it is safe to replay: every tensor a decode step reads or writes besides its inputs (the
pools, page tables, step counters) lives in the RaaSCache at a fixed address and is updated
in place by the step itself; the per-step inputs (input_ids, position_ids, cache_position)
are copied into static buffers before each replay. The step is branch-free and has no host
synchronisation, so one capture covers every later step, evictions included.

Why capture by hand: Inductor's own CUDA-graph mode skips graphs that mutate their inputs
(the cache tensors), so `mode="reduce-overhead"` would silently run without graphs.
A new cache (a new generate() call), a cleared one (RaaSCache.reset) or new input shapes
capture a new graph; the first decode step of each runs the compiled forward directly, which
compiles and warms it.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from transformers.cache_utils import Cache


class StepGraph(Protocol):
    """What GraphedDecode needs from a graph: record `fn` once, then rerun it."""

    def capture(self, fn: Callable[[], Any]) -> Any: ...
    def replay(self) -> None: ...


class CudaStepGraph:
    """torch.cuda.CUDAGraph behind the StepGraph protocol (capture records, runs nothing)."""

    def __init__(self) -> None:
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Callable[[], Any]) -> Any:
        with torch.cuda.graph(self.graph):
            return fn()

    def replay(self) -> None:
        self.graph.replay()


class GraphedDecode:
    """Runs `step(**kwargs)` as a replayed graph once a cache has taken one direct step."""

    def __init__(self, step: Callable[..., Any],
                 new_graph: Callable[[], StepGraph] = CudaStepGraph) -> None:
        self.step = step
        self.new_graph = new_graph
        self.captures = 0  # graphs captured so far, for tests and logs
        # The cache itself is held (not its id): the graph writes into its tensors' memory,
        # which must stay allocated, and a new cache at a reused address must not match.
        self._cache: Any = None
        self._key: tuple | None = None  # input shapes/options of the warmed/captured step
        self._graph: StepGraph | None = None
        self._static: dict[str, torch.Tensor] = {}
        self._output: Any = None

    def __call__(self, cache: Any, kwargs: dict[str, Any]) -> Any:
        tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        others = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
        key = (tuple((k, tuple(v.shape), v.dtype, v.device)
                                for k, v in sorted(tensors.items())),
               tuple(sorted((k, repr(v)) for k, v in others.items() if not isinstance(v, Cache))),
               getattr(cache, "resets", 0))  # a cleared cache holds new pools
        if cache is not self._cache or key != self._key:
            self.reset()  # a new cache or shape: one direct (warming) step, no graph yet
            self._cache, self._key = cache, key
            return self.step(**kwargs)
        if self._graph is None:
            self._static = {k: v.clone() for k, v in tensors.items()}
            self._graph = self.new_graph()
            self._output = self._graph.capture(lambda: self.step(**self._static, **others))
            self.captures += 1
        else:
            for name, value in tensors.items():
                self._static[name].copy_(value)
        self._graph.replay()
        return _detached_copy(self._output)

    def reset(self) -> None:
        """Drop the captured graph (and its memory); the next step warms up again."""
        self._cache, self._key, self._graph, self._static, self._output = None, None, None, {}, None


def _detached_copy(output: Any) -> Any:
    """The output with its tensors cloned: the next replay overwrites the static ones."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, dict):  # transformers ModelOutput is a dict subclass
        return type(output)(**{k: _detached_copy(v) if isinstance(v, torch.Tensor) else v
                               for k, v in output.items()})
    raise TypeError(f"cannot copy a decode output of type {type(output).__name__}.")
