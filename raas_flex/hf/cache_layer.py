"""RaaSLayer: one RaaSCache layer whose K/V live in a raas_flex paged pool.

Why the layer stores nothing in `update`: scoring pages needs the query, which
`Cache.update(key, value, layer_idx)` never sees. So `update` only passes the new keys and
values through, and the registered attention function (raas_flex.hf.attention) writes the
pool, runs the policy and attends, in one call. A flag catches a RaaSCache used by a model
that was not patched with apply_raas (its attention would silently see only new tokens).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import CacheLayerMixin

from raas_flex.cache import LayerCache, prompt_lengths
from raas_flex.config import RaaSConfig
from raas_flex.functional import new_layer_cache, raise_if_overflowed
from raas_flex.policies import make_policy
from raas_flex.policies.dense import DensePolicy

NOT_PATCHED = (
    "RaaSCache.update ran twice without the RaaS attention function in between: the model "
    "is not patched. Call raas_flex.apply_raas(model) before using a RaaSCache."
)


class RaaSLayer(CacheLayerMixin):
    """One layer's pool, allocated at prefill from the first keys' shape, dtype and device."""

    # False keeps generate() from auto-compiling the whole forward on GPU; apply_raas(
    # compile=True) compiles the decode forward itself.
    is_compileable = False
    is_sliding = False
    supports_early_init = False

    def __init__(self, config: RaaSConfig, dense: bool, max_cache_len: int | None) -> None:
        super().__init__()
        self.config = config
        self.policy = DensePolicy(config) if dense else make_policy(config)
        self.max_cache_len = max_cache_len
        self.pool: LayerCache | None = None
        # 0-d tensors, bumped in place: int state would recompile a compiled step each time.
        self.seen = torch.zeros((), dtype=torch.int64)  # positions fed, pads included (HF's view)
        self.step = torch.ones((), dtype=torch.int64)  # decode step; prompt pages carry 0
        self.awaiting_attention = False

    @property
    def keeps_all(self) -> bool:
        return self.policy.keeps_all

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise NotImplementedError("a RaaS layer is allocated by its first prefill, not early.")

    def allocate(self, key: torch.Tensor, attention_mask: torch.Tensor | None,
                 softcap: float | None = None, sinks: torch.Tensor | None = None) -> None:
        """Size the pool for this prompt: L/P slots, or prompt + max new tokens if keep-all.
        softcap, sinks ([Hq]): the layer's logit rules (raas_flex/attention/logit_mods.py)."""
        B, H, T, D = key.shape
        longest = int(prompt_lengths(attention_mask, B, T, key.device).max())
        max_new = None
        if self.keeps_all:
            if self.max_cache_len is None:
                raise ValueError(
                    f"layer uses the keep-all policy {self.policy.name!r}, whose pool is sized "
                    "from the total length: call generate() with max_new_tokens/max_length, or "
                    "pass RaaSCache(..., max_cache_len=prompt + new tokens)."
                )
            max_new = max(self.max_cache_len - T, 1)
        self.pool = new_layer_cache(self.config, self.policy, B, H, D, longest, max_new,
                                    key.dtype, key.device, softcap, sinks)
        self._allocated(key)

    def _allocated(self, key: torch.Tensor) -> None:
        """What transformers reads of a layer, once its pool exists."""
        B, H, _, _ = key.shape
        self.seen = self.seen.to(key.device)
        self.step = self.step.to(key.device)
        self.keys, self.values = self.pool.k, self.pool.v
        self.batch_size, self.num_heads = B, H
        self.dtype, self.device = key.dtype, key.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args,
               **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if self.awaiting_attention:
            raise RuntimeError(NOT_PATCHED)
        self.awaiting_attention = True
        return key_states, value_states

    def get_seq_length(self) -> torch.Tensor | int:
        return self.seen if self.is_initialized else 0

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        if self.pool is None:
            return query_length, 0
        return self.pool.capacity, 0

    def get_max_length(self) -> int:
        return self.pool.capacity if self.pool is not None else -1

    def check_overflow(self) -> None:
        if self.pool is not None and self.keeps_all:
            raise_if_overflowed(self.pool)

    def nbytes(self) -> tuple[int, int]:
        """(K/V pool bytes, metadata bytes), 0 before prefill."""
        if self.pool is None:
            return 0, 0
        kv, meta = self.pool.nbytes()
        return kv, meta + self.seen.nbytes + self.step.nbytes

    def reset(self) -> None:
        """Clear: back to the pre-prefill state, so the next prompt allocates a fresh pool
        (its batch size and length may differ). The 0-d counters are zeroed in place, at
        the addresses a compiled step reads; the pool itself is dropped."""
        self.pool = None
        self.keys = self.values = None
        self.seen.zero_()
        self.step.fill_(1)
        self.awaiting_attention = False
        self.is_initialized = False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError(_UNSUPPORTED.format(op="reorder_cache (beam search)"))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(_UNSUPPORTED.format(op="crop (assisted/prompt-lookup decoding)"))

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError(_UNSUPPORTED.format(op="batch_repeat_interleave"))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError(_UNSUPPORTED.format(op="batch_select_indices"))


_UNSUPPORTED = (
    "RaaSCache does not support {op}: an evicted page cannot be restored. Use greedy or "
    "sampling generate() (num_beams=1, no assistant), or remove_raas(model) for that mode."
)
