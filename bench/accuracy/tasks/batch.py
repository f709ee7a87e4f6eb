"""Vectorised training batches: many train-split problems at once, as token-id arrays.

Why a second generator: training eats ~10^5-10^6 tokens/s, too fast for the per-problem
Python generator. This one follows the same rules (generate.py's and families.py's docstrings)
over a batch with numpy, rows of any mix of families; tests verify its rows with the
independent checker. Train split only: rows whose facts
fall in the test partition are resampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.accuracy.tasks.families import family, valid_steps
from bench.accuracy.tasks.spec import DEFAULT_SPEC, N_FACTS, TEST_MODULUS, TaskSpec
from bench.accuracy.tasks.vocab import (
    ANS, END_STEP, EQUALS, FACT_NAMES, HIDDEN, LEMMA_NAMES, MINUS, NOTE_NAMES, PLUS,
    REGISTER_NAMES, WordTokenizer, fact_word,
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
    tok: WordTokenizer, spec: TaskSpec = DEFAULT_SPEC, families=None,
) -> Batch:
    """One row per entry of n_steps, right-padded to seq_len tokens; `families` names each
    row's task family (default: all registers). Every row's length must be valid for its
    family (families.valid_steps; fit_steps finds one)."""
    n_steps = np.asarray(n_steps, dtype=np.int64)
    batch, n_max = len(n_steps), int(n_steps.max())
    names = ["registers"] * batch if families is None else list(families)
    if len(names) != batch:
        raise ValueError(f"{len(names)} family names for {batch} rows.")
    fams = [family(name) for name in names]
    need = spec.prompt_tokens + spec.decode_tokens(n_max)
    if need > seq_len:
        raise ValueError(f"{n_max} steps need {need} tokens; raise seq_len={seq_len}.")
    if n_steps.min() < 1 or n_max > spec.max_steps:
        raise ValueError(f"n_steps must lie in 1..{spec.max_steps}.")
    bad = [(f.name, int(n)) for f, n in zip(fams, n_steps) if not valid_steps(f, int(n), spec)]
    if bad:
        raise ValueError(f"chain lengths {bad[:3]} are not valid for their family; "
                         f"use families.fit_steps.")
    ids = np.full((batch, seq_len), tok.pad_id, dtype=np.int64)
    facts = train_facts(rng, batch)
    _write_prompt(ids, facts, n_steps, tok, spec, fams)
    answers = _write_chain(ids, facts, n_steps, tok, spec, fams)
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


def _write_prompt(ids, facts, n_steps, tok, spec, fams) -> None:
    digit = _digit_ids(tok)
    ids[:, 0] = tok.bos_id
    for i, name in enumerate(FACT_NAMES):
        words = np.array([tok.ids[fact_word(name, d)] for d in range(10)])
        ids[:, 1 + i] = words[facts[:, i]]
    at = 1 + N_FACTS
    ids[:, at: at + spec.counter_digits] = digit[_counter_digits(n_steps, spec.counter_digits)]
    ids[:, spec.prompt_tokens - 1] = [tok.ids[f.think] for f in fams]


def _kinds(k: int, counter: np.ndarray, flags: dict, spec: TaskSpec) -> dict:
    """[B] bool per step kind at step k (families.py's schedule, first match wins)."""
    e, taken = spec.lemma_every, np.zeros_like(counter, dtype=bool)
    out = {}
    for kind, rule in (
        ("note_def", flags["notes"] & (1 <= k) & (k <= spec.notes)),
        ("lemma_def", flags["lemmas"] & ((k == 0) | (counter % e == e - 1))),
        ("note_read", flags["notes"] & (counter < spec.notes)),
        ("fact", flags["phoenix"] & (counter % spec.fact_every == 0)),
        ("lemma_read", flags["lemmas"] & (counter % 2 == 1)),
    ):
        out[kind] = rule & ~taken
        taken |= rule
    return out


def _write_chain(ids, facts, n_steps, tok, spec, fams) -> np.ndarray:
    """Fill every step column-block; rows shorter than the batch's longest are left alone."""
    digit, rows = _digit_ids(tok), np.arange(len(n_steps))
    reg_ids = np.array([tok.ids[r] for r in REGISTER_NAMES])
    fact_ids = np.array([tok.ids[f] for f in FACT_NAMES])
    lemma_ids = np.array([tok.ids[n] for n in LEMMA_NAMES])
    note_ids = np.array([tok.ids[n] for n in NOTE_NAMES])
    lemma_words = np.array([[tok.ids[fact_word(n, d)] for d in range(10)] for n in LEMMA_NAMES])
    note_words = np.array([[tok.ids[fact_word(n, d)] for d in range(10)] for n in NOTE_NAMES])
    flags = {key: np.array([getattr(f, key) for f in fams]) for key in ("phoenix", "lemmas", "notes")}
    values = facts[:, : spec.registers].copy()  # [B, R]
    lemma_vals = np.zeros((len(n_steps), len(LEMMA_NAMES)), dtype=np.int64)
    note_vals = np.zeros((len(n_steps), len(NOTE_NAMES)), dtype=np.int64)
    prev = spec.registers - 1
    answers = np.zeros(len(n_steps), dtype=np.int64)
    width = spec.counter_digits
    for k in range(int(n_steps.max())):
        live = k < n_steps
        counter = np.maximum(n_steps - 1 - k, 0)
        reg = k % spec.registers
        old = values[:, reg]
        kinds = _kinds(k, counter, flags, spec)
        lemma = (counter // spec.lemma_every) % len(LEMMA_NAMES)  # [B] phase's name index
        note = np.clip(np.where(kinds["note_def"], k - 1, counter), 0, len(NOTE_NAMES) - 1)
        val = np.where(kinds["fact"], facts[rows, old], values[:, prev])
        val = np.where(kinds["lemma_read"], lemma_vals[rows, lemma], val)
        val = np.where(kinds["note_read"], note_vals[rows, note], val)
        src = np.where(kinds["fact"], fact_ids[old], reg_ids[prev])
        src = np.where(kinds["lemma_read"], lemma_ids[lemma], src)
        src = np.where(kinds["note_read"], note_ids[note], src)
        shown = np.where(kinds["lemma_read"] | kinds["note_read"], tok.ids[HIDDEN], digit[val])
        total = old + val if reg % 2 == 0 else old - val
        res, carry = total % 10, ((total < 0) | (total > 9)).astype(np.int64)
        written = np.where(kinds["lemma_def"], lemma_words[lemma, res], digit[res])
        written = np.where(kinds["note_def"], note_words[note, res], written)
        at = spec.prompt_tokens + k * spec.step_tokens
        block = np.concatenate([
            digit[_counter_digits(counter, width)],
            np.stack([
                np.full_like(old, reg_ids[reg]), digit[old],
                np.full_like(old, tok.ids[PLUS if reg % 2 == 0 else MINUS]),
                src, shown, np.full_like(old, tok.ids[EQUALS]), digit[carry], written,
                np.full_like(old, tok.ids[END_STEP]),
            ], axis=1),
        ], axis=1)  # [B, step_tokens]
        ids[live, at: at + spec.step_tokens] = block[live]
        lemma_vals[rows, lemma] = np.where(live & kinds["lemma_def"], res, lemma_vals[rows, lemma])
        note_vals[rows, note] = np.where(live & kinds["note_def"], res, note_vals[rows, note])
        values[:, reg] = np.where(live, res, old)
        answers = np.where(live, res, answers)
        prev = reg
    return answers
