"""Speed: the decode step as one compiled graph, and guards that prove it stays one graph.

`compile_decode_step()` is the generic path (any policy, CPU and GPU). On CUDA,
`raas_flex.compile.fused_raas.FusedRaaSStep` (imported on demand: it needs Triton) runs the
RaaS policy's bookkeeping as one Triton kernel; see bench/NOTES.md for when it is faster.
"""

from raas_flex.compile.guards import compile_count, count_graph_breaks, recompile_count
from raas_flex.compile.step import clone_cache, compile_decode_step, compiled_decode_step

__all__ = [
    "clone_cache", "compile_count", "compile_decode_step", "compiled_decode_step",
    "count_graph_breaks", "recompile_count",
]
