"""Vectorised training batches: many train-split problems at once, as token-id arrays.

Why a second generator: training eats ~10^5-10^6 tokens/s, too fast for the per-problem
Python generator. This one follows the same rules (generate.py's docstring) over a batch with
numpy; tests verify its rows with the independent checker. Train split only: rows whose facts
fall in the test partition are resampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.accuracy.tasks.spec import DEFAULT_SPEC, N_FACTS, TEST_MODULUS, TaskSpec
from bench.accuracy.tasks.vocab import (
    ANS, BOS, END_STEP, EOS, EQUALS, FACT_NAMES, MINUS, PLUS, REGISTER_NAMES, THINK,
    WordTokenizer, fact_word,
)


@dataclass(frozen=True)
class Batch:
    """ids [B, T] (pad after <eos>); loss_mask [B, T] True where a target token is scored
    (prediction of ids[:, t] from ids[:, :t]: the chain and answer, not prompt or pad)."""

    ids: np.ndarray
    loss_mask: np.ndarray
    n_steps: np.ndarray  # [B]
    answers: np.ndarray  # [B]


def train_facts(rng: np.random.Generator, batch: int) -> np.ndarray:
    """[B, 10] digits outside the test partition."""
    facts = rng.integers(0, 10, size=(batch, N_FACTS))
    place = np.array([pow(10, N_FACTS - 1 - i, TEST_MODULUS) for i in range(N_FACTS)])
    while True:
        bad = (facts @ place) % TEST_MODULUS == 0
        if not bad.any():
            return facts
        facts[bad] = rng.integers(0, 10, size=(int(bad.sum()), N_FACTS))


def train_batch(
    rng: np.random.Generator, n_steps: np.ndarray, seq_len: int,
    tok: WordTokenizer, spec: TaskSpec = DEFAULT_SPEC,
) -> Batch:
    """One row per entry of n_steps, right-padded to seq_len tokens."""
    n_steps = np.asarray(n_steps, dtype=np.int64)
    batch, n_max = len(n_steps), int(n_steps.max())
    need = spec.prompt_tokens + spec.decode_tokens(n_max)
    if need > seq_len:
        raise ValueError(f"{n_max} steps need {need} tokens; raise seq_len={seq_len}.")
    if n_steps.min() < 1 or n_max > spec.max_steps:
        raise ValueError(f"n_steps must lie in 1..{spec.max_steps}.")
    ids = np.full((batch, seq_len), tok.pad_id, dtype=np.int64)
    facts = train_facts(rng, batch)
    _write_prompt(ids, facts, n_steps, tok, spec)
    answers = _write_chain(ids, facts, n_steps, tok, spec)
    ends = spec.prompt_tokens + n_steps * spec.step_tokens  # [B] position of <ans>
    rows = np.arange(batch)
    ids[rows, ends] = tok.ids[ANS]
    ids[rows, ends + 1] = _digit_ids(tok)[answers]
    ids[rows, ends + 2] = tok.eos_id
    pos = np.arange(seq_len)[None, :]
    loss_mask = (pos >= spec.prompt_tokens) & (pos <= (ends + 2)[:, None])
    return Batch(ids, loss_mask, n_steps, answers)


def _digit_ids(tok: WordTokenizer) -> np.ndarray:
    return np.array([tok.ids[str(d)] for d in range(10)])


def _counter_digits(values: np.ndarray, width: int) -> np.ndarray:
    """[B] ints -> [B, width] decimal digits, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1)
    return (values[:, None] // powers[None, :]) % 10


def _write_prompt(ids, facts, n_steps, tok, spec) -> None:
    digit = _digit_ids(tok)
    ids[:, 0] = tok.bos_id
    for i, name in enumerate(FACT_NAMES):
        words = np.array([tok.ids[fact_word(name, d)] for d in range(10)])
        ids[:, 1 + i] = words[facts[:, i]]
    at = 1 + N_FACTS
    ids[:, at: at + spec.counter_digits] = digit[_counter_digits(n_steps, spec.counter_digits)]
    ids[:, spec.prompt_tokens - 1] = tok.ids[THINK]


def _write_chain(ids, facts, n_steps, tok, spec) -> np.ndarray:
    """Fill every step column-block; rows shorter than the batch's longest are left alone."""
    digit, rows = _digit_ids(tok), np.arange(len(n_steps))
    reg_ids = np.array([tok.ids[r] for r in REGISTER_NAMES])
    fact_ids = np.array([tok.ids[f] for f in FACT_NAMES])
    values = facts[:, : spec.registers].copy()  # [B, R]
    prev = spec.registers - 1
    answers = np.zeros(len(n_steps), dtype=np.int64)
    width = spec.counter_digits
    for k in range(int(n_steps.max())):
        live = k < n_steps
        counter = np.maximum(n_steps - 1 - k, 0)
        reg = k % spec.registers
        old = values[:, reg]
        phoenix = counter % spec.fact_every == 0
        val = np.where(phoenix, facts[rows, old], values[:, prev])
        src = np.where(phoenix, fact_ids[old], reg_ids[prev])
        total = old + val if reg % 2 == 0 else old - val
        res, carry = total % 10, ((total < 0) | (total > 9)).astype(np.int64)
        at = spec.prompt_tokens + k * spec.step_tokens
        block = np.concatenate([
            digit[_counter_digits(counter, width)],
            np.stack([
                np.full_like(old, reg_ids[reg]), digit[old],
                np.full_like(old, tok.ids[PLUS if reg % 2 == 0 else MINUS]),
                src, digit[val], np.full_like(old, tok.ids[EQUALS]), digit[carry], digit[res],
                np.full_like(old, tok.ids[END_STEP]),
            ], axis=1),
        ], axis=1)  # [B, step_tokens]
        ids[live, at: at + spec.step_tokens] = block[live]
        values[:, reg] = np.where(live, res, old)
        answers = np.where(live, res, answers)
        prev = reg
    return answers
