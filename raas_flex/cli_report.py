"""What `raas-flex generate` shows while and after it decodes: the progress bar, the timing
split, the summary lines and the JSON.

The timing splits one generate() at the moments its new tokens reach the host: the prefill,
the first decode steps (torch.compile's one-off work with --compile) and the steady decode,
so tokens/s counts only the last part.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

WARMUP_STEPS = 2  # decode steps timed apart: step 1 compiles (--compile), step 2 may recompile
FLEX_EAGER = "flex_attention called without torch.compile"
FLEX_EAGER_NOTE = ("note: FlexAttention runs eagerly (unfused, slower than compiled); "
                   "--compile compiles the decode step")


class DecodeClock:
    """generate() streamer: the progress bar, and the time each new token reached the host.

    generate() puts the prompt first, then each step's tokens after copying them to the host
    (which waits for the device), so the put() times are the device's step times.
    """

    def __init__(self, total: int, progress: bool) -> None:
        self.bar = tqdm(total=total, unit="tok", desc="decode") if progress else None
        self.start = time.perf_counter()
        self.token_times: list[float] = []
        self.end_time = self.start
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.token_times.append(time.perf_counter())
        if self.bar is not None:
            self.bar.update(1)

    def end(self) -> None:
        self.end_time = time.perf_counter()
        if self.bar is not None:
            self.bar.close()

    def timing(self) -> "Timing":
        return Timing.split(self.start, self.token_times, self.end_time)


@dataclass(frozen=True)
class Timing:
    """One generate()'s wall time in three parts: prefill, warm-up steps, steady decode."""

    prefill_s: float  # generate() called -> first new token (cache setup, prompt forward)
    warmup_steps: int  # the first decode steps (torch.compile's work with --compile)
    warmup_s: float
    decode_steps: int  # the steady decode steps after them: tokens/s counts only these
    decode_s: float
    total_s: float

    @classmethod
    def split(cls, start: float, token_times: list[float], end: float,
              warmup: int = WARMUP_STEPS) -> "Timing":
        """token_times[i]: when new token i reached the host; token 0 comes from the prefill,
        each later one from one decode step. At least one step stays steady if any ran."""
        if not token_times:
            return cls(end - start, 0, 0.0, 0, 0.0, end - start)
        steps = len(token_times) - 1
        warm = min(warmup, max(steps - 1, 0))
        first, settled, last = token_times[0], token_times[warm], token_times[-1]
        return cls(first - start, warm, settled - first, steps - warm, last - settled,
                   end - start)

    def tokens_per_s(self, batch: int) -> float | None:
        if self.decode_steps == 0 or self.decode_s <= 0:
            return None
        return batch * self.decode_steps / self.decode_s


@contextmanager
def warnings_above_bar() -> Iterator[None]:
    """Warnings and transformers' log lines go through tqdm.write (above the bar, never
    through it), and torch's paragraph on eager FlexAttention becomes a one-line note."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        tqdm.write(short_warning(message, category), file=sys.stderr)

    with warnings.catch_warnings(), \
            logging_redirect_tqdm(loggers=[logging.getLogger("transformers")]):
        warnings.showwarning = show
        yield


def short_warning(message: Warning | str, category: type[Warning]) -> str:
    text = str(message)
    if text.startswith(FLEX_EAGER):
        return FLEX_EAGER_NOTE
    return f"{category.__name__}: {text}"


def print_texts(tokenizer, sequences: torch.Tensor) -> None:
    texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
    for i, text in enumerate(texts):
        print(text if len(texts) == 1 else f"[{i}] {text}")


def dense_kv_bytes(model: torch.nn.Module, batch: int, tokens: int, ranks: int = 1) -> int:
    """Bytes a dense cache (K and V of every token, every layer) would hold on one of
    `ranks` tensor-parallel ranks (each holds its share of the kv heads); a sliding-window
    layer holds its last W tokens there too."""
    from raas_flex.hf.layer_kinds import layer_windows

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    itemsize = next(model.parameters()).element_size()
    held = sum(tokens if w is None else min(tokens, w) for w in layer_windows(config))
    return (2 * held * batch * config.num_key_value_heads // ranks * head_dim * itemsize)


def print_summary(summary: dict, table: str) -> None:
    """Timing, the pool's memory against a dense cache, the per-layer table, the JSON."""
    s = summary
    print(f"prefill  {s['prefill_s']:.3f} s  (generate() call to the first token: cache "
          "setup and the prompt's forward)")
    compiling = ": torch.compile traces and builds the step here" if s["compile"] else ""
    print(f"warm-up  {s['warmup_s']:.3f} s  (the first {s['warmup_steps']} decode steps, timed "
          f"apart{compiling})")
    print(decode_line(s))
    print(pool_line(s))
    print(table)
    print(json.dumps(s))


def decode_line(s: dict) -> str:
    where = (f"on {s['device']} ({s['dtype']}, {s['policy']} policy, "
             f"{s['attention_kernel']} kernel{', compiled' if s['compile'] else ''})")
    if s["tokens_per_s"] is None:
        return f"decode   no steady steps to time; raise --max-new-tokens {where}"
    return (f"decode   {s['tokens_per_s']:.1f} tokens/s: {s['decode_steps']} steps x "
            f"{s['batch']} sequence(s) in {s['decode_s']:.2f} s {where}")


def pool_line(s: dict) -> str:
    held, meta, dense = (s[k] / 2**20 for k in ("kv_bytes", "metadata_bytes", "dense_kv_bytes"))
    rooms = sorted({layer["capacity"] for layer in s["stats"]["layers"]})
    room = "/".join(str(r) for r in rooms)
    tokens = s["stats"]["total"]["seen"]
    return (f"KV held  {held:.2f} MiB (+{meta:.2f} MiB metadata), preallocated in full at "
            f"prefill for {room} tokens per sequence, layer and kv head (however many are "
            f"live); a dense cache would hold {dense:.2f} MiB for these {tokens:g} tokens "
            f"({held / max(dense, 1e-12):.1%})")
