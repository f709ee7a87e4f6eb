"""apply_raas / remove_raas: route a transformers model's attention through raas_flex.

Everything apply_raas changes is recorded in one RaaSState on the model and undone by
remove_raas: the attention implementation name, one forward pre-hook per attention module
(it hands the cache to the attention function, which transformers never passes it), an
instance-level override of generate()'s cache preparation, and, with compile=True, a
dispatching forward. Nothing is patched at import time.
"""

from __future__ import annotations

import functools
import types

import torch
from transformers import AttentionInterface
from transformers.generation.configuration_utils import GenerationMode
from transformers.masking_utils import AttentionMaskInterface

from raas_flex.config import RaaSConfig
from raas_flex.hf.attention import (ATTN_NAME, CACHE_KWARG, NO_WEIGHTS, raas_attention,
                                    raas_mask)
from raas_flex.hf.cache import RaaSCache, check_dense_layers
from raas_flex.hf.compat import CACHE_ARG, cache_argument
from raas_flex.hf.compiled import CompiledDecode
from raas_flex.hf.state import STATE_ATTR, RaaSState, raas_state
from raas_flex.functional import check_logit_mods
from raas_flex.hf.layer_kinds import layer_windows
from raas_flex.hf.support import check_supported, logit_rules
from raas_flex.hf.tensor_parallel import check_tensor_parallel
from raas_flex.policies import make_policy

GENERATE_HOOK = "_prepare_cache_for_generation"
SUPPORTED_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)


def apply_raas(model: torch.nn.Module, config: RaaSConfig | None = None, *,
               compile: bool = False, cuda_graph: bool = False,
               **overrides) -> torch.nn.Module:
    """Make `model.generate()` decode with a fixed per-sequence KV budget; returns `model`.

    config: a RaaSConfig (None: RaaSConfig()'s defaults); keyword overrides of any of its
    fields (budget, page_size, policy, top_ratio, kv_dtype, ...) or of the chosen policy's
    options by their flat names (streaming_sinks=2, ...) win over it and are validated like
    the config itself (RaaSConfig.with_fields). compile=True compiles the decode forward (fullgraph,
    static shapes); cuda_graph=True (with compile, a CUDA model) also captures that step once
    per generate() call and replays it as a CUDA graph. Unsupported models raise here.
    """
    config = _make_config(config, overrides)
    _check_cuda_graph(model, compile, cuda_graph)
    if hasattr(model, STATE_ATTR):
        raise ValueError("apply_raas was already applied to this model; call "
                         "remove_raas(model) first to change its settings.")
    num_layers = check_supported(model)
    if getattr(model.config, "output_attentions", False):
        raise ValueError("model.config.output_attentions is True; set it to False first. "
                         + NO_WEIGHTS)
    check_dense_layers(config, num_layers)
    softcap, sinks = logit_rules(model)
    check_logit_mods(config, make_policy(config), softcap is not None, sinks)
    check_tensor_parallel(model, config)
    modules = attention_modules(model, num_layers)
    register_interfaces()
    state = RaaSState(config, num_layers, model.config._attn_implementation,
                      windows=layer_windows(model.config))
    model.set_attn_implementation(ATTN_NAME)
    if model.config._attn_implementation != ATTN_NAME:
        raise ValueError(f"{type(model).__name__} does not let transformers set its attention "
                         "implementation, so RaaS cannot route its attention.")
    hook = functools.partial(_pass_cache, num_layers=num_layers)
    state.hooks = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
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


def _make_config(config: RaaSConfig | None, overrides: dict) -> RaaSConfig:
    """`config` (or the defaults) with `overrides` applied and validated."""
    if config is None:
        config = RaaSConfig()
    elif not isinstance(config, RaaSConfig):
        raise TypeError(f"apply_raas's second argument is a RaaSConfig, got "
                        f"{type(config).__name__} {config!r}; pass options by name, e.g. "
                        f"apply_raas(model, budget={config!r}).")
    return config.with_fields(**overrides) if overrides else config


def _check_cuda_graph(model: torch.nn.Module, compile: bool, cuda_graph: bool) -> None:
    """Refuse cuda_graph where it can never run, before anything is patched."""
    if not cuda_graph:
        return
    if not compile:
        raise ValueError("cuda_graph=True replays the compiled decode step; pass compile=True "
                         "as well.")
    device = getattr(model, "device", None)
    if device is None or torch.device(device).type != "cuda":
        raise ValueError(f"cuda_graph=True captures CUDA graphs, but the model is on {device}; "
                         "move it first (model.to('cuda')), or use apply_raas(..., "
                         "cuda_graph=False) there.")


def _pass_cache(module: torch.nn.Module, args: tuple, kwargs: dict, *,
                num_layers: int) -> tuple[tuple, dict]:
    """Forward pre-hook: the attention function gets the cache under CACHE_KWARG, once it
    is known to hold one layer per decoder layer (checked before any layer writes)."""
    cache = cache_argument(kwargs)
    if isinstance(cache, RaaSCache) and len(cache.layers) != num_layers:
        raise ValueError(
            f"this RaaSCache has {len(cache.layers)} layers, but the model has {num_layers}; "
            f"build it for this model with RaaSCache.for_model(model) (or RaaSCache(config, "
            f"{num_layers})), or pass none and generate() makes one."
        )
    kwargs[CACHE_KWARG] = cache
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
    model_kwargs[CACHE_ARG] = RaaSCache(state.config, state.num_layers, max_cache_length,
                                        state.windows)
