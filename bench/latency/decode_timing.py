"""Timing helpers: CUDA-graph capture, do_bench medians, the copy and launch ceilings, and
a run's JSON with the device, torch version and command."""

from __future__ import annotations

import json
import sys
from typing import Callable

import torch
import triton

WARMUP_MS, REP_MS = 10, 40


def capture(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    """Warm fn up on a side stream (compiles it), then capture one call in a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def graph_median_ms(fn: Callable[[], object]) -> float:
    """Median ms of one replay of fn's CUDA graph (do_bench flushes L2 between calls)."""
    return graph_stats_ms(fn)["median_ms"]


def graph_stats_ms(fn: Callable[[], object]) -> dict[str, float]:
    """{"median_ms", "mean_ms"} over the replays of fn's CUDA graph. Why both: a replay is
    one decode step and each replay advances the state, so a policy that does extra work on
    some steps only (recycled's full step, every 10th) shows it in the mean, not the median."""
    graph = capture(fn)
    times = triton.testing.do_bench(graph.replay, warmup=WARMUP_MS, rep=REP_MS,
                                    return_mode="all")
    del graph
    times = sorted(float(t) for t in times)
    return {"median_ms": times[len(times) // 2], "mean_ms": sum(times) / len(times)}


def write_run(path: str, module: str, **fields) -> None:
    """A bench run's JSON: `fields` (its rows, ...) with the device, the torch version and
    the command that reproduces it (`python -m <module>` and this run's arguments)."""
    with open(path, "w") as f:
        json.dump(dict(fields, device=torch.cuda.get_device_name(), torch=torch.__version__,
                       command=f"python -m {module} " + " ".join(sys.argv[1:])), f, indent=1)


def copy_bandwidth(gib: float = 1.0) -> float:
    """Device-to-device copy bandwidth, bytes/s, counting bytes read plus bytes written."""
    n = int(gib * 2**30) // 2
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200,
                                 return_mode="median")
    return 2 * src.nbytes / (ms * 1e-3)


def launch_ms() -> float:
    """One tiny kernel replayed from a CUDA graph: the cost of 'one kernel launch'."""
    x = torch.zeros(1, device="cuda")
    return graph_median_ms(lambda: x.add_(1))
