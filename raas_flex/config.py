"""User-facing configuration: one frozen dataclass, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_PAGE_SIZES = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
IMPORTANCE_RULES = ("top_ratio", "alpha")
SCORE_SOURCES = ("bound", "exact")
ATTENTION_KERNELS = ("flex", "sdpa")


@dataclass(frozen=True)
class RaaSConfig:
    """How a sequence's KV cache is budgeted and which policy fills it.

    budget: tokens a sequence may hold per layer and kv head, its prompt included (as in
        the RaaS paper); a multiple of page_size. Keep-all policies (dense, quest, recycled)
        size their pool from the prompt and max_new_tokens instead and ignore it for memory.
    page_size: tokens per page; one page is one FlexAttention KV block.
    policy: a name registered in raas_flex.policies (see raas_flex.available_policies()).
    keep_prefill: pin the prompt's pages so that no eviction takes them.
    importance: RaaS rule for "this page matters now": "top_ratio" marks the top
        `top_ratio` share of a sequence's live pages by score; "alpha" marks pages whose
        softmax share of the page bounds (weighted by fill) is at least `alpha`.
    score_source: "bound" uses Quest's min/max upper bound (the paper's page version);
        "exact" uses each page's exact attention mass (a study option, costs one extra pass).
    dense_layers: the first `dense_layers` layers keep every token (Quest keeps 2).
    attention_kernel: "flex" (default) runs decode through FlexAttention block masks;
        "sdpa" attends the identical selection through a materialised boolean mask and
        SDPA, for fast eager CPU runs (eager flex costs ~10 ms a call) and cross-checks.
    """

    budget: int = 1024
    page_size: int = 16
    policy: str = "raas"
    keep_prefill: bool = True
    importance: str = "top_ratio"
    top_ratio: float = 0.5
    alpha: float = 1e-4
    score_source: str = "bound"
    dense_layers: int = 0
    attention_kernel: str = "flex"

    def __post_init__(self) -> None:
        from raas_flex.policies import available_policies  # late: policies import config

        _check_int("budget", self.budget)
        _check_int("page_size", self.page_size)
        _check_int("dense_layers", self.dense_layers)
        if self.page_size not in SUPPORTED_PAGE_SIZES:
            raise ValueError(
                f"page_size={self.page_size} is not supported by the FlexAttention decode "
                f"kernel; use one of {SUPPORTED_PAGE_SIZES}."
            )
        if self.budget < self.page_size:
            raise ValueError(
                f"budget={self.budget} is below one page ({self.page_size} tokens); "
                f"use budget >= {self.page_size}."
            )
        if self.budget % self.page_size:
            lower = self.budget - self.budget % self.page_size
            raise ValueError(
                f"budget={self.budget} is not a multiple of page_size={self.page_size}; "
                f"use {lower} or {lower + self.page_size}."
            )
        if self.policy not in available_policies():
            raise ValueError(
                f"unknown policy {self.policy!r}; choose one of {sorted(available_policies())}."
            )
        if self.importance not in IMPORTANCE_RULES:
            raise ValueError(f"importance={self.importance!r}; choose one of {IMPORTANCE_RULES}.")
        if self.score_source not in SCORE_SOURCES:
            raise ValueError(f"score_source={self.score_source!r}; choose one of {SCORE_SOURCES}.")
        if self.attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(
                f"attention_kernel={self.attention_kernel!r}; choose one of {ATTENTION_KERNELS}."
            )
        if not 0.0 < self.top_ratio <= 1.0:
            raise ValueError(f"top_ratio={self.top_ratio} must lie in (0, 1]; the paper uses 0.5.")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha} must lie in (0, 1); the sources use 1e-4.")
        if self.dense_layers < 0:
            raise ValueError(f"dense_layers={self.dense_layers} must be >= 0.")

    @property
    def slots(self) -> int:
        """Pages an evicting policy's pool holds."""
        return self.budget // self.page_size


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")


def check_dtype(dtype: torch.dtype) -> None:
    """Raise TypeError unless the pool can hold this dtype."""
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"KV dtype {dtype} is not supported; cast the model or tensors to one of "
            f"{[str(d) for d in SUPPORTED_DTYPES]}."
        )
