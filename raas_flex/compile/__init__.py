"""Speed: the decode step as one compiled graph, and guards that prove it stays one graph.

`compile_decode_step()` is the path for every policy, CPU and GPU. On CUDA the decode step
can run the RaaS bookkeeping as one Triton kernel (`raas_flex.compile.raas_kernel`, opt-in,
see raas_flex/functional.py); the older experimental fused step lives in
bench/latency/fused_raas.py. See bench/NOTES.md for when either was faster.
"""

from raas_flex.compile.guards import compile_count, count_graph_breaks, recompile_count
from raas_flex.compile.step import clone_cache, compile_decode_step, compiled_decode_step

__all__ = [
    "clone_cache", "compile_count", "compile_decode_step", "compiled_decode_step",
    "count_graph_breaks", "recompile_count",
]
