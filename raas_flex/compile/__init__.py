"""Speed: the decode step as one compiled graph, and guards that prove it stays one graph.

`compile_decode_step()` is the generic path (any policy, CPU and GPU). On CUDA,
`raas_flex.compile.fused_raas.FusedRaaSStep` (imported on demand: it needs Triton) runs the
RaaS policy's bookkeeping as one Triton kernel (v1, own block-mask buffers), and
`raas_flex.compile.raas_kernel` a v2 kernel that `decode_step_tensors` uses when
`raas_flex.functional.RAAS_KERNEL` is set; see bench/NOTES.md for when either is faster.
"""

from raas_flex.compile.guards import compile_count, count_graph_breaks, recompile_count
from raas_flex.compile.step import clone_cache, compile_decode_step, compiled_decode_step

__all__ = [
    "clone_cache", "compile_count", "compile_decode_step", "compiled_decode_step",
    "count_graph_breaks", "recompile_count",
]
