"""User-facing configuration: one frozen dataclass, validated at construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch

from raas_flex.cache.quant import check_torchao
from raas_flex.policies import PolicyOptions, available_policies, option_owners, policy_class
from raas_flex.policies.base import check_int
from raas_flex.policies.raas import RaaSPolicy

SUPPORTED_PAGE_SIZES = (16, 32, 64, 128)
# kernel_block_pages: powers of two, so that a kernel block (page_size · pages) is one too
BLOCK_PAGES = (1, 2, 4, 8)
IMPORTANCE_RULES = ("top_ratio", "alpha")
SCORE_SOURCES = ("bound", "exact")
ATTENTION_KERNELS = ("flex", "sdpa")
KV_DTYPES = (None, "int8", "float8_e4m3fn")
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
        that reads pages through their summaries (its options' reads_exact_keys is False).
    options: the chosen policy's own settings, an instance of its Options dataclass
        (e.g. StreamingOptions(sinks=2) for policy="streaming"); None means the policy's
        defaults. RaaSConfig.from_fields(policy="streaming", streaming_sinks=2) and
        apply_raas take the same settings under flat names.
    kernel_options: FlexAttention kernel_options for the decode call; None means the
        measured default for the device (raas_flex/attention/kernel_options.py).
    kernel_block_pages: pages per FlexAttention kv block when an evicting policy's step
        lists its whole pool (wider blocks let the kernel read wider tiles); None means the
        measured default for the device. The dense policy lists its held prefix in the same
        blocks; the other keep-all policies list the single pages they select.
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
    kv_dtype: str | None = None
    options: PolicyOptions | None = None
    kernel_options: dict | None = field(default=None, hash=False)
    kernel_block_pages: int | None = None

    def __post_init__(self) -> None:
        check_int("budget", self.budget)
        check_int("page_size", self.page_size)
        check_int("dense_layers", self.dense_layers)
        if self.kernel_block_pages is not None and self.kernel_block_pages not in BLOCK_PAGES:
            raise ValueError(f"kernel_block_pages={self.kernel_block_pages!r}; use one of "
                             f"{BLOCK_PAGES}, or None for the device's measured default.")
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
        self._set_options()
        self._check_kv_dtype()

    def _set_options(self) -> None:
        """The chosen policy's options (its defaults if None), checked against the core."""
        options_class = policy_class(self.policy).Options
        if self.options is None:
            object.__setattr__(self, "options", options_class())
        elif type(self.options) is not options_class:
            raise TypeError(f"policy={self.policy!r} takes options={options_class.__name__}"
                            f"(...), got {type(self.options).__name__}.")
        self.options.check(self)

    @classmethod
    def from_fields(cls, **fields) -> RaaSConfig:
        """A config from flat names: the core fields plus the chosen policy's options
        (policy="streaming", streaming_sinks=2 -> options=StreamingOptions(sinks=2))."""
        core = {f.name for f in dataclasses.fields(cls)}
        policy = fields.get("policy", cls.policy)
        options_class = policy_class(policy).Options
        flat = options_class.flat_names()
        chosen = {flat[name]: fields.pop(name) for name in list(fields) if name in flat}
        owners = option_owners()
        foreign = sorted(set(fields) & set(owners))
        if foreign:
            raise TypeError(f"{foreign[0]} is an option of policy {owners[foreign[0]]}, not of "
                            f"{policy!r}; drop it or pick that policy.")
        unknown = sorted(set(fields) - core)
        if unknown:
            raise TypeError(f"unknown RaaS option(s) {unknown}; valid: {sorted(core | set(flat))}.")
        if chosen:
            if fields.get("options") is not None:
                raise TypeError("pass the policy's settings as options= or by their flat "
                                "names, not both.")
            fields["options"] = options_class(**chosen)
        return cls(**fields)

    def with_fields(self, **overrides) -> RaaSConfig:
        """This config with flat `overrides` (core fields or the policy's options) applied
        and validated; a new policy starts from its own options' defaults."""
        data = self.to_dict()
        if overrides.get("policy", self.policy) != self.policy or "options" in overrides:
            for name in self.options.flat_names():
                data.pop(name)
        return type(self).from_fields(**{**data, **overrides})

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
        if self.options.reads_exact_keys:
            fine = [name for name in available_policies()
                    if not policy_class(name).Options.reads_exact_keys]
            raise ValueError(
                f"policy={self.policy!r} reads exact keys from the pool (exact attention mass "
                f"or HSR's certificate), not supported with kv_dtype={self.kv_dtype!r} yet; "
                f"use policy={' / '.join(map(repr, fine))}, or kv_dtype=None."
            )
        if issubclass(policy_class(self.policy), RaaSPolicy) and self.score_source == "exact":
            raise ValueError(
                f"score_source='exact' computes attention mass over the whole pool, not "
                f"supported with kv_dtype={self.kv_dtype!r} yet; use score_source='bound' "
                "(exact summaries) or kv_dtype=None."
            )

    def to_dict(self) -> dict[str, Any]:
        """Every setting by its flat name (plain JSON values): the core fields and the
        policy's options (streaming_sinks=...), for logs and saved settings."""
        core = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "options"}
        return {**core, **self.options.flat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RaaSConfig:
        """The config `to_dict` gave (missing fields take their defaults), validated;
        unknown keys raise TypeError naming them, so a typo never falls back silently."""
        return cls.from_fields(**data)

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

    @property
    def slots(self) -> int:
        """Pages an evicting policy's pool holds."""
        return self.budget // self.page_size


def exact_ratio(value: float) -> Fraction:
    """`value` read as the decimal it prints as: 0.6 -> 3/5, not the binary double just
    above 0.6, so ceil(25 · 0.6) is 15 as a user expects. A ratio printing with more than
    12 decimals (1/3 -> 0.3333333333333333) is read as the nearest fraction whose
    denominator is at most RATIO_MAX_DENOMINATOR (1/3)."""
    return Fraction(repr(float(value))).limit_denominator(RATIO_MAX_DENOMINATOR)
