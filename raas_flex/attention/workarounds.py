"""Workarounds for kernel bugs, each with the case that needs it and its guard test."""

from __future__ import annotations

import torch


def materialised_on_cpu(query: torch.Tensor) -> torch.Tensor:
    """Work around a torch 2.13 CPU Inductor bug: when the folded query is a view of the
    [B, Hq, 1, D] input, the compiled CPU flex kernel over pools of 1024+ tokens read it
    wrongly (garbage up to 1e37; tests/compile/test_compiled.py guards it). An arithmetic
    copy makes Inductor materialise a fresh buffer; a clone() did not. GPU is unaffected.
    """
    return query * 1.0 if query.device.type == "cpu" else query
