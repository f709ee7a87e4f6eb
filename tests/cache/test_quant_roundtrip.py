"""quantize -> dequantize stays within each format's error bound, outliers included."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from raas_flex.cache.quant import FP8_MAX, INT8_MAX, QUANT_DTYPES, SCALE_FLOOR, dequantize, \
    quantize

SLACK = 1e-4  # fp32 arithmetic in x * (1/scale) and codes * scale, far below one code step
FP8_REL = 2.0**-4  # e4m3: 3 mantissa bits, half an ulp of a normal value is <= 2^-4 of it
FP8_SUBNORMAL_HALF_STEP = 2.0**-10  # subnormal spacing 2^-9 (in units of the scale)

finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def rows_with_outliers(draw) -> torch.Tensor:
    """[R, D] Gaussian rows at a drawn magnitude, some entries replaced by drawn outliers
    (up to 1e5, any sign), and optionally an all-zero row (an unwritten or padded token)."""
    R, D = draw(st.integers(1, 6)), draw(st.sampled_from((16, 64, 128)))
    magnitude = draw(st.floats(1e-6, 1e3, **finite))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(R, D, generator=gen) * magnitude
    for _ in range(draw(st.integers(0, 4))):
        x.view(-1)[draw(st.integers(0, R * D - 1))] = draw(st.floats(-1e5, 1e5, **finite))
    if draw(st.booleans()):
        x[draw(st.integers(0, R - 1))] = 0.0
    return x


@given(x=rows_with_outliers())
def test_int8_error_is_at_most_half_a_step(x):
    codes, scale = quantize(x, torch.int8)
    absmax = x.abs().amax(-1)
    assert codes.dtype == torch.int8 and scale.dtype == torch.float32
    assert int(codes.abs().max()) <= INT8_MAX
    expected = torch.clamp(absmax / INT8_MAX, min=SCALE_FLOOR)  # symmetric absmax/127
    torch.testing.assert_close(scale, expected, rtol=1e-6, atol=0)
    # |x - x̂| <= scale/2 = absmax/254 per element, whatever the outliers do to absmax.
    error = (dequantize(codes, scale) - x).abs()
    assert bool((error <= scale[:, None] * (0.5 + SLACK)).all())


@given(x=rows_with_outliers())
def test_float8_error_is_relative_plus_subnormal_floor(x):
    codes, scale = quantize(x, torch.float8_e4m3fn)
    assert codes.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(
        scale, torch.clamp(x.abs().amax(-1) / FP8_MAX, min=SCALE_FLOOR), rtol=1e-6, atol=0)
    assert bool(torch.isfinite(codes.float()).all())
    error = (dequantize(codes, scale) - x).abs()
    bound = FP8_REL * x.abs() + FP8_SUBNORMAL_HALF_STEP * scale[:, None]
    assert bool((error <= bound * (1 + SLACK)).all())


@pytest.mark.parametrize("dtype", QUANT_DTYPES)
def test_zero_rows_stay_zero_with_a_finite_log_scale(dtype):
    codes, scale = quantize(torch.zeros(3, 16), dtype)
    assert bool((codes.float() == 0).all()) and bool(torch.isfinite(torch.log(scale)).all())
    assert bool((dequantize(codes, scale) == 0).all())


@pytest.mark.parametrize("dtype", QUANT_DTYPES)
def test_bf16_input_quantizes_as_its_float32_value(dtype):
    """quantize works from x.float(), so a bf16 tensor and its fp32 copy give the same
    codes (the property that makes eager and compiled writes agree bit for bit)."""
    x = torch.randn(4, 8, 64, generator=torch.Generator().manual_seed(0)).bfloat16()
    a, b = quantize(x, dtype), quantize(x.float(), dtype)
    assert torch.equal(a[0].view(torch.uint8), b[0].view(torch.uint8))
    assert torch.equal(a[1], b[1])


def test_other_dtypes_are_refused():
    with pytest.raises(ValueError, match="cannot quantize"):
        quantize(torch.zeros(2, 16), torch.bfloat16)
