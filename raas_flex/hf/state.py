"""What apply_raas changed on one model, kept on the model so remove_raas can undo it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from raas_flex.config import RaaSConfig

STATE_ATTR = "_raas_flex_state"


@dataclass
class RaaSState:
    """What apply_raas changed on one model, so that remove_raas can undo exactly that."""

    config: RaaSConfig
    num_layers: int
    original_attn: str
    windows: list = field(default_factory=list)  # per layer: None (full) or its window W
    hooks: list = field(default_factory=list)
    compiled: Callable | None = None  # the CompiledDecode forward with compile=True


def raas_state(model: torch.nn.Module) -> RaaSState:
    state = getattr(model, STATE_ATTR, None)
    if state is None:
        raise ValueError("this model is not patched; call raas_flex.apply_raas(model) first.")
    return state
