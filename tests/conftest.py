"""Hypothesis profiles: `ci` (>= 200 examples per property) runs under CI=true."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=200, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=30, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "dev"))

# Test tensors are tiny: one intra-op thread is ~10x faster than two fighting over 2 cores.
torch.set_num_threads(1)

# The suite compiles the one decode step (functional.decode_step_tensors) for many policies,
# configs and shapes, and Dynamo counts every compile of a code object in a process against
# recompile_limit (8): whether a test failed on the 9th depended on which test files
# pytest-xdist's --dist loadfile put in one worker (tests/cache/test_quant_pool.py,
# tests/compile, tests/masks and the compiled policy tests together exceed 8). A user's
# process compiles the step once per model config. Tests that must not recompile count
# their graphs themselves.
torch._dynamo.config.recompile_limit = 64
