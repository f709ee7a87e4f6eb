"""RaaSCache: a transformers `Cache` whose layers are raas_flex paged pools (RaaSLayer,
hf/cache_layer.py) for full-attention layers and rings of W tokens (WindowLayer,
hf/window_layer.py) for sliding-window layers."""

from __future__ import annotations

from transformers.cache_utils import Cache

from raas_flex.config import RaaSConfig
from raas_flex.hf.cache_layer import RaaSLayer
from raas_flex.hf.state import raas_state
from raas_flex.hf.window_layer import WindowLayer

__all__ = ["RaaSCache", "RaaSLayer", "WindowLayer", "check_dense_layers"]


def check_dense_layers(config: RaaSConfig, num_layers: int) -> None:
    if config.dense_layers > num_layers:
        raise ValueError(
            f"dense_layers={config.dense_layers} exceeds the model's {num_layers} layers."
        )


class RaaSCache(Cache):
    """One raas_flex pool per decoder layer; the first `config.dense_layers` keep every token.

    max_cache_len: prompt + new tokens; only keep-all layers need it (dense policy or
        dense_layers > 0). generate() fills it from max_length when left None.
    windows: per layer, None (full attention: a paged pool under the policy) or the
        layer's sliding window W (a ring of W tokens, no policy; a window layer among the
        first dense_layers stays a window). None: every layer full attention.
    """

    def __init__(self, config: RaaSConfig, num_layers: int,
                 max_cache_len: int | None = None,
                 windows: list[int | None] | None = None) -> None:
        if not isinstance(config, RaaSConfig):
            raise TypeError(f"config must be a RaaSConfig, got {type(config).__name__}.")
        check_dense_layers(config, num_layers)
        windows = [None] * num_layers if windows is None else list(windows)
        if len(windows) != num_layers:
            raise ValueError(f"windows lists {len(windows)} layers, expected {num_layers}.")
        layers = [RaaSLayer(config, i < config.dense_layers, max_cache_len) if w is None
                  else WindowLayer(config, w, max_cache_len) for i, w in enumerate(windows)]
        super().__init__(layers=layers)
        self.config = config
        self.resets = 0

    @classmethod
    def for_model(cls, model, max_cache_len: int | None = None) -> "RaaSCache":
        """A cache for a model patched by apply_raas, with the model's RaaSConfig."""
        state = raas_state(model)
        return cls(state.config, state.num_layers, max_cache_len, state.windows)

    @property
    def max_cache_len(self) -> int | None:
        return self.layers[0].max_cache_len

    @max_cache_len.setter
    def max_cache_len(self, value: int | None) -> None:
        for layer in self.layers:
            if layer.pool is not None and layer.keeps_all and value is not None \
                    and value > layer.max_cache_len:
                raise ValueError(
                    f"this cache's keep-all pools were sized for {layer.max_cache_len} tokens "
                    f"and cannot grow to {value}; start a new RaaSCache(max_cache_len={value})."
                )
            if layer.pool is None and value is not None:
                # a caller's larger max_cache_len (room for later continuations) is kept
                layer.max_cache_len = max(value, layer.max_cache_len or 0)

    def reset(self) -> None:
        """Clear every layer (see RaaSLayer.reset) to reuse this cache for a new prompt;
        `resets` counts the clears, so a captured CUDA graph over the old pools is not
        replayed (raas_flex.hf.graphs)."""
        super().reset()
        self.resets += 1

    @property
    def is_prefilled(self) -> bool:
        return all(layer.pool is not None for layer in self.layers)

    def check_overflow(self) -> None:
        """Host check of every keep-all pool's sticky overflow flag (outside compiled code)."""
        for layer in self.layers:
            layer.check_overflow()

    def nbytes(self) -> tuple[int, int]:
        """(K/V bytes, metadata bytes) summed over the layers."""
        sizes = [layer.nbytes() for layer in self.layers]
        return sum(s[0] for s in sizes), sum(s[1] for s in sizes)
