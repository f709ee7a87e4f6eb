"""raas_flex: long-reasoning decode with a fixed KV budget, through FlexAttention masks."""

from raas_flex.config import RaaSConfig
from raas_flex.functional import decode_step, new_layer_cache, prefill
from raas_flex.policies import available_policies, make_policy
from raas_flex.positions import attended_positions, held_positions

__all__ = [
    "RaaSConfig", "attended_positions", "available_policies", "decode_step",
    "held_positions", "make_policy", "new_layer_cache", "prefill",
    "RaaSCache", "apply_raas", "remove_raas", "stats",
]

__version__ = "0.1.0"

# name -> the module that defines it
_HF_NAMES = {"RaaSCache": "raas_flex.hf", "apply_raas": "raas_flex.hf",
             "remove_raas": "raas_flex.hf", "stats": "raas_flex.hf.cache_stats"}


def __getattr__(name: str):
    """The Hugging Face names load on first use, so `import raas_flex` needs no transformers."""
    if name in _HF_NAMES:
        import importlib

        return getattr(importlib.import_module(_HF_NAMES[name]), name)
    raise AttributeError(f"module 'raas_flex' has no attribute {name!r}")
