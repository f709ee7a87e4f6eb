"""The decode step compiled once: fixed shapes, fullgraph, no host sync.

`decode_step_tensors` (append -> scores -> timestamps -> victim -> block mask ->
flex_attention) is branch-free tensor code, so torch.compile turns it into a single graph
that a CUDA graph can capture and replay. Every layer of a model shares the one compiled
callable: the graph's guards only look at tensor shapes/dtypes and the policy's config, so a
new layer's cache with the same shapes reuses the graph instead of recompiling.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch

from raas_flex.cache import LayerCache
from raas_flex.functional import decode_step_tensors

COMPILE_MODES = (None, "reduce-overhead", "max-autotune-no-cudagraphs")

# Inductor settings of every decode graph (this step's, and apply_raas's whole forward).
# "deterministic" keeps one config per reduction by a fixed rule instead of timing each
# config once, alone, at the kernel's first launch. That timing cannot rank kernels of 1-5 µs
# that read data the kernel before them left in L2: FlexAttention's decode combine kernels
# got whichever of XBLOCK 1 / 8 / 32 / 128 came out first, 2.0 to 4.6 µs in the step from
# one compile to the next, where the rule's XBLOCK 8 gives 2.1 (H200, docs/flex-notes.md).
# It changes no decision of the step, only which config runs (so, at most, a reduction's
# rounding); it also turns off Inductor's padding of odd-sized matmuls, which the decode's
# matmuls (one token per row) do not use.
DECODE_INDUCTOR_CONFIG = {"deterministic": True}


@functools.lru_cache(maxsize=None)
def compile_decode_step(mode: str | None = None) -> Callable:
    """The compiled `decode_step_tensors` for `mode`, built once per process and mode.

    Call it as `step(q, k, v, cache, policy, step_tensor, scale)` with q [B, Hq, 1, D],
    k, v [B, H, 1, D], step_tensor a 0-d int64 tensor and scale a float; it mutates `cache`
    in place and returns [B, Hq, 1, D]. mode=None is the plain Inductor graph (capture it
    yourself with torch.cuda.CUDAGraph, as bench/latency/decode_attention.py does);
    "reduce-overhead" lets Inductor's CUDA-graph trees capture it.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"mode={mode!r}; choose one of {COMPILE_MODES}.")
    if mode is not None and "max-autotune" in mode:  # it times configs by design
        return torch.compile(decode_step_tensors, fullgraph=True, dynamic=False, mode=mode)
    options = {**torch._inductor.list_mode_options(mode or "default"), **DECODE_INDUCTOR_CONFIG}
    return torch.compile(decode_step_tensors, fullgraph=True, dynamic=False, options=options)


def compiled_decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         cache: LayerCache, policy, step: torch.Tensor,
                         scale: float) -> torch.Tensor:
    """One decode step through the shared default-mode graph (same arguments as above)."""
    refuse_quantized_off_cuda(cache.quantized, cache.k.device, "Use the eager decode_step "
                              "on the CPU.")
    return compile_decode_step(None)(q, k, v, cache, policy, step, scale)


def refuse_quantized_off_cuda(quantized: bool, device: torch.device, fix: str) -> None:
    """Compiling over an 8-bit pool works on CUDA only: raise with `fix` elsewhere."""
    if quantized and device.type != "cuda":
        raise ValueError("a quantized pool (kv_dtype) compiles on CUDA only: Inductor's CPU "
                         "FlexAttention rejects 8-bit K/V with a float query. " + fix)


def refuse_sinks_off_cuda(sinks: bool, device: torch.device, fix: str) -> None:
    """Attention sinks are folded in through flex's lse, which Inductor's CPU FlexAttention
    does not return (torch 2.13): compiled sink layers run on CUDA only."""
    if sinks and device.type != "cuda":
        raise ValueError("attention sinks compile on CUDA only: Inductor's CPU FlexAttention "
                         "does not return the log-sum-exp the sink is folded in with. " + fix)


def clone_cache(cache: LayerCache) -> LayerCache:
    """A deep copy of a layer cache (tensors cloned), e.g. to run eager and compiled side
    by side from one state, or to trace without disturbing the real cache."""
    tensors = {f.name: getattr(cache, f.name).clone() for f in dataclasses.fields(cache)
               if isinstance(getattr(cache, f.name), torch.Tensor)}
    state = {name: t.clone() for name, t in cache.policy_state.items()}
    return dataclasses.replace(cache, policy_state=state, **tensors)
