"""The preallocated paged pool of one layer and its per-slot metadata.

Everything a decode step reads or writes is a tensor of fixed shape, allocated once, so the
step compiles to one graph and replays under CUDA graphs. Eviction only re-labels a slot:
the K/V data of an evicted page is left in place and simply stops being visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raas_flex.cache.quant import is_quantized, torchao_primitives
from raas_flex.masks.decode import pool_blocks
FREE = -1  # page_id of a slot that holds no page
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_dtype(dtype: torch.dtype) -> None:
    """Raise TypeError unless the pool can hold this dtype."""
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"KV dtype {dtype} is not supported; cast the model or tensors to one of "
            f"{[str(d) for d in SUPPORTED_DTYPES]}."
        )


@dataclass
class LayerCache:
    """Paged K/V pool plus metadata for one attention layer.

    Shapes: B batch, H kv heads, S slots, P page size, D head dim.
    A quantized pool (RaaSConfig.kv_dtype) holds 8-bit k/v codes plus k_scale and
    v_logscale; the attention multiplies scores by k_scale and folds log of the V scale into
    the scores (raas_flex.attention.decode), so no full-precision copy is made.
    """

    k: torch.Tensor  # [B, H, S*P, D] model dtype, or int8 / float8_e4m3fn codes
    v: torch.Tensor  # [B, H, S*P, D]
    fill: torch.Tensor  # [B, H, S] int32: tokens written into the slot's page
    visible: torch.Tensor  # [B, H, S] int32: tokens of the slot the last step attended
    timestamp: torch.Tensor  # [B, H, S] int64: last step the page was judged important
    pinned: torch.Tensor  # [B, H, S] bool: never evicted (prompt pages, sinks)
    page_id: torch.Tensor  # [B, H, S] int64: logical page held, FREE if none
    # Summaries in the model's dtype: a min or max of keys in that dtype is one of them,
    # so it is exact (and half the bytes of fp32 for bf16 models, which quest reads per step).
    kmin: torch.Tensor  # [B, H, S, D] model dtype: element-wise min of the page's keys
    kmax: torch.Tensor  # [B, H, S, D] model dtype: element-wise max of the page's keys
    current: torch.Tensor  # [B, H] int64: slot of the page being filled
    length: torch.Tensor  # [B] int64: real tokens seen (prompt + decoded, pads excluded)
    overflow: torch.Tensor  # [] bool: sticky, a keep-all pool ran out of slots
    page_size: int
    policy_state: dict[str, torch.Tensor] = field(default_factory=dict)
    # Quantized pools only (None otherwise); persistent buffers, as score_mod must capture
    # buffers, not tensors computed in the compiled graph. Unwritten tokens: 1 and 0.
    k_scale: torch.Tensor | None = None  # [B, H, S*P] float32: k ≈ codes * k_scale
    v_logscale: torch.Tensor | None = None  # [B, H, S*P] float32: v ≈ codes * exp(v_logscale)
    # The whole pool as a kernel block list, (count [B, H, 1], index [B, H, 1, K] int32,
    # block_pages): what an evicting pool's step attends (masks.listed_block_mask), in
    # kernel blocks of block_pages pages each. Allocated once so a compiled step reads it
    # instead of materialising two constant tensors per step.
    every_slot: tuple[torch.Tensor, torch.Tensor, int] | None = None
    # flex kernel_options for the decode call, chosen on the host at allocation (None:
    # torch's defaults); read by the attention, so a compiled step never queries the device.
    kernel_options: dict | None = None
    # The model's logit rules, fixed per layer (raas_flex.attention.logit_mods): a tanh
    # softcap on q·k·scale and learned per-query-head sink logits [H, G] (GQA-folded).
    softcap: float | None = None
    sinks: torch.Tensor | None = None

    @property
    def quantized(self) -> bool:
        return self.k_scale is not None

    @property
    def num_slots(self) -> int:
        return self.fill.shape[-1]

    @property
    def capacity(self) -> int:
        """Tokens the pool can hold per sequence and kv head."""
        return self.k.shape[2]

    def nbytes(self) -> tuple[int, int]:
        """(bytes of K/V pool, bytes of everything else) held by this layer. A quantized
        pool's per-token scales count as K/V bytes: they are part of the stored values."""
        kv = self.k.nbytes + self.v.nbytes
        if self.quantized:
            kv += self.k_scale.nbytes + self.v_logscale.nbytes
        meta = [self.fill, self.visible, self.timestamp, self.pinned, self.page_id,
                self.kmin, self.kmax, self.current, self.length, self.overflow]
        meta += list(self.policy_state.values())
        return kv, sum(t.nbytes for t in meta)


def allocate_layer_cache(
    batch: int,
    kv_heads: int,
    head_dim: int,
    num_slots: int,
    page_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    kv_dtype: torch.dtype | None = None,
    kernel_options: dict | None = None,
    kernel_block_pages: int = 1,
) -> LayerCache:
    """Allocate an empty pool of `num_slots` pages; it never grows afterwards.

    dtype: the model's dtype; kv_dtype: int8 / float8_e4m3fn to store K/V quantized.
    kernel_block_pages: pages per kernel block when the step lists the whole pool.
    """
    check_dtype(dtype)
    if kv_dtype is not None and not is_quantized(kv_dtype):
        raise TypeError(f"kv_dtype={kv_dtype} is not a quantized storage dtype; pass "
                        "torch.int8, torch.float8_e4m3fn or None.")
    store = dtype if kv_dtype is None else kv_dtype
    if kv_dtype is not None:
        torchao_primitives()  # import torchao now, outside any compiled region
    if num_slots < 1:
        raise ValueError(f"num_slots={num_slots} must be >= 1.")
    if kernel_block_pages < 1:
        raise ValueError(f"kernel_block_pages={kernel_block_pages} must be >= 1.")
    shape = (batch, kv_heads, num_slots)
    tokens = num_slots * page_size

    def meta(dtype_: torch.dtype, value: float | int | bool) -> torch.Tensor:
        return torch.full(shape, value, dtype=dtype_, device=device)

    cache = LayerCache(
        # Zero-filled, never uninitialised: masked-out slots still enter the kernel's
        # arithmetic and a stray NaN there would poison P·V.
        k=torch.zeros(batch, kv_heads, tokens, head_dim, dtype=store, device=device),
        v=torch.zeros(batch, kv_heads, tokens, head_dim, dtype=store, device=device),
        fill=meta(torch.int32, 0),
        visible=meta(torch.int32, 0),
        timestamp=meta(torch.int64, 0),
        pinned=meta(torch.bool, False),
        page_id=meta(torch.int64, FREE),
        kmin=torch.full((*shape, head_dim), float("inf"), dtype=dtype, device=device),
        kmax=torch.full((*shape, head_dim), float("-inf"), dtype=dtype, device=device),
        current=torch.zeros(batch, kv_heads, dtype=torch.int64, device=device),
        length=torch.zeros(batch, dtype=torch.int64, device=device),
        overflow=torch.zeros((), dtype=torch.bool, device=device),
        page_size=page_size,
        kernel_options=kernel_options,
        k_scale=None if kv_dtype is None else torch.ones(batch, kv_heads, tokens, device=device),
        v_logscale=None if kv_dtype is None else torch.zeros(batch, kv_heads, tokens,
                                                             device=device),
    )
    count, index, pages = pool_blocks(cache.visible, None, kernel_block_pages)
    cache.every_slot = (count, index.contiguous(), pages)
    return cache
