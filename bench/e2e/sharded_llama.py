"""A random-weight Llama built directly in tensor-parallel shards (no checkpoint).

Why: a Llama-3-70B-shaped model in bf16 is ~140 GB, more than one H200 holds and more than
the two-GPU machine's disk, so it cannot be saved and loaded with tp_plan="auto". Instead the
model is made on the meta device, sharded with torch's tensor-parallel styles (the same
layout transformers' Llama plan uses: q/k/v/gate/up by output columns, o/down by input
columns, all-reduce after them), and each rank materialises only its shards.

Every weight is drawn from a generator seeded by its name over its FULL shape and then
sliced, so a model built on 1 rank and on N ranks holds the same numbers: their tokens can
be compared. Drawing the full tensor costs one weight's memory at a time (at most ~1 GB).
"""

from __future__ import annotations

import zlib

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                               parallelize_module)

from bench.e2e.models import llama_config

COLUMNS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # sharded by output rows
ROWS = ("o_proj", "down_proj")  # sharded by input columns; all-reduced output


def tensor_parallel_plan(num_layers: int) -> dict:
    """{module path: torch TP style} for every projection of every decoder layer."""
    plan = {}
    for i in range(num_layers):
        for name in COLUMNS:
            part = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj")) else "mlp"
            plan[f"model.layers.{i}.{part}.{name}"] = ColwiseParallel()
        plan[f"model.layers.{i}.self_attn.o_proj"] = RowwiseParallel()
        plan[f"model.layers.{i}.mlp.down_proj"] = RowwiseParallel()
    return plan


def build_sharded_llama(shape: str, mesh: DeviceMesh | None, device: torch.device,
                        dtype: torch.dtype = torch.bfloat16, seed: int = 0):
    """The model of bench.e2e.models.SHAPES[shape] on `device`, sharded over `mesh` (None:
    one device, unsharded)."""
    from transformers import LlamaForCausalLM

    config = llama_config(shape)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)  # shards materialise in dtype
    if mesh is not None and mesh.size() > 1:
        parallelize_module(model, mesh, tensor_parallel_plan(config.num_hidden_layers))
    model.to_empty(device=device)
    with torch.no_grad():
        for name, param in model.named_parameters():
            _fill(name, param, mesh, seed, dtype, config.initializer_range)
        # to_empty left junk in the rotary buffers; recompute them (on the CPU: the
        # constructor's signature differs across transformers releases)
        model.model.rotary_emb = type(model.model.rotary_emb)(config).to(device)
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def _fill(name: str, param: torch.Tensor, mesh: DeviceMesh | None, seed: int,
          dtype: torch.dtype, std: float) -> None:
    """This rank's part of the named weight: norms 1, the rest N(0, std) drawn full-size."""
    local = param.to_local() if isinstance(param, DTensor) else param
    if name.endswith("norm.weight"):
        local.fill_(1.0)
        return
    gen = torch.Generator(device=local.device).manual_seed(seed + zlib.crc32(name.encode()))
    full_shape = param.shape  # a DTensor reports the global shape
    full = torch.randn(full_shape, generator=gen, device=local.device, dtype=torch.float32)
    full = (full * std).to(dtype)
    if isinstance(param, DTensor):
        dim = 0 if name.split(".")[-2] in COLUMNS else 1
        full = full.chunk(mesh.size(), dim=dim)[mesh.get_local_rank()]
    local.copy_(full)
