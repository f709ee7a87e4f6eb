"""Where the Triton kernel tests run: on CUDA, else on the CPU under TRITON_INTERPRET=1
with Triton installed (the interpreter), else nowhere (they skip)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch


def kernel_device() -> str | None:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1" and importlib.util.find_spec("triton"):
        return "cpu"
    return None


DEVICE = kernel_device()
needs_kernel_device = pytest.mark.skipif(
    DEVICE is None, reason="needs CUDA, or TRITON_INTERPRET=1 with Triton")
