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
