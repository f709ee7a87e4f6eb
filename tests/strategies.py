"""Hypothesis strategies for layer shapes and prompts."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.layer_harness import Shapes

PAGE_SIZES = (16, 32, 64)


@st.composite
def shapes(draw) -> Shapes:
    return Shapes(
        batch=draw(st.integers(1, 3)),
        kv_heads=draw(st.integers(1, 2)),
        group=draw(st.sampled_from((1, 2, 4, 8))),
        head_dim=draw(st.sampled_from((16, 32, 48, 64, 96, 128))),
    )


@st.composite
def prompt_lengths(draw, batch: int, page_size: int, max_pages: int) -> list[int]:
    """Per-sequence prompt lengths; the longest is never a multiple of the page size."""
    lengths = [draw(st.integers(1, max_pages * page_size)) for _ in range(batch)]
    longest = draw(st.integers(0, max_pages - 1)) * page_size + draw(
        st.integers(1, page_size - 1))
    lengths[draw(st.integers(0, batch - 1))] = longest
    return [min(n, longest) for n in lengths]


# Eager FlexAttention evaluates mask_mod through vmap (~10-50 ms a call on this CPU), the
# "sdpa" kernel attends the same selection in ~0.1 ms: flex examples get fewer steps.
MAX_FLEX_STEPS = 24


@st.composite
def kernel_and_steps(draw, max_steps: int) -> tuple[str, int]:
    kernel = draw(st.sampled_from(("flex", "sdpa")))
    cap = min(max_steps, MAX_FLEX_STEPS) if kernel == "flex" else max_steps
    return kernel, draw(st.integers(1, cap))
