"""Hugging Face transformers integration: apply_raas(model) and its RaaSCache."""

from raas_flex.hf.cache import RaaSCache
from raas_flex.hf.patch import apply_raas, remove_raas
from raas_flex.hf.state import raas_state
from raas_flex.hf.families import FAMILIES
from raas_flex.hf.support import check_supported

__all__ = ["RaaSCache", "FAMILIES", "apply_raas", "check_supported", "raas_state",
           "remove_raas"]
