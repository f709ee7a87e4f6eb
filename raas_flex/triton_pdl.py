"""Programmatic dependent launch (PDL) for the library's own Triton kernels on Hopper+.

A decode step is a chain of small dependent kernels: at batch 1 a kernel runs for a few µs
and the gap before the next one (~1-1.5 µs in a replayed CUDA graph on the H200) is a large
share of the step. Launched with PDL, a kernel's programs may be scheduled while the kernel
before it in the stream still runs; each then waits (griddepcontrol.wait) until that kernel
has finished and its writes are visible, so only the launch overlaps, never the work.

The invariant every kernel here keeps: its first statement is `wait_for_prior_grid`, which
waits and only then lets the next kernel launch. So a kernel never reads or writes before
everything earlier in the stream has finished, and the next kernel never starts before this
one has passed its own wait (issue 15, lever 28). quest's CUDA C++ select
(quest_select.cu, launched by cuda_rtc.Kernel) keeps the same invariant. Imported on first
CUDA use only.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

ENABLED = True  # module setting: False launches every kernel the ordinary way (bench/)


def launches_with_pdl(device: torch.device) -> bool:
    """Whether kernels on `device` launch with PDL: a Hopper or newer GPU, ENABLED, and not
    the Triton interpreter (which has no grid dependency control)."""
    return (ENABLED and device.type == "cuda" and os.environ.get("TRITON_INTERPRET") != "1"
            and torch.cuda.get_device_capability(device)[0] >= 9)


def pdl_options(device: torch.device, allowed: bool = True) -> dict[str, bool]:
    """A launch's two PDL settings, which must agree: the kernel's PDL constexpr (its
    wait_for_prior_grid) and Triton's launch_pdl. `allowed` False: an ordinary launch."""
    on = allowed and launches_with_pdl(device)
    return {"PDL": on, "launch_pdl": on}


@triton.jit
def wait_for_prior_grid(PDL: tl.constexpr):
    """With PDL: wait until the previous kernel in the stream has finished (its writes
    visible), then allow the next kernel to launch. Without: nothing."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
