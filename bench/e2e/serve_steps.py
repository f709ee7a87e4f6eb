"""Whole-model decode steps for bench/e2e/serve.py: one runner per method, each reaching a
decode length by fast-forwarding its cache, then timing a window of real steps.

Fast-forward (the cost of a step depends on how many tokens it reads, not on their values):
- dense: the full-length cache is filled with stand-in K/V (standard normal) in bulk; the
  window's steps start at position prompt + N - window, append their own real K/V and attend
  every position up to theirs.
- RaaS: a real prefill of a short prompt, then real decode steps until the pool is full and
  has evicted pages for a while (`fill_steps`); the window's steps then run at positions
  prompt + N - window onward (RoPE positions of length N). A RaaS step's work is fixed by L,
  so every later length runs the same graph on the same full pool.
Each step feeds back its greedy token (argmax on the device, no host sync); only the window
is timed (CUDA events on a GPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from bench.e2e.dense_live import LiveDenseCache, install_live_dense, remove_live_dense
from raas_flex.hf.compat import CACHE_ARG
from raas_flex.hf.graphs import GraphedDecode
from raas_flex.hf.tensor_parallel import tensor_parallel_size

Step = Callable[[torch.Tensor, int], torch.Tensor]  # (ids [B, 1], position) -> next ids [B, 1]


@dataclass
class Window:
    """A timed run of decode steps."""

    steps: int
    seconds: float
    peak_bytes: int

    @property
    def step_ms(self) -> float:
        return self.seconds / self.steps * 1e3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_steps(step: Step, ids: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """n greedy decode steps at positions start .. start + n - 1; returns the last ids."""
    for i in range(n):
        ids = step(ids, start + i)
    return ids


def timed_window(step: Step, ids: torch.Tensor, start: int, n: int) -> tuple[Window, torch.Tensor]:
    """Time n steps from position `start` (peak memory reset first, so it is the window's)."""
    device = ids.device
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        ids = run_steps(step, ids, start, n)
        end.record()
        end.synchronize()
        return Window(n, begin.elapsed_time(end) / 1e3, torch.cuda.max_memory_allocated()), ids
    t0 = time.perf_counter()
    ids = run_steps(step, ids, start, n)
    return Window(n, time.perf_counter() - t0, 0), ids


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1:].argmax(-1)  # [B, 1]


class DenseRunner:
    """The live-length dense baseline (bench.e2e.dense_live) on one model: one position
    tensor and one compiled forward for every cell; a CUDA graph per cache (cuda_graph)."""

    def __init__(self, model, compile: bool, cuda_graph: bool, dynamic: bool) -> None:
        self.model = model
        self.device = model.device
        self.pos = torch.zeros((), dtype=torch.int64, device=self.device)
        self.previous = install_live_dense(model, self.pos)
        self.dynamic = dynamic
        self.graphs = 0  # Inductor compilations so far (a recompile adds one)
        self.forward = (torch.compile(model.forward, fullgraph=True,
                                      dynamic=None if dynamic else False, backend=self._backend)
                        if compile else model.forward)
        self.graphed = GraphedDecode(self.forward) if cuda_graph else None
        # under tensor parallelism each rank's attention holds only its share of the kv heads
        self.kv_heads = model.config.num_key_value_heads // tensor_parallel_size(model)

    def _backend(self, gm: torch.fx.GraphModule, example_inputs):
        from torch._inductor.compile_fx import compile_fx
        self.graphs += 1
        return compile_fx(gm, example_inputs)

    def close(self) -> None:
        if self.graphed is not None:
            self.graphed.reset()
        remove_live_dense(self.model, self.previous)

    def new_cache(self, batch: int, capacity: int) -> LiveDenseCache:
        c = self.model.config
        cache = LiveDenseCache(c.num_hidden_layers, batch, self.kv_heads, capacity,
                               c.head_dim, self.pos, torch.bfloat16, self.device)
        cache.fill_random()
        if self.dynamic:  # one graph for every batch and length (see serve.py --dense-compile)
            for layer in cache.layers:
                for t in (layer.keys, layer.values):
                    torch._dynamo.mark_dynamic(t, 0)
                    torch._dynamo.mark_dynamic(t, 2)
        return cache

    def stepper(self, cache: LiveDenseCache, batch: int) -> Step:
        position_ids = torch.zeros((batch, 1), dtype=torch.int64, device=self.device)
        if self.dynamic:
            torch._dynamo.mark_dynamic(position_ids, 0)

        def step(ids: torch.Tensor, position: int) -> torch.Tensor:
            self.pos.fill_(position)
            position_ids.fill_(position)
            if self.dynamic:
                torch._dynamo.mark_dynamic(ids, 0)
            kwargs = {"input_ids": ids, "position_ids": position_ids, CACHE_ARG: cache,
                      "use_cache": True}
            out = self.graphed(cache, kwargs) if self.graphed is not None else self.forward(**kwargs)
            return greedy(out.logits)

        return step


class RaaSRunner:
    """raas_flex's own path: apply_raas(model, budget=L, compile=..., cuda_graph=...), a
    RaaSCache, a real prefill, then decode steps through the patched forward (which compiles
    the decode step and replays it as a CUDA graph, exactly as generate() does)."""

    def __init__(self, model, budget: int, page_size: int, compile: bool,
                 cuda_graph: bool) -> None:
        import raas_flex
        self.model = model
        raas_flex.apply_raas(model, budget=budget, page_size=page_size, policy="raas",
                             compile=compile, cuda_graph=cuda_graph)

    def close(self) -> None:
        import raas_flex
        raas_flex.remove_raas(self.model)

    def prefill(self, prompt: torch.Tensor):
        """A new RaaSCache holding `prompt` [B, T]; returns (cache, first decoded ids)."""
        from raas_flex.hf.cache import RaaSCache
        cache = RaaSCache.for_model(self.model)
        out = self.model(input_ids=prompt, **{CACHE_ARG: cache}, use_cache=True,
                         logits_to_keep=1)
        return cache, greedy(out.logits)

    def stepper(self, cache, batch: int) -> Step:
        position_ids = torch.zeros((batch, 1), dtype=torch.int64, device=self.model.device)

        def step(ids: torch.Tensor, position: int) -> torch.Tensor:
            position_ids.fill_(position)
            out = self.model(input_ids=ids, position_ids=position_ids, **{CACHE_ARG: cache},
                             use_cache=True)
            return greedy(out.logits)

        return step


def copy_bandwidth(device: torch.device, gib: float = 2.0, reps: int = 5) -> float | None:
    """Device-memory bandwidth in bytes/s, read + write of a `gib` GiB copy (None off CUDA):
    the ceiling the bandwidth floors of serve.py's rows are computed against."""
    if device.type != "cuda":
        return None
    n = int(gib * 2 ** 30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(reps):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = begin.elapsed_time(end) / 1e3
    del src, dst
    return 2 * n * 2 * reps / seconds
