"""apply_raas / remove_raas: route a transformers model's attention through raas_flex.

Everything apply_raas changes is recorded in one RaaSState on the model and undone by
remove_raas: the attention implementation name, one forward pre-hook per attention module
(it hands the cache to the attention function, which transformers never passes it), an
instance-level override of generate()'s cache preparation, and, with compile=True, a
dispatching forward. Nothing is patched at import time.
"""

from __future__ import annotations

import types

import torch
from transformers import AttentionInterface
from transformers.generation.configuration_utils import GenerationMode
from transformers.masking_utils import AttentionMaskInterface

from raas_flex.config import RaaSConfig
from raas_flex.hf.attention import ATTN_NAME, CACHE_KWARG, raas_attention, raas_mask
from raas_flex.hf.cache import RaaSCache, check_dense_layers
from raas_flex.hf.compat import CACHE_ARG, cache_argument
from raas_flex.hf.compiled import CompiledDecode
from raas_flex.hf.state import STATE_ATTR, RaaSState, raas_state
from raas_flex.hf.support import check_supported

GENERATE_HOOK = "_prepare_cache_for_generation"
SUPPORTED_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)


def apply_raas(model: torch.nn.Module, compile: bool = False, cuda_graph: bool = False,
               **config_fields) -> torch.nn.Module:
    """Make `model.generate()` decode with a fixed per-sequence KV budget; returns `model`.

    budget, page_size, policy and any other RaaSConfig field, plus the chosen policy's
    options by their flat names (e.g. streaming_sinks=2), build a validated RaaSConfig
    with RaaSConfig's defaults (RaaSConfig.from_fields). compile=True
    compiles the decode forward (fullgraph, static shapes); cuda_graph=True (with compile,
    CUDA only) also captures that step once per generate() call and replays it as a CUDA
    graph. Unsupported models raise here.
    """
    if cuda_graph and not compile:
        raise ValueError("cuda_graph=True replays the compiled decode step; pass compile=True "
                         "as well.")
    if hasattr(model, STATE_ATTR):
        raise ValueError("apply_raas was already applied to this model; call "
                         "remove_raas(model) first to change its settings.")
    config = RaaSConfig.from_fields(**config_fields)
    num_layers = check_supported(model)
    check_dense_layers(config, num_layers)
    modules = attention_modules(model, num_layers)
    register_interfaces()
    state = RaaSState(config, num_layers, model.config._attn_implementation)
    model.set_attn_implementation(ATTN_NAME)
    if model.config._attn_implementation != ATTN_NAME:
        raise ValueError(f"{type(model).__name__} does not let transformers set its attention "
                         "implementation, so RaaS cannot route its attention.")
    state.hooks = [m.register_forward_pre_hook(_pass_cache, with_kwargs=True) for m in modules]
    setattr(model, GENERATE_HOOK, types.MethodType(_prepare_cache, model))
    if compile:
        state.compiled = CompiledDecode(model.forward, cuda_graph=cuda_graph)
        model.forward = state.compiled
    setattr(model, STATE_ATTR, state)
    return model


def remove_raas(model: torch.nn.Module) -> torch.nn.Module:
    """Undo apply_raas: hooks, generate() override, compiled forward, attention name."""
    state = raas_state(model)
    for hook in state.hooks:
        hook.remove()
    delattr(model, GENERATE_HOOK)
    if state.compiled is not None:
        delattr(model, "forward")
    model.set_attn_implementation(state.original_attn)
    delattr(model, STATE_ATTR)
    return model


def register_interfaces() -> None:
    """Register the attention and mask functions under ATTN_NAME (idempotent, global)."""
    AttentionInterface.register(ATTN_NAME, raas_attention)
    AttentionMaskInterface.register(ATTN_NAME, raas_mask)


def attention_modules(model: torch.nn.Module, num_layers: int) -> list[torch.nn.Module]:
    """The self-attention module of every decoder layer, one per layer index."""
    found = {m.layer_idx: m for m in model.modules()
             if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")}
    if sorted(found) != list(range(num_layers)):
        raise ValueError(f"found attention modules for layers {sorted(found)}, expected "
                         f"0..{num_layers - 1}; this model layout is not supported.")
    return [found[i] for i in range(num_layers)]


def _pass_cache(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: the attention function gets the cache under CACHE_KWARG."""
    kwargs[CACHE_KWARG] = cache_argument(kwargs)
    return args, kwargs


def _prepare_cache(self, generation_config, model_kwargs: dict, generation_mode,
                   batch_size: int, max_cache_length: int) -> None:
    """generate() cache preparation, bound to a patched model: a RaaSCache by default."""
    state = raas_state(self)
    if generation_mode not in SUPPORTED_MODES:
        raise ValueError(f"generation mode {generation_mode!s} is not supported with RaaS (a "
                         "budgeted cache cannot be reordered or rolled back); use greedy or "
                         "sampling with num_beams=1, or call remove_raas(model) first.")
    cache = cache_argument(model_kwargs)
    if cache is not None:
        if not isinstance(cache, RaaSCache):
            raise TypeError(f"a RaaS-patched model needs {CACHE_ARG}=RaaSCache(...), got "
                            f"{type(cache).__name__}; or pass none and generate() makes one.")
        cache.max_cache_len = max_cache_length
        return type(self)._prepare_cache_for_generation(
            self, generation_config, model_kwargs, generation_mode, batch_size, max_cache_length)
    if generation_config.use_cache is False:
        raise ValueError("RaaS decodes through its cache; use_cache=False is not supported.")
    if generation_config.cache_implementation not in (None, "dynamic"):
        raise ValueError(f"cache_implementation={generation_config.cache_implementation!r} "
                         "conflicts with RaaS, which supplies its own cache; leave it unset.")
    model_kwargs[CACHE_ARG] = RaaSCache(state.config, state.num_layers, max_cache_length)
