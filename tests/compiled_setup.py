"""One compiled RaaS decode step shared by every test that needs a compiled graph.

Compiling costs ~25 s per graph on a 2-core CPU, so tests reuse this one: same config,
same policy object, same shapes (dynamo would recompile on any of them changing).
"""

from __future__ import annotations

import torch

import raas_flex as rf
from raas_flex.functional import decode_step_tensors
from tests.layer_harness import Shapes

CONFIG = rf.RaaSConfig(budget=96, page_size=16)
POLICY = rf.make_policy(CONFIG)
SHAPES = Shapes(batch=2, kv_heads=2, group=2, head_dim=16)
SCALE = SHAPES.head_dim ** -0.5

_compiled = torch.compile(decode_step_tensors, fullgraph=True, dynamic=False)


def compiled_step(q, k, v, cache, policy, t):
    """rf.decode_step's signature, through the shared compiled graph."""
    return _compiled(q, k, v, cache, policy, torch.tensor(t), SCALE)
