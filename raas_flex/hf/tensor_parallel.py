"""Tensor parallelism: what apply_raas checks on a model sharded with transformers' TP plan.

Why nothing else is needed: transformers' tensor-parallel plans shard q/k/v projections by
heads ("colwise") and gather in o_proj ("rowwise"), so each rank's attention sees only its
local kv heads. RaaS state lives per (sequence, kv head) and is allocated from the keys the
attention receives, so each rank's pools hold exactly its local heads, and a per-kv-head
policy decides on each rank what one GPU would decide for those heads, with no collective.
A policy that pools scores across heads would need one; it is refused here instead.
"""

from __future__ import annotations

import torch

from raas_flex.config import RaaSConfig
from raas_flex.policies import policy_class


def tensor_parallel_size(model: torch.nn.Module) -> int:
    """GPUs (ranks) the model's heads are sharded over; 1 when it is not sharded.

    transformers records its own plans' size (`model.tp_size`); a model sharded with
    torch's tensor-parallel styles directly shows it only in its DTensor weights."""
    size = getattr(model, "tp_size", None)
    if size:
        return int(size)
    from torch.distributed.tensor import DTensor

    for module in model.modules():
        if type(module).__name__.endswith("Attention"):
            weights = [p for p in module.parameters() if isinstance(p, DTensor)]
            return weights[0].device_mesh.size() if weights else 1
    return 1


def check_tensor_parallel(model: torch.nn.Module, config: RaaSConfig) -> None:
    """Refuse a sharded model whose heads or policy do not shard cleanly."""
    size = tensor_parallel_size(model)
    if size == 1:
        return
    kv_heads = getattr(model.config, "num_key_value_heads", None) or \
        model.config.num_attention_heads
    if kv_heads % size:
        raise ValueError(f"{kv_heads} kv heads cannot be split evenly over {size} tensor-"
                         f"parallel ranks; use a tp size that divides {kv_heads}.")
    options = policy_class(config.policy).Options
    if not options.per_kv_head:
        raise ValueError(f"policy {config.policy!r} pools its scores across kv heads, so under "
                         f"tensor parallelism ({size} ranks) each rank would choose differently "
                         "from one GPU; pick a per-kv-head policy (e.g. 'raas') or run on one "
                         "GPU.")
