"""An independent checker: recompute a problem's answer from its prompt text alone and verify
a generated chain step by step.

Deliberately shares no code with the generators (only the vocabulary's spelling is common):
it parses words, keeps registers in a dict keyed by name, and re-derives every rule of every
family (the prompt's last word names it) from the prose in families.py, not its code.
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


_THINK = {"<think>": "registers", "<think:lemmas>": "lemmas", "<think:recall>": "recall",
          "<think:mixture>": "mixture"}
_LEMMAS, _NOTES = "klmn", "opqr"


def parse_prompt(prompt: str) -> tuple[dict[str, int], int, int]:
    """-> (facts by name, number of steps, counter width)."""
    words = prompt.split()
    if not words or words[0] != "<bos>" or words[-1] not in _THINK:
        raise ValueError(f"a prompt starts with <bos> and ends with one of {sorted(_THINK)}.")
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


def prompt_family(prompt: str) -> str:
    """The family a prompt asks for, from its last word."""
    last = prompt.split()[-1] if prompt.split() else ""
    if last not in _THINK:
        raise ValueError(f"a prompt ends with one of {sorted(_THINK)}, not {last!r}.")
    return _THINK[last]


def expected_steps(prompt: str, registers: int = 8, fact_every: int = 5,
                   lemma_every: int = 100, notes: int = 4) -> list[list[str]]:
    """The correct chain as a list of steps, each a list of words, for any family: its rules
    written out afresh here (see families.py for the prose)."""
    fam = prompt_family(prompt)
    facts, n, width = parse_prompt(prompt)
    phoenix, lemmas, recall = (fam in ("registers", "mixture"), fam in ("lemmas", "mixture"),
                               fam in ("recall", "mixture"))
    regs = {_REGS[i]: facts[_FACTS[i]] for i in range(registers)}
    named: dict[str, int] = {}
    last = _REGS[registers - 1]
    steps = []
    for index, counter in enumerate(range(n - 1, -1, -1)):
        dest = _REGS[index % registers]
        old = regs[dest]
        phase_name = _LEMMAS[(counter // lemma_every) % len(_LEMMAS)]
        defines = None
        if recall and 0 < index <= notes:
            defines = _NOTES[index - 1]
        elif lemmas and (index == 0 or counter % lemma_every == lemma_every - 1):
            defines = phase_name
        if defines is None and recall and counter < notes:
            src = _NOTES[counter]
            val, shown = named[src], "~"
        elif defines is None and phoenix and counter % fact_every == 0:
            src = _FACTS[old]
            val = facts[src]
            shown = str(val)
        elif defines is None and lemmas and counter % 2:
            src, shown = phase_name, "~"
            val = named[src]
        else:
            src, val = last, regs[last]
            shown = str(val)
        if _REGS.index(dest) % 2 == 0:
            op, carry, res = "+", (old + val) // 10, (old + val) % 10
        else:
            op, carry, res = "-", int(old < val), (old - val + 10) % 10
        result = str(res)
        if defines is not None:
            named[defines] = res
            result = f"{defines}={res}"
        steps.append(list(str(counter).zfill(width))
                     + [dest, str(old), op, src, shown, "=", str(carry), result, ";"])
        regs[dest], last = res, dest
    return steps


def _result_digit(word: str) -> int:
    """A step's result: a digit, or a defining word `k=7`."""
    return int(word.rpartition("=")[2])


def expected_answer(prompt: str, registers: int = 8, fact_every: int = 5,
                    lemma_every: int = 100, notes: int = 4) -> int:
    return _result_digit(expected_steps(prompt, registers, fact_every, lemma_every, notes)[-1][-2])


def extract_answer(output: str) -> int | None:
    """The digit after the first <ans> in generated text, or None."""
    words = output.split()
    if "<ans>" not in words:
        return None
    i = words.index("<ans>")
    return int(words[i + 1]) if i + 1 < len(words) and words[i + 1].isdigit() else None


def check(prompt: str, output: str, registers: int = 8, fact_every: int = 5,
          lemma_every: int = 100, notes: int = 4) -> Verdict:
    """Verify a generated chain (the text after the prompt) against the prompt's rules."""
    steps = expected_steps(prompt, registers, fact_every, lemma_every, notes)
    want = _result_digit(steps[-1][-2])
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
