"""Hugging Face transformers integration: apply_raas(model) and its RaaSCache."""

from raas_flex.hf.cache import RaaSCache
from raas_flex.hf.patch import apply_raas, raas_state, remove_raas
from raas_flex.hf.support import SUPPORTED_FAMILIES, check_supported

__all__ = ["RaaSCache", "SUPPORTED_FAMILIES", "apply_raas", "check_supported", "raas_state",
           "remove_raas"]
