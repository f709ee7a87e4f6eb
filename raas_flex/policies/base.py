"""The narrow interface every policy implements (score, update, select, eviction_key), and
the options dataclass each policy declares for its own settings and capabilities."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Protocol

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.masks.decode import chosen_blocks

# (count [B, H, 1], index [B, H, 1, K]) int32 naming pages, or with a third entry, the pages
# per kernel block (masks.listed_block_mask's block_pages)
Blocks = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, int]


class ConfigView(Protocol):
    """What policies and pool sizing read of a RaaSConfig. raas_flex.config builds on the
    policies (their registry and options), so they see it through this view only."""

    policy: str
    budget: int
    page_size: int
    keep_prefill: bool
    importance: str
    top_ratio: float
    alpha: float
    score_source: str
    options: PolicyOptions

    @property
    def slots(self) -> int: ...

    @property
    def top_ratio_fraction(self) -> Fraction: ...


@dataclass(frozen=True)
class PolicyOptions:
    """A policy's own settings, with its source's defaults; `RaaSConfig.options` holds the
    chosen policy's. A subclass validates its fields in `__post_init__`, checks rules that
    involve the core config in `check`, and states its capabilities as class flags.

    Flat spelling: `apply_raas(model, policy="streaming", streaming_sinks=2)` and
    `RaaSConfig.from_fields(...)` route `<prefix><field>` to the chosen policy's options.
    """

    prefix: ClassVar[str] = ""
    keeps_all: ClassVar[bool] = False  # pool holds every token (sized from prompt + new)
    # Reads the pool's keys as plain floats (exact logits or an exact certificate), so a
    # quantized pool (kv_dtype) would need a dequantized copy: refused with kv_dtype.
    reads_exact_keys: ClassVar[bool] = False
    # Its scores follow the layer's logit softcap and attention sinks (page_bound and
    # page_mass apply them); False where a certificate assumes plain q·k·scale logits.
    follows_logit_mods: ClassVar[bool] = True
    # Each kv head's decisions read only that head's queries, keys and state, so a cache
    # over a slice of the heads decides as that slice of a full cache does: tensor
    # parallelism (heads sharded over GPUs) then needs no collective. A policy that pools
    # scores across heads sets this False and is refused under tensor parallelism.
    per_kv_head: ClassVar[bool] = True

    def check(self, config: ConfigView) -> None:
        """Refuse settings that do not fit the core config (budget, page_size, ...)."""

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """{flat name: field name}, e.g. {"streaming_sinks": "sinks"}."""
        return {cls.prefix + f.name: f.name for f in dataclasses.fields(cls)}

    def flat(self) -> dict[str, object]:
        """This instance's settings under their flat names."""
        return {flat: getattr(self, name) for flat, name in self.flat_names().items()}


def check_int(name: str, value: object, minimum: int | None = None, why: str = "") -> None:
    """TypeError unless `value` is an int (bool is not), ValueError below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}{why}.")


def check_float(name: str, value: object) -> None:
    """TypeError unless `value` is a real number (an int is; bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {value!r}.")


class Policy:
    """Decisions for one layer's cache, as pure tensor code (no host sync, no branching on
    tensor values), so the whole decode step compiles into one graph.

    At prefill the engine calls `on_prefill` once. Per decode step it calls, in order:
    `fused_step`, and where it gives None, `eviction_key` (only used if a page must be
    opened), `on_open`, then, after the new token is appended, `score`, `update` and
    `select`. Subclasses override what they need; the defaults are "dense".
    """

    name: ClassVar[str] = "base"
    Options: ClassVar[type[PolicyOptions]] = PolicyOptions

    def __init__(self, config: ConfigView) -> None:
        self.config = config
        # A dense layer's DensePolicy runs under another policy's config: its own defaults.
        options = config.options
        self.options = options if type(options) is self.Options else self.Options()

    @property
    def keeps_all(self) -> bool:
        """The pool holds every token; the policy never evicts."""
        return self.Options.keeps_all

    def init_state(self, cache: LayerCache) -> None:
        """Allocate per-slot policy tensors in `cache.policy_state` (once, at prefill)."""

    def on_prefill(self, q: torch.Tensor, cache: LayerCache,
                   lengths: torch.Tensor) -> None:
        """See the prompt's queries q [B, Hq, T, D] (left-padded; `lengths` [B] real
        tokens) once the prompt is written: eager, before any decode step."""

    def fused_step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   cache: LayerCache, step: torch.Tensor, scale: float) -> Blocks | None:
        """The whole bookkeeping of a step (open, append, score, update, select, write
        cache.visible) as one op, where the policy has one that takes this cache (decided on
        static facts: device, dtype, shapes); returns the block list to attend. None: the
        step calls the stages below one by one. q [B, H, G, D], k, v [B, H, 1, D]."""
        return None

    def eviction_key(self, cache: LayerCache, step: torch.Tensor) -> torch.Tensor | None:
        """[B, H, S]: lower is evicted first; None for a keep-all policy."""
        return None

    def on_open(self, cache: LayerCache, opened: torch.Tensor, step: torch.Tensor) -> None:
        """Reset per-slot state where `opened` ([B, H, S] bool) starts a new page."""

    def score(self, q: torch.Tensor, cache: LayerCache, scale: float) -> torch.Tensor | None:
        """Per-slot scores for the current query q [B, H, G, D]; [B, H, S] or None."""
        return None

    def update(self, cache: LayerCache, scores: torch.Tensor | None, step: torch.Tensor) -> None:
        """Update timestamps / accumulated statistics from this step's scores."""

    def select(self, cache: LayerCache, scores: torch.Tensor | None,
               step: torch.Tensor) -> torch.Tensor:
        """Tokens of each slot to attend this step, [B, H, S] int32 (a prefix of the page)."""
        return cache.fill

    def select_blocks(self, cache: LayerCache, scores: torch.Tensor | None,
                      step: torch.Tensor) -> tuple[torch.Tensor, Blocks]:
        """`select`, plus the attention kernel's block list: (count, index) naming every
        page the selection makes visible (masks.listed_block_mask). `attend_blocks`, or
        where it gives None, the selected pages themselves (masks.chosen_blocks: a prefix
        sum and a binary search over page flags, O(S log S), no sort). A policy whose
        selection writes cache.visible itself returns that tensor (the step then does not
        copy it again)."""
        visible = self.select(cache, scores, step)
        blocks = self.attend_blocks(cache)
        return visible, chosen_blocks(visible > 0) if blocks is None else blocks

    def attend_blocks(self, cache: LayerCache) -> Blocks | None:
        """An evicting pool holds at most the budget: list all of it, a constant of the
        graph (no per-step compaction; unselected pages are masked by `visible`). A
        keep-all pool: None (list the selection), since listing all of it would read
        O(N)."""
        return None if self.keeps_all else cache.every_slot
