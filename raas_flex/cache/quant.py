"""8-bit K/V codes with one fp32 scale per token: torchao's affine/float8 primitives.

Symmetric absmax per token (block [1, .., 1, D]): int8 codes in [-127, 127] with
scale = absmax/127; float8_e4m3fn codes with scale = absmax/448 (its largest finite
value). Scales never fall below SCALE_FLOOR, so an all-zero row (an unwritten or padded
token) gets codes 0 and a finite scale, and log(scale) stays finite for the V fold.

The float8 helpers are private in torchao 0.18 (its own fp8 attention prototype uses them
under torch.compile); pyproject pins torchao to that minor version (TORCHAO_REQUIREMENT below).

Always quantized from x.float(): with bf16 input, eager torchao rounds the scale in bf16
while Inductor keeps fp32, and ~6% of int8 codes then differ by one step between eager and
compiled (docs/flex-notes.md, "8-bit pools"); from fp32 they agree bit for bit.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import types

import torch

# kv_dtype's quantizers (below) use torchao's private float8 helpers, so the tested
# minor only); the same string is pyproject.toml's pin (a test keeps the two equal).
TORCHAO_REQUIREMENT = "torchao>=0.18,<0.19"
QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)
INT8_MAX = 127
FP8_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
SCALE_FLOOR = 1e-8  # smallest scale: keeps an all-zero token finite (and its log)


_PRIMITIVES: types.SimpleNamespace | None = None


def torchao_primitives() -> types.SimpleNamespace:
    """torchao's primitives, imported on first use: only a quantized pool needs them, and
    torchao 0.18 on torch 2.13 reports each CUDA-only C++ kernel it cannot load (and a
    deprecated pytree registration); those loggers are quieted for this one import.
    Allocating a quantized pool calls this eagerly, so compiled code only reads a global."""
    global _PRIMITIVES
    if _PRIMITIVES is not None:
        return _PRIMITIVES
    check_torchao("an 8-bit K/V pool")  # the pip line, not a bare ModuleNotFoundError
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        from torchao.quantization import quant_primitives as qp
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    _PRIMITIVES = types.SimpleNamespace(
        MappingType=qp.MappingType, choose_qparams_affine=qp.choose_qparams_affine,
        quantize_affine=qp.quantize_affine, choose_scale_float8=qp._choose_scale_float8,
        quantize_affine_float8=qp._quantize_affine_float8)
    return _PRIMITIVES


def is_quantized(dtype: torch.dtype) -> bool:
    return dtype in QUANT_DTYPES


def quantize(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (codes [..., D] in `dtype`, scale [...] fp32), one scale per row."""
    if dtype not in QUANT_DTYPES:
        raise ValueError(f"cannot quantize to {dtype}; use one of {QUANT_DTYPES}.")
    ao = _PRIMITIVES if _PRIMITIVES is not None else torchao_primitives()
    xf = x.float()
    block = [1] * (xf.ndim - 1) + [xf.shape[-1]]
    if dtype == torch.int8:
        scale, zero = ao.choose_qparams_affine(
            xf, ao.MappingType.SYMMETRIC, block, torch.int8, -INT8_MAX, INT8_MAX,
            eps=SCALE_FLOOR, scale_dtype=torch.float32, keepdim=True)
        codes = ao.quantize_affine(xf, block, scale, zero, torch.int8, -INT8_MAX, INT8_MAX)
        return codes, scale[..., 0]  # symmetric: zero point 0
    scale = ao.choose_scale_float8(xf, block, dtype, hp_value_lb=SCALE_FLOOR * FP8_MAX)
    return ao.quantize_affine_float8(xf, scale, dtype), scale[..., 0]


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes [..., D], scale [...] -> fp32 [..., D]. Tests and references only: the decode
    path never builds this for the pool."""
    return codes.float() * scale[..., None]


def check_torchao(needed_by: str) -> None:
    """Raise ImportError with the pip line unless a supported torchao is installed; checked
    when a config asks for it, so a venv without torchao fails at construction (apply_raas
    time), not with a bare ModuleNotFoundError at the first generate()."""
    from packaging.specifiers import SpecifierSet  # transformers' own dependency

    fix = f'pip install "{TORCHAO_REQUIREMENT}"'
    if importlib.util.find_spec("torchao") is None:
        raise ImportError(f"{needed_by} quantizes K/V with torchao, which is not installed; "
                          f"run: {fix}")
    version = importlib.metadata.version("torchao")
    if not SpecifierSet(TORCHAO_REQUIREMENT.removeprefix("torchao")).contains(version):
        raise ImportError(f"{needed_by} needs {TORCHAO_REQUIREMENT} (its float8 helpers are "
                          f"private and change between minors); torchao {version} is "
                          f"installed; run: {fix}")
