"""The bridge to FlexAttention: selections and prompts as BlockMasks (and, for the
"sdpa" kernel, as the equivalent boolean tensors)."""

from raas_flex.masks.decode import (
    chosen_blocks, decode_block_mask, listed_block_mask, pool_blocks,
    visible_tokens_mask_mod,
)
from raas_flex.masks.dense import visible_token_mask
from raas_flex.masks.prefill import (
    causal_padding_mask, causal_padding_mask_mod, prefill_block_mask,
)
from raas_flex.masks.window import ring_block_mask, ring_mask_mod, ring_token_mask

__all__ = [
    "causal_padding_mask", "causal_padding_mask_mod", "chosen_blocks", "decode_block_mask",
    "listed_block_mask", "pool_blocks", "ring_block_mask", "ring_mask_mod", "ring_token_mask",
    "prefill_block_mask", "visible_token_mask", "visible_tokens_mask_mod",
]
