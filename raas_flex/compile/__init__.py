"""Speed: the decode step as one compiled graph, and guards that prove it stays one graph.

`compile_decode_step()` is the path for every policy, CPU and GPU. (Two Triton kernels that
fused the RaaS bookkeeping were measured slower than this generic step on the H200 and
removed; bench/NOTES.md keeps their figures.)
"""

from raas_flex.compile.guards import compile_count, count_graph_breaks, recompile_count
from raas_flex.compile.step import clone_cache, compile_decode_step, compiled_decode_step

__all__ = [
    "clone_cache", "compile_count", "compile_decode_step", "compiled_decode_step",
    "count_graph_breaks", "recompile_count",
]
