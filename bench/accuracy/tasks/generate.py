"""One problem at a time, from (split, seed, index): the canonical generator.

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

from bench.accuracy.tasks.spec import DEFAULT_SPEC, N_FACTS, SPLIT_TAGS, TaskSpec, check_split, is_test_facts
from bench.accuracy.tasks.vocab import (
    ANS, BOS, END_STEP, EOS, EQUALS, FACT_NAMES, MINUS, PLUS, REGISTER_NAMES, THINK, fact_word,
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
) -> Problem:
    """The problem number `index` of a split and seed, with a chain of n_steps steps."""
    if not 1 <= n_steps <= spec.max_steps:
        raise ValueError(f"n_steps={n_steps}; use 1..{spec.max_steps} for {spec}.")
    facts = sample_facts(problem_rng(split, seed, index), split)
    prompt = render_prompt(facts, n_steps, spec)
    words, answer, phoenix = [], None, 0
    values = list(facts[: spec.registers])  # register contents, by register index
    prev = spec.registers - 1  # the register written just before step 0
    for k in range(n_steps):
        counter = n_steps - 1 - k
        reg = k % spec.registers
        old = values[reg]
        if counter % spec.fact_every == 0:
            src, val = FACT_NAMES[old], facts[old]
            phoenix += 1
        else:
            src, val = REGISTER_NAMES[prev], values[prev]
        op = PLUS if reg % 2 == 0 else MINUS
        total = old + val if op == PLUS else old - val
        res, carry = total % 10, int(not 0 <= total <= 9)
        words += list(f"{counter:0{spec.counter_digits}d}")
        words += [REGISTER_NAMES[reg], str(old), op, src, str(val), EQUALS, str(carry), str(res),
                  END_STEP]
        values[reg], prev, answer = res, reg, res
    words += [ANS, str(answer), EOS]
    return Problem(split, seed, index, facts, n_steps, prompt, " ".join(words), answer, phoenix)


def render_prompt(facts, n_steps: int, spec: TaskSpec = DEFAULT_SPEC) -> str:
    pairs = " ".join(fact_word(name, d) for name, d in zip(FACT_NAMES, facts))
    return f"{BOS} {pairs} {' '.join(f'{n_steps:0{spec.counter_digits}d}')} {THINK}"


def make_problems(
    split: str, count: int, decode_tokens: int, seed: int = 0, spec: TaskSpec = DEFAULT_SPEC,
) -> list[Problem]:
    """`count` problems whose correct decode is at most decode_tokens long (all equal length)."""
    n = spec.steps_for(decode_tokens)
    return [make_problem(split, i, n, seed, spec) for i in range(count)]
