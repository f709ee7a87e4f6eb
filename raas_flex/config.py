"""User-facing configuration: one frozen dataclass, validated at construction."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

import torch

SUPPORTED_PAGE_SIZES = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
IMPORTANCE_RULES = ("top_ratio", "alpha")
SCORE_SOURCES = ("bound", "exact")
ATTENTION_KERNELS = ("flex", "sdpa")
KV_DTYPES = (None, "int8", "float8_e4m3fn")
# Options that read the pool's keys as plain floats (an exact logit pass or an exact
# certificate); with a quantized pool they would need a dequantized copy or a quantization
# slack term that phase 1 does not have.
EXACT_KEY_POLICIES = ("h2o", "recycled", "hsr", "raas_hsr")
# kv_dtype's quantizers (raas_flex/cache/quant.py use private float8 helpers, so the tested
# minor only); the same string is pyproject.toml's pin (a test keeps the two equal).
TORCHAO_REQUIREMENT = "torchao>=0.18,<0.19"
RATIO_MAX_DENOMINATOR = 10**12  # exact_ratio keeps decimals of up to 12 places exactly


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
        ceil(live pages · top_ratio) of a sequence's live pages by score, counted in
        integers with top_ratio read as its decimal (exact_ratio: 0.6 is 3/5); "alpha" marks pages whose
        softmax share of the page bounds (weighted by fill) is at least `alpha`.
    score_source: "bound" uses Quest's min/max upper bound (the paper's page version);
        "exact" uses each page's exact attention mass (a study option, costs one extra pass).
    dense_layers: the first `dense_layers` layers keep every token (Quest keeps 2).
    attention_kernel: "flex" (default) runs decode through FlexAttention block masks;
        "sdpa" attends the identical selection through a materialised boolean mask and
        SDPA, for fast eager CPU runs (eager flex costs ~10 ms a call) and cross-checks.

    Peer policies (each default from its source, or a project choice where the source is
    silent; see raas_flex/policies/<name>.py):
    h2o_recent_ratio: share of the budget's pages kept as H2O's recent window, the rest
        heavy hitters; 0.5 is the paper's 1:1 split.
    streaming_sinks: StreamingLLM sink pages (the paper's 4 sink tokens fit in one page).
    recycled_period: Recycled Attention runs full attention every `recycled_period` steps.
    recycled_pages: pages attended between full steps (besides the pages opened since the
        last full step); None means budget // page_size.
    hsr_epsilon: HSR attends the pages whose bound lies within log(1/hsr_epsilon) of the
        step's largest bound.
    random_seed: seed of the random-eviction baseline.

    kv_dtype: None keeps K/V in the model's dtype; "int8" or "float8_e4m3fn" stores them in
        8 bits with one fp32 scale per token and kv head (symmetric absmax; see
        raas_flex/cache/quant.py). Per token, not per page: it adds 4 bytes per token (3%
        at head_dim 128) but a decode append never re-quantizes a page, and one outlier
        token only coarsens its own row. Measured (CPU, D=128, P=16, relative Frobenius
        error): int8 per token 0.0065 vs per page 0.0083 on Gaussian keys, 0.0065 vs 0.026
        with one 20x token per page; fp8 0.026 either way (a float format barely cares
        about the scale). The page min/max
        summaries stay exact, and attention dequantizes inside flex (score_mod), so the
        pool is never copied to full precision. Needs attention_kernel="flex" and a policy
        that reads pages through their summaries (not those in EXACT_KEY_POLICIES).
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
    h2o_recent_ratio: float = 0.5
    streaming_sinks: int = 1
    recycled_period: int = 10
    recycled_pages: int | None = None
    hsr_epsilon: float = 1e-3
    random_seed: int = 0
    kv_dtype: str | None = None

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
        self._check_peers()
        self._check_kv_dtype()

    def _check_kv_dtype(self) -> None:
        """Refuse storage formats and the option combinations a quantized pool lacks."""
        if self.kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype={self.kv_dtype!r}; choose one of {KV_DTYPES} "
                             "(None keeps the model's dtype).")
        if self.kv_dtype is None:
            return
        check_torchao(f"kv_dtype={self.kv_dtype!r}")
        if self.attention_kernel != "flex":
            raise ValueError(
                f"kv_dtype={self.kv_dtype!r} dequantizes inside FlexAttention; SDPA would need "
                "a full-precision copy of the pool. Use attention_kernel=\"flex\"."
            )
        if self.policy in EXACT_KEY_POLICIES:
            raise ValueError(
                f"policy={self.policy!r} reads exact keys from the pool (exact attention mass "
                f"or HSR's certificate), not supported with kv_dtype={self.kv_dtype!r} yet; "
                "use policy='raas', 'quest', 'streaming' or 'random', or kv_dtype=None."
            )
        if self.policy == "raas" and self.score_source == "exact":
            raise ValueError(
                f"score_source='exact' computes attention mass over the whole pool, not "
                f"supported with kv_dtype={self.kv_dtype!r} yet; use score_source='bound' "
                "(exact summaries) or kv_dtype=None."
            )

    def to_dict(self) -> dict[str, Any]:
        """Every field by name (plain JSON values), for logs and saved settings."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaaSConfig:
        """The config `to_dict` gave (missing fields take their defaults), validated;
        unknown keys raise TypeError naming them, so a typo never falls back silently."""
        check_field_names(data)
        return cls(**data)

    @property
    def top_ratio_fraction(self) -> Fraction:
        """top_ratio as the exact fraction the page count uses (see exact_ratio)."""
        return exact_ratio(self.top_ratio)

    @property
    def kv_storage_dtype(self) -> torch.dtype | None:
        """The torch dtype the pool stores K/V in, None for the model's own dtype."""
        return None if self.kv_dtype is None else getattr(torch, self.kv_dtype)

    def kv_bytes_per_token(self, head_dim: int, dtype: torch.dtype) -> int:
        """Pool bytes one token takes per kv head for K and V together (scales included);
        `dtype` is the model's, used when kv_dtype is None."""
        if self.kv_dtype is None:
            return 2 * head_dim * dtype.itemsize
        return 2 * (head_dim * 1 + 4)  # 8-bit codes plus one fp32 scale per token

    def _check_peers(self) -> None:
        """Validate the peer policies' parameters (all of them, whichever policy is set)."""
        _check_int("streaming_sinks", self.streaming_sinks)
        _check_int("recycled_period", self.recycled_period)
        _check_int("random_seed", self.random_seed)
        if not 0.0 < self.h2o_recent_ratio < 1.0:
            raise ValueError(f"h2o_recent_ratio={self.h2o_recent_ratio} must lie in (0, 1); "
                             "the paper splits heavy:recent 1:1 (0.5).")
        if self.streaming_sinks < 0:
            raise ValueError(f"streaming_sinks={self.streaming_sinks} must be >= 0 pages.")
        if self.policy == "streaming" and self.streaming_sinks > self.slots - 2:
            raise ValueError(
                f"streaming_sinks={self.streaming_sinks} pages leave fewer than 2 of the "
                f"budget's {self.slots} pages for the recent window; lower streaming_sinks "
                f"or raise budget to >= {(self.streaming_sinks + 2) * self.page_size}."
            )
        if self.recycled_period < 1:
            raise ValueError(f"recycled_period={self.recycled_period} must be >= 1 "
                             "(1 = full attention every step).")
        if self.recycled_pages is not None:
            _check_int("recycled_pages", self.recycled_pages)
            if self.recycled_pages < 1:
                raise ValueError(f"recycled_pages={self.recycled_pages} must be >= 1, or None "
                                 "for budget // page_size.")
        if not 0.0 < self.hsr_epsilon < 1.0:
            raise ValueError(f"hsr_epsilon={self.hsr_epsilon} must lie in (0, 1).")
        if self.random_seed < 0:
            raise ValueError(f"random_seed={self.random_seed} must be >= 0.")

    @property
    def slots(self) -> int:
        """Pages an evicting policy's pool holds."""
        return self.budget // self.page_size

    @property
    def recycled_top_pages(self) -> int:
        """Pages Recycled Attention attends between full steps (besides its new pages)."""
        return self.slots if self.recycled_pages is None else self.recycled_pages


def exact_ratio(value: float) -> Fraction:
    """`value` read as the decimal it prints as: 0.6 -> 3/5, not the binary double just
    above 0.6, so ceil(25 · 0.6) is 15 as a user expects. A ratio printing with more than
    12 decimals (1/3 -> 0.3333333333333333) is read as the nearest fraction whose
    denominator is at most RATIO_MAX_DENOMINATOR (1/3)."""
    return Fraction(repr(float(value))).limit_denominator(RATIO_MAX_DENOMINATOR)


def check_field_names(names) -> None:
    """Raise TypeError naming every key of `names` that is not a RaaSConfig field."""
    known = {f.name for f in fields(RaaSConfig)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise TypeError(f"unknown RaaS option(s) {unknown}; valid: {sorted(known)}.")


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
