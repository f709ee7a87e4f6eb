"""The four task families: which kinds of step a chain holds, and when (generator side).

Every family shares the registers machine of generate.py (step k writes register k % R from
its old value and one more operand, carry first, 13 tokens a step); they differ in where the
second operand comes from, which decides the KV access pattern:

    kind        operand                              long-range read
    prev        the previous step's result           none (local)
    fact        prompt fact chosen by the old value  into the prompt (phoenix)
    lemma_def   as prev; the result is written as    -
                the fused word `k=7` (a lemma)
    lemma_read  the current phase's lemma, fetched   back to the phase's lemma_def, every
                from its `k=7` word (value slot `~`)  other step, for a whole phase
    note_def    as prev; the result is written as    -
                the fused word `o=3` (a note)
    note_read   note number `counter`, fetched       back to step 1..notes: once, after the
                from its word (value slot `~`)        whole chain (dormant all along)

Schedule, first match wins (c = the step's countdown counter, k = its index, N steps):
    1 <= k <= notes                   -> note_def (note k-1)           [recall, mixture]
    k == 0 or c % E == E - 1          -> lemma_def (name by c // E)     [lemmas, mixture]
    c < notes                         -> note_read (note c)             [recall, mixture]
    c % fact_every == 0               -> fact                           [registers, mixture]
    c odd                             -> lemma_read (name by c // E)    [lemmas, mixture]
    otherwise                         -> prev
E = spec.lemma_every; a phase's lemma name is LEMMA_NAMES[(c // E) % 4], so consecutive
phases never share a name. A named read never copies its value into the text (slot `~`), so
the defining word is the only place the value can be read from.

Chain lengths a family can have (`valid_steps`): note families need N >= 2 notes + 2 (the
reads come after the writes); the mixture also rejects N % E in 1..notes, where a phase's
lemma_def step would fall on a note_def step.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.accuracy.tasks.spec import TaskSpec
from bench.accuracy.tasks.vocab import FAMILY_THINK, LEMMA_NAMES


@dataclass(frozen=True)
class Family:
    """Which step kinds a family's chains use; `think` is the prompt's last word."""

    name: str
    phoenix: bool
    lemmas: bool
    notes: bool

    @property
    def think(self) -> str:
        return FAMILY_THINK[self.name]


FAMILIES: dict[str, Family] = {
    "registers": Family("registers", phoenix=True, lemmas=False, notes=False),
    "lemmas": Family("lemmas", phoenix=False, lemmas=True, notes=False),
    "recall": Family("recall", phoenix=False, lemmas=False, notes=True),
    "mixture": Family("mixture", phoenix=True, lemmas=True, notes=True),
}
FAMILY_NAMES = tuple(FAMILIES)


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; choose one of {FAMILY_NAMES}.") from None


def step_kind(fam: Family, k: int, n_steps: int, spec: TaskSpec) -> tuple[str, int]:
    """(kind, name index) of step k: the note number for note kinds, the lemma name's
    index into LEMMA_NAMES for lemma kinds, else 0."""
    c, e = n_steps - 1 - k, spec.lemma_every
    if fam.notes and 1 <= k <= spec.notes:
        return "note_def", k - 1
    if fam.lemmas and (k == 0 or c % e == e - 1):
        return "lemma_def", (c // e) % len(LEMMA_NAMES)
    if fam.notes and c < spec.notes:
        return "note_read", c
    if fam.phoenix and c % spec.fact_every == 0:
        return "fact", 0
    if fam.lemmas and c % 2 == 1:
        return "lemma_read", (c // e) % len(LEMMA_NAMES)
    return "prev", 0


def valid_steps(fam: Family, n_steps: int, spec: TaskSpec) -> bool:
    """Whether a chain of n_steps follows the schedule without collisions (module doc)."""
    if fam.notes and n_steps < 2 * spec.notes + 2:
        return False
    if fam.notes and fam.lemmas and 1 <= n_steps % spec.lemma_every <= spec.notes:
        return False
    return n_steps >= 1


def steps_for(fam: Family, decode_tokens: int, spec: TaskSpec) -> int:
    """The most valid steps whose decode fits in decode_tokens."""
    n = spec.steps_for(decode_tokens)
    while n >= 1 and not valid_steps(fam, n, spec):
        n -= 1
    if n < 1:
        raise ValueError(f"decode_tokens={decode_tokens} fits no valid {fam.name} chain; raise it.")
    return n


def fit_steps(fam: Family, n_steps: int, spec: TaskSpec) -> int:
    """The longest valid chain of at most n_steps steps (at least the shortest valid one)."""
    n = max(n_steps, 2 * spec.notes + 2 if fam.notes else 1)
    while not valid_steps(fam, n, spec):
        n -= 1
    return n
