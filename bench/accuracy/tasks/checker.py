"""An independent checker: recompute a problem's answer from its prompt text alone and verify
a generated chain step by step.

Deliberately shares no code with the generators (only the vocabulary's spelling is common):
it parses words, keeps registers in a dict keyed by name, and re-derives every rule.
"""

from __future__ import annotations

from dataclasses import dataclass

_FACTS = "abcdefghij"
_REGS = "stuvwxyz"


@dataclass(frozen=True)
class Verdict:
    """ok: the whole chain and answer are right. first_error_step: index of the first wrong or
    missing step (None when the chain is right); answer: what the text states after <ans>."""

    ok: bool
    expected: int
    answer: int | None
    first_error_step: int | None
    steps_checked: int


def parse_prompt(prompt: str) -> tuple[dict[str, int], int, int]:
    """-> (facts by name, number of steps, counter width)."""
    words = prompt.split()
    if not words or words[0] != "<bos>" or words[-1] != "<think>":
        raise ValueError("a prompt starts with <bos> and ends with <think>.")
    facts = {}
    for i, word in enumerate(words[1:11]):
        name, _, value = word.partition("=")
        if name != _FACTS[i] or not value.isdigit():
            raise ValueError(f"fact {i} malformed: {word!r} (want {_FACTS[i]}=<digit>).")
        facts[name] = int(value)
    counter = words[11:-1]
    if not counter or not all(w.isdigit() for w in counter):
        raise ValueError("the step count's digits must follow the facts.")
    return facts, int("".join(counter)), len(counter)


def expected_steps(prompt: str, registers: int = 8, fact_every: int = 5) -> list[list[str]]:
    """The correct chain as a list of steps, each a list of words."""
    facts, n, width = parse_prompt(prompt)
    regs = {_REGS[i]: facts[_FACTS[i]] for i in range(registers)}
    last = _REGS[registers - 1]
    steps = []
    for counter in range(n - 1, -1, -1):
        dest = _REGS[(n - 1 - counter) % registers]
        old = regs[dest]
        if counter % fact_every:
            src, val = last, regs[last]
        else:
            src = _FACTS[old]
            val = facts[src]
        if _REGS.index(dest) % 2 == 0:
            op, carry, res = "+", (old + val) // 10, (old + val) % 10
        else:
            op, carry, res = "-", int(old < val), (old - val + 10) % 10
        steps.append(list(str(counter).zfill(width))
                     + [dest, str(old), op, src, str(val), "=", str(carry), str(res), ";"])
        regs[dest], last = res, dest
    return steps


def expected_answer(prompt: str, registers: int = 8, fact_every: int = 5) -> int:
    return int(expected_steps(prompt, registers, fact_every)[-1][-2])


def extract_answer(output: str) -> int | None:
    """The digit after the first <ans> in generated text, or None."""
    words = output.split()
    if "<ans>" not in words:
        return None
    i = words.index("<ans>")
    return int(words[i + 1]) if i + 1 < len(words) and words[i + 1].isdigit() else None


def check(prompt: str, output: str, registers: int = 8, fact_every: int = 5) -> Verdict:
    """Verify a generated chain (the text after the prompt) against the prompt's rules."""
    steps = expected_steps(prompt, registers, fact_every)
    want = int(steps[-1][-2])
    words = output.split()
    first_error, pos = None, 0
    for i, step in enumerate(steps):
        if words[pos: pos + len(step)] != step:
            first_error = i
            break
        pos += len(step)
    got = extract_answer(output)
    tail_ok = first_error is None and words[pos:pos + 3] == ["<ans>", str(want), "<eos>"]
    if first_error is None and not tail_ok:
        first_error = len(steps)
    checked = first_error if first_error is not None else len(steps)
    return Verdict(tail_ok, want, got, first_error, checked)
