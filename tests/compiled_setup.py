"""One compiled RaaS decode step shared by every test that needs a compiled graph.

Compiling costs ~25 s per graph on a 2-core CPU, so tests reuse raas_flex.compile's one
graph with the same config, policy object and shapes (a change in any recompiles).
Small pool on purpose: see tests/compile/test_step.py on torch 2.13 CPU and 1024+ tokens.
"""

from __future__ import annotations

import torch

import raas_flex as rf
from raas_flex.compile import compile_decode_step
from tests.layer_harness import Shapes

# Kernel blocks of 4 pages (wide blocks, as the sm90 default's 128 tokens; the CPU default
# is one page, which tests/hf's compiled generate() runs). tests/masks covers blocks that
# do not divide the pool.
CONFIG = rf.RaaSConfig(budget=128, page_size=16, kernel_block_pages=4)
POLICY = rf.make_policy(CONFIG)
SHAPES = Shapes(batch=2, kv_heads=2, group=2, head_dim=16)
SCALE = SHAPES.head_dim ** -0.5


def compiled_step(q, k, v, cache, policy, t):
    """rf.decode_step's signature, through the shared compiled graph."""
    return compile_decode_step(None)(q, k, v, cache, policy, torch.tensor(t), SCALE)
