"""The kernel calls: FlexAttention (or SDPA) over what the masks select, the quantized
pool's score_mod, the decode kernel options and a CPU Inductor workaround. Masks live in
raas_flex/masks/, score_mods in score_mods.py, as attention-gym keeps them apart."""

from raas_flex.attention.decode import attend_visible, fold_gqa
from raas_flex.attention.kernel_options import (
    HOPPER_DECODE_OPTIONS, device_block_pages, device_kernel_options,
)
from raas_flex.attention.prefill import attend_prompt
from raas_flex.attention.workarounds import materialised_on_cpu

__all__ = [
    "HOPPER_DECODE_OPTIONS", "attend_prompt", "attend_visible", "device_block_pages",
    "device_kernel_options",
    "fold_gqa", "materialised_on_cpu",
]
