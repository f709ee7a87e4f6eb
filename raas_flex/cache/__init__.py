"""Storage: the preallocated paged K/V pool of one layer and the writes into it."""

from raas_flex.cache.append import append_token, open_page_if_needed
from raas_flex.cache.append_op import open_and_append
from raas_flex.cache.pool import FREE, LayerCache, allocate_layer_cache, check_dtype
from raas_flex.cache.prefill import prompt_lengths, write_prompt
from raas_flex.cache.slots import choose_slot

__all__ = [
    "FREE", "LayerCache", "allocate_layer_cache", "append_token", "check_dtype", "choose_slot",
    "open_and_append", "open_page_if_needed", "prompt_lengths", "write_prompt",
]
