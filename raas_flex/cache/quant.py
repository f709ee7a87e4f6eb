"""8-bit K/V codes with one fp32 scale per token: torchao's affine/float8 primitives.

Symmetric absmax per token (block [1, .., 1, D]): int8 codes in [-127, 127] with
scale = absmax/127; float8_e4m3fn codes with scale = absmax/448 (its largest finite
value). Scales never fall below SCALE_FLOOR, so an all-zero row (an unwritten or padded
token) gets codes 0 and a finite scale, and log(scale) stays finite for the V fold.

The float8 helpers are private in torchao 0.18 (its own fp8 attention prototype uses them
under torch.compile); pyproject pins torchao to that minor version.

Always quantized from x.float(): with bf16 input, eager torchao rounds the scale in bf16
while Inductor keeps fp32, and ~6% of int8 codes then differ by one step between eager and
compiled (docs/plans/issue6-quantized-pool.md §1); from fp32 they agree bit for bit.
"""

from __future__ import annotations

import logging

import torch

# torchao 0.18 on torch 2.13 logs a warning for each CUDA-only C++ kernel it cannot load and
# one for a deprecated pytree registration. The Python primitives used here need neither, so
# that one import runs with those two loggers quieted; their levels are restored after.
_quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
_levels = [log.level for log in _quiet]
for _log in _quiet:
    _log.setLevel(logging.ERROR)
try:
    from torchao.quantization.quant_primitives import (  # noqa: E402
        MappingType, _choose_scale_float8, _quantize_affine_float8, choose_qparams_affine,
        quantize_affine,
    )
finally:
    for _log, _level in zip(_quiet, _levels):
        _log.setLevel(_level)

QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)
INT8_MAX = 127
FP8_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
SCALE_FLOOR = 1e-8  # smallest scale: keeps an all-zero token finite (and its log)


def is_quantized(dtype: torch.dtype) -> bool:
    return dtype in QUANT_DTYPES


def quantize(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (codes [..., D] in `dtype`, scale [...] fp32), one scale per row."""
    if dtype not in QUANT_DTYPES:
        raise ValueError(f"cannot quantize to {dtype}; use one of {QUANT_DTYPES}.")
    xf = x.float()
    block = [1] * (xf.ndim - 1) + [xf.shape[-1]]
    if dtype == torch.int8:
        scale, zero = choose_qparams_affine(
            xf, MappingType.SYMMETRIC, block, torch.int8, -INT8_MAX, INT8_MAX,
            eps=SCALE_FLOOR, scale_dtype=torch.float32, keepdim=True)
        codes = quantize_affine(xf, block, scale, zero, torch.int8, -INT8_MAX, INT8_MAX)
        return codes, scale[..., 0]  # symmetric: zero point 0
    scale = _choose_scale_float8(xf, block, dtype, hp_value_lb=SCALE_FLOOR * FP8_MAX)
    return _quantize_affine_float8(xf, scale, dtype), scale[..., 0]


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes [..., D], scale [...] -> fp32 [..., D]. Tests and references only: the decode
    path never builds this for the pool."""
    return codes.float() * scale[..., None]


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A uint8 view of 8-bit codes: CPU index_put_/gather do not take float8 tensors."""
    return t.view(torch.uint8) if is_quantized(t.dtype) else t
