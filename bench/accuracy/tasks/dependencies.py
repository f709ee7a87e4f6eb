"""Which earlier token each chain token must read: the task's KV access pattern, as data.

For a problem, `long_reads(problem, spec)` lists (t, s) pairs: the token at position t can
only be produced by a model that sees the token at position s (s < t - 1; reads of the token
just before are local and always held). These are the reads the rules force, one per
operand (families.py):

    the old value (step field 5)    <- the word that last wrote the register: the result of
                                       step k - R, or the prompt fact for k < R
    a copied value (field 8)        <- the previous result (prev) or the prompt fact (fact)
    a named read's carry (field 10) <- the lemma's / note's defining word (its value is never
        and result (field 11)          copied into the chain, so there is no other source)

Everything else in a step (counter digits, names, the operator, the carry and result of a
copied value) depends on the step's own recent tokens only. Positions are absolute (prompt at
0 .. prompt_tokens - 1). What a policy would need to hold follows: see bench/accuracy/
separation.py.
"""

from __future__ import annotations

from bench.accuracy.tasks.families import family, step_kind
from bench.accuracy.tasks.generate import Problem
from bench.accuracy.tasks.spec import TaskSpec

# offsets inside a step's 13 tokens after the counter digits
_OLD, _VAL, _CARRY, _RESULT = 1, 4, 6, 7


def long_reads(problem: Problem, spec: TaskSpec) -> list[tuple[int, int, str]]:
    """(reader position t, read position s, what) for every forced read, in order; what is
    "old", "prev", "fact", "lemma" or "note" (the operand read)."""
    fam, n = family(problem.family), problem.n_steps
    width, start = spec.counter_digits, spec.prompt_tokens

    def field(k: int, offset: int) -> int:
        return start + k * spec.step_tokens + width + offset

    values = list(problem.facts[: spec.registers])
    written_at = [1 + r for r in range(spec.registers)]  # register -> position of its value
    named_at: dict[tuple[str, int], int] = {}
    words = problem.chain.split()
    reads = []
    for k in range(n):
        kind, which = step_kind(fam, k, n, spec)
        reg = k % spec.registers
        old = values[reg]
        reads.append((field(k, _OLD), written_at[reg], "old"))
        if kind == "fact":
            reads.append((field(k, _VAL), 1 + old, "fact"))
        elif kind in ("lemma_read", "note_read"):
            what = kind.split("_")[0]
            src = named_at[(what, which)]
            reads += [(field(k, _CARRY), src, what), (field(k, _RESULT), src, what)]
        elif k > 0:
            reads.append((field(k, _VAL), field(k - 1, _RESULT), "prev"))
        if kind in ("lemma_def", "note_def"):
            named_at[(kind.split("_")[0], which)] = field(k, _RESULT)
        word = words[k * spec.step_tokens + width + _RESULT]
        values[reg] = int(word.rpartition("=")[2])
        written_at[reg] = field(k, _RESULT)
    return [(t, s, what) for t, s, what in reads if s < t - 1]
