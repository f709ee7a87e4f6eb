"""One problem at a time, from (split, seed, index): the canonical generator, for every task
family (families.py says which steps read what; registers is the original task).

A problem: the prompt states ten facts `a=4` .. `j=7` (one word each) and a step count N. The model writes N
steps, each `c c c c D old op S val = carry res ;` with a countdown counter, then
`<ans> res <eos>`.

    step k (counter N-1-k), D = register k % R, old = D's value (written R steps ago; the
    first R steps read D's initial value, fact number k % R):
      counter % fact_every == 0 -> S = fact letter number `old`, val = that fact  (phoenix)
      otherwise                 -> S = the previous step's register, val = its result
      res = old + val (D's index even) or old - val (odd), mod 10; carry = 1 where the sum
      reached 10 or the difference went below 0, else 0

Why the carry digit: res alone is a Latin square in (old, val), so neither operand by itself
says anything about it and a model sees no gradient toward attending either one until it
attends both (a long plateau). The carry depends on each operand alone, which opens the path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.accuracy.tasks.families import family as get_family
from bench.accuracy.tasks.families import step_kind, steps_for, valid_steps
from bench.accuracy.tasks.spec import DEFAULT_SPEC, N_FACTS, SPLIT_TAGS, TaskSpec, check_split, is_test_facts
from bench.accuracy.tasks.vocab import (
    ANS, BOS, END_STEP, EOS, EQUALS, FACT_NAMES, HIDDEN, LEMMA_NAMES, MINUS, NOTE_NAMES, PLUS,
    REGISTER_NAMES, fact_word,
)


@dataclass(frozen=True)
class Problem:
    """A generated problem; `prompt` and `chain` are space-separated words."""

    split: str
    seed: int
    index: int
    facts: tuple[int, ...]
    n_steps: int
    prompt: str
    chain: str  # the reasoning the model must write, answer and <eos> included
    answer: int
    phoenix_steps: int  # steps that read a prompt fact
    family: str = "registers"

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.chain}"


def problem_rng(split: str, seed: int, index: int) -> np.random.Generator:
    """Independent stream per (split, seed, index); splits never share a stream."""
    check_split(split)
    if seed < 0 or index < 0:
        raise ValueError(f"seed={seed} and index={index} must be >= 0.")
    return np.random.default_rng([SPLIT_TAGS[split], seed, index])


def sample_facts(rng: np.random.Generator, split: str) -> tuple[int, ...]:
    """Ten digits from the split's side of the partition (rejection sampling)."""
    while True:
        facts = tuple(int(d) for d in rng.integers(0, 10, size=N_FACTS))
        if is_test_facts(facts) == (split == "test"):
            return facts


def make_problem(
    split: str, index: int, n_steps: int, seed: int = 0, spec: TaskSpec = DEFAULT_SPEC,
    family: str = "registers",
) -> Problem:
    """The problem number `index` of a split and seed, with a chain of n_steps steps, in one
    of the task families (families.py; registers is the original task, unchanged)."""
    fam = get_family(family)
    if not 1 <= n_steps <= spec.max_steps or not valid_steps(fam, n_steps, spec):
        raise ValueError(f"n_steps={n_steps} is no valid {family} chain for {spec}; "
                         f"see families.valid_steps.")
    facts = sample_facts(problem_rng(split, seed, index), split)
    prompt = render_prompt(facts, n_steps, spec, family)
    words, answer, phoenix = [], None, 0
    values = list(facts[: spec.registers])  # register contents, by register index
    named: dict[str, int] = {}  # lemma and note values, by name
    prev = spec.registers - 1  # the register written just before step 0
    for k in range(n_steps):
        counter = n_steps - 1 - k
        reg = k % spec.registers
        old = values[reg]
        kind, which = step_kind(fam, k, n_steps, spec)
        if kind == "fact":
            src, val, shown = FACT_NAMES[old], facts[old], str(facts[old])
            phoenix += 1
        elif kind in ("lemma_read", "note_read"):
            src = (LEMMA_NAMES if kind == "lemma_read" else NOTE_NAMES)[which]
            val, shown = named[src], HIDDEN
        else:
            src, val, shown = REGISTER_NAMES[prev], values[prev], str(values[prev])
        op = PLUS if reg % 2 == 0 else MINUS
        total = old + val if op == PLUS else old - val
        res, carry = total % 10, int(not 0 <= total <= 9)
        written = str(res)
        if kind in ("lemma_def", "note_def"):
            name = (LEMMA_NAMES if kind == "lemma_def" else NOTE_NAMES)[which]
            named[name], written = res, fact_word(name, res)
        words += list(f"{counter:0{spec.counter_digits}d}")
        words += [REGISTER_NAMES[reg], str(old), op, src, shown, EQUALS, str(carry), written,
                  END_STEP]
        values[reg], prev, answer = res, reg, res
    words += [ANS, str(answer), EOS]
    return Problem(split, seed, index, facts, n_steps, prompt, " ".join(words), answer, phoenix,
                   family)


def render_prompt(facts, n_steps: int, spec: TaskSpec = DEFAULT_SPEC,
                  family: str = "registers") -> str:
    pairs = " ".join(fact_word(name, d) for name, d in zip(FACT_NAMES, facts))
    think = get_family(family).think
    return f"{BOS} {pairs} {' '.join(f'{n_steps:0{spec.counter_digits}d}')} {think}"


def make_problems(
    split: str, count: int, decode_tokens: int, seed: int = 0, spec: TaskSpec = DEFAULT_SPEC,
    family: str = "registers",
) -> list[Problem]:
    """`count` problems whose correct decode is at most decode_tokens long (all equal length)."""
    n = steps_for(get_family(family), decode_tokens, spec)
    return [make_problem(split, i, n, seed, spec, family) for i in range(count)]
