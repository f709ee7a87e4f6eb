"""A CPU stand-in for a CUDA graph, to test the capture/replay plumbing without a GPU."""

from __future__ import annotations

from typing import Any, Callable

import torch


class FakeStepGraph:
    """Like CUDAGraph: `capture` returns output tensors that each `replay` refreshes in place.

    A real capture records kernels without running them and the first replay runs them; here
    capture runs `fn` once (computing the outputs) and the first replay is that run.
    """

    replays = 0  # replays across all instances (class-level, for assertions)

    def __init__(self) -> None:
        self.fn: Callable[[], Any] | None = None
        self.output: Any = None
        self.ran_at_capture = False

    def capture(self, fn: Callable[[], Any]) -> Any:
        self.fn, self.output, self.ran_at_capture = fn, fn(), True
        return self.output

    def replay(self) -> None:
        type(self).replays += 1
        if self.ran_at_capture:
            self.ran_at_capture = False
            return
        fresh = self.fn()
        for name, value in self.output.items():
            if isinstance(value, torch.Tensor):
                value.copy_(fresh[name])
