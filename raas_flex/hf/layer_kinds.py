"""Each decoder layer's attention kind, read from the model's config, never from its name.

None: full causal attention (the layer gets the RaaS policy); an int W: a sliding window of
W tokens, the query itself included (transformers' sliding_window_overlay keeps kv > q - W).
The fields: `layer_types` ("full_attention" / "sliding_attention" per layer; Gemma 2/3,
gpt-oss, Qwen2 derive it from sliding_window_pattern / max_window_layers /
use_sliding_window), else `sliding_window` for every layer (Mistral). Any other layer type
(chunked, linear, recurrent...) is refused with its name.
"""

from __future__ import annotations

FULL, SLIDING = "full_attention", "sliding_attention"


def layer_windows(config) -> list[int | None]:
    """Per layer: None (full attention) or its window W in tokens. Raises ValueError for
    attention this library cannot reproduce exactly."""
    kind = getattr(config, "model_type", "?")
    n = int(config.num_hidden_layers)
    _refuse_other_patterns(config, kind)
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False:
        window = None  # Qwen2-style switch: the window field is present but off
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 1):
        raise ValueError(f"{kind}: config.sliding_window={window!r} is not a token count.")
    types = getattr(config, "layer_types", None)
    if types is None:
        return [window] * n
    if len(types) != n:
        raise ValueError(f"{kind}: config.layer_types lists {len(types)} layers, the model "
                         f"has {n}.")
    windows = []
    for i, layer_type in enumerate(types):
        if layer_type == FULL:
            windows.append(None)
        elif layer_type == SLIDING and window is not None:
            windows.append(window)
        elif layer_type == SLIDING:
            raise ValueError(f"{kind}: layer {i} is {SLIDING!r} but config.sliding_window is "
                             "None; set the window the checkpoint was trained with.")
        else:
            raise ValueError(
                f"{kind}: layer {i} is {layer_type!r}; RaaS supports softmax attention layers "
                f"of type {FULL!r} and {SLIDING!r} only (chunked, linear or recurrent layers "
                "keep state this library does not reproduce)."
            )
    return windows


def _refuse_other_patterns(config, kind: str) -> None:
    chunk = getattr(config, "attention_chunk_size", None)
    if chunk is not None:
        raise ValueError(f"{kind}: config.attention_chunk_size={chunk} (chunked attention) is "
                         "not supported; only full and sliding-window layers are.")
    if getattr(config, "use_bidirectional_attention", False):
        raise ValueError(f"{kind}: use_bidirectional_attention=True is not causal decoding; "
                         "RaaS budgets a causal decoder's cache.")
