"""The task's rules as one frozen dataclass, and the train/test partition of problems.

Disjointness is structural: a problem belongs to the test split iff the ten fact digits, read
as a decimal number, are divisible by TEST_MODULUS. The train sampler rejects every such fact
set, so no test problem (at any chain length or seed) can ever be drawn for training.
Seeds are also drawn from separate streams per split (SPLIT_TAGS), so streams never coincide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bench.accuracy.tasks.vocab import FACT_NAMES, NOTE_NAMES, REGISTER_NAMES

TEST_MODULUS = 13
SPLIT_TAGS = {"train": 1, "test": 2}
N_FACTS = len(FACT_NAMES)


@dataclass(frozen=True)
class TaskSpec:
    """Rules of the chain.

    registers: rotating intermediate registers; step k writes register k % registers from its
        old value (written `registers` steps earlier) and the previous step's result. A result
        is read twice (next step, and `registers` steps later), then overwritten: a milestone.
    fact_every: a step whose countdown counter is a multiple of this reads a prompt fact,
        chosen by the register's old value, instead of the previous result: a phoenix read.
    counter_digits: width of the countdown counter written at the start of each step; the
        chain may have at most 10**counter_digits steps.
    lemma_every: (lemmas, mixture) a phase is the run of steps whose counter has the same
        value of counter // lemma_every; its first step defines the phase's lemma, and its
        odd-counter steps read it (families.py).
    notes: (recall, mixture) steps 1..notes each write a note; the last `notes` steps
        (counter notes-1 .. 0) each read one, once.
    """

    registers: int = 8
    fact_every: int = 5
    counter_digits: int = 4
    lemma_every: int = 100
    notes: int = 4

    def __post_init__(self) -> None:
        for name in ("registers", "fact_every", "counter_digits", "lemma_every", "notes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}.")
        if not 2 <= self.registers <= len(REGISTER_NAMES):
            raise ValueError(f"registers={self.registers}; use 2..{len(REGISTER_NAMES)}.")
        if self.fact_every < 2:
            raise ValueError(f"fact_every={self.fact_every}; use >= 2.")
        if not 1 <= self.counter_digits <= 6:
            raise ValueError(f"counter_digits={self.counter_digits}; use 1..6.")
        if self.lemma_every < 2:
            raise ValueError(f"lemma_every={self.lemma_every}; use >= 2.")
        if not 1 <= self.notes <= len(NOTE_NAMES):
            raise ValueError(f"notes={self.notes}; use 1..{len(NOTE_NAMES)}.")
        if self.notes >= self.lemma_every - 1:
            raise ValueError(f"notes={self.notes} must be < lemma_every - 1={self.lemma_every - 1}.")

    @property
    def prompt_tokens(self) -> int:
        """<bos>, ten `name=digit` facts, the step count's digits, <think>: 16 = one page."""
        return 1 + N_FACTS + self.counter_digits + 1

    @property
    def step_tokens(self) -> int:
        """counter digits, dest, old, op, src, value, =, carry, result, ;"""
        return self.counter_digits + 9

    answer_tokens: ClassVar[int] = 3  # <ans> digit <eos>

    @property
    def max_steps(self) -> int:
        return 10 ** self.counter_digits

    def decode_tokens(self, n_steps: int) -> int:
        """Tokens a correct model generates for a chain of n_steps (answer and <eos> included)."""
        return n_steps * self.step_tokens + self.answer_tokens

    def steps_for(self, decode_tokens: int) -> int:
        """The most steps whose decode fits in decode_tokens."""
        n = (decode_tokens - self.answer_tokens) // self.step_tokens
        if not 1 <= n <= self.max_steps:
            raise ValueError(
                f"decode_tokens={decode_tokens} gives {n} steps; use between "
                f"{self.decode_tokens(1)} and {self.decode_tokens(self.max_steps)} tokens."
            )
        return n


def is_test_facts(digits) -> bool:
    """The partition: fact digits as a decimal number divisible by TEST_MODULUS -> test."""
    return int("".join(str(int(d)) for d in digits)) % TEST_MODULUS == 0


def check_split(split: str) -> None:
    if split not in SPLIT_TAGS:
        raise ValueError(f"split={split!r}; choose one of {sorted(SPLIT_TAGS)}.")


DEFAULT_SPEC = TaskSpec()
