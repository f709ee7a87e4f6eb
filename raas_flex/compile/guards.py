"""Counting graph breaks and (re)compilations, so tests can assert "one graph, compiled once".

Counts are per code object (the function's own Dynamo cache entries), not Dynamo's global
counters, because eager flex_attention compiles and recompiles its own wrapper elsewhere.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.testing import CompileCounter


def _code_of(fn: Callable) -> Any:
    inner = getattr(fn, "_torchdynamo_orig_callable", fn)  # a torch.compile wrapper
    inner = getattr(inner, "__wrapped__", inner)
    code = getattr(inner, "__code__", None)
    if code is None:
        raise TypeError(f"{fn!r} has no Python code object; pass the function itself.")
    return code


def compile_count(fn: Callable) -> int:
    """How many compiled variants Dynamo holds for `fn` (its cache entries)."""
    return len(_debug_get_cache_entry_list(_code_of(fn)))


def recompile_count(fn: Callable) -> int:
    """Compilations of `fn` beyond the first: 0 means every call reused one graph."""
    return max(compile_count(fn) - 1, 0)


def count_graph_breaks(fn: Callable, *args: Any, **kwargs: Any) -> tuple[int, int]:
    """(graph breaks, graphs) when Dynamo traces fn(*args, **kwargs) without fullgraph.

    Traces through a fresh wrapper with a counting backend, so neither `fn`'s own compiled
    graphs nor Dynamo's caches are touched (torch._dynamo.explain would reset them). It
    runs the function: pass copies of any state it mutates (raas_flex.compile.clone_cache).
    """
    inner = getattr(fn, "_torchdynamo_orig_callable", fn)

    def traced(*a: Any, **k: Any) -> Any:
        return inner(*a, **k)

    backend = CompileCounter()
    torch.compile(traced, backend=backend, fullgraph=False, dynamic=False)(*args, **kwargs)
    graphs = backend.frame_count
    return max(graphs - 1, 0), graphs  # breaks counted as explain() counts them
