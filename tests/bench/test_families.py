"""The task families: right by construction (independent checker), registers unchanged, the
splits disjoint, and the KV access patterns separating the policies as designed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.accuracy.separation import separation_table
from bench.accuracy.tasks import (
    DEFAULT_SPEC, FAMILIES, FAMILY_NAMES, TaskSpec, WordTokenizer, check, fit_steps,
    is_test_facts, make_problem, make_problems, train_batch,
)
from bench.accuracy.tasks.dependencies import long_reads
from bench.accuracy.tasks.families import valid_steps

TOK = WordTokenizer()


@settings(max_examples=60, deadline=None)
@given(fam=st.sampled_from(FAMILY_NAMES), split=st.sampled_from(["train", "test"]),
       index=st.integers(0, 10**6), n_steps=st.integers(1, 400),
       spec=st.sampled_from([DEFAULT_SPEC, TaskSpec(registers=5, fact_every=3, lemma_every=7,
                                                    notes=2)]))
def test_every_family_agrees_with_the_independent_checker(fam, split, index, n_steps, spec):
    n = fit_steps(FAMILIES[fam], n_steps, spec)
    p = make_problem(split, index, n, 0, spec, fam)
    verdict = check(p.prompt, p.chain, spec.registers, spec.fact_every, spec.lemma_every, spec.notes)
    assert verdict.ok and verdict.answer == p.answer and verdict.steps_checked == n
    assert len(p.chain.split()) == spec.decode_tokens(n)


def test_registers_problems_are_the_original_ones():
    """Digests of the original generator's output (commit 9d6b26f): the first checkpoint
    still meets the same 64 test problems and the same training rows."""
    problems = make_problems("test", 64, 2048, seed=0)
    digest = hashlib.sha256("\n".join(p.text for p in problems).encode()).hexdigest()
    assert digest == "5d29a9e96a4f710f3bd19e60bee752dd0202f483118a21160fd5688e53f6318f"
    b = train_batch(np.random.default_rng(5), np.array([3, 40, 157]), 2176, TOK)
    digest = hashlib.sha256(b.ids.tobytes() + b.loss_mask.tobytes()).hexdigest()
    assert digest == "1b734e697b7d584fadc6c42d0e786bfafc793f1c8426897ec086dbea4945f2ad"


def test_mixed_batches_pass_the_checker_and_keep_the_split():
    rng = np.random.default_rng(3)
    fams = list(rng.choice(FAMILY_NAMES, 48))
    steps = [fit_steps(FAMILIES[f], int(n), DEFAULT_SPEC) for f, n in zip(fams, rng.integers(1, 230, 48))]
    batch = train_batch(rng, np.array(steps), 3072, TOK, families=fams)
    cut = DEFAULT_SPEC.prompt_tokens
    for row, answer, fam in zip(batch.ids, batch.answers, fams):
        words = TOK.decode(row).split()
        assert words[cut - 1] == FAMILIES[fam].think
        verdict = check(" ".join(words[:cut]), " ".join(words[cut:]))
        assert verdict.ok and verdict.expected == answer
        assert not is_test_facts([int(w.partition("=")[2]) for w in words[1:11]])
    with pytest.raises(ValueError, match="fit_steps"):
        train_batch(rng, np.array([5]), 128, TOK, families=["recall"])


@pytest.mark.parametrize("fam", FAMILY_NAMES)
@pytest.mark.parametrize("decode", [2048, 4096, 8192])
def test_decode_lengths_2k_to_8k(fam, decode):
    p = make_problems("test", 1, decode, family=fam)[0]
    assert decode - DEFAULT_SPEC.step_tokens * 3 < len(p.chain.split()) <= decode
    assert is_test_facts(p.facts) and valid_steps(FAMILIES[fam], p.n_steps, DEFAULT_SPEC)


def test_a_wrong_named_value_is_caught():
    p = make_problems("test", 1, 2048, family="lemmas")[0]
    words = p.chain.split()
    i = next(i for i, w in enumerate(words) if w.startswith("k=") or w.startswith("l="))
    name, _, digit = words[i].partition("=")
    words[i] = f"{name}={(int(digit) + 1) % 10}"
    assert check(p.prompt, " ".join(words)).first_error_step == i // DEFAULT_SPEC.step_tokens


def test_named_reads_have_only_their_defining_word_as_source():
    """A lemma / note value is never copied into the chain: its reads point at a defining word."""
    for fam in ("lemmas", "recall"):
        p = make_problems("test", 1, 2048, family=fam)[0]
        words = (p.prompt + " " + p.chain).split()
        named = [(t, s) for t, s, kind in long_reads(p, DEFAULT_SPEC) if kind in ("lemma", "note")]
        assert named and all("=" in words[s] and words[s][0] in "klmnopqr" for _, s in named)
        w = DEFAULT_SPEC.counter_digits
        steps = [p.chain.split()[i: i + 13] for i in range(0, 13 * p.n_steps, 13)]
        named_steps = [st for st in steps if st[w + 3] in "klmnopqr"]
        assert named_steps and all(st[w + 4] == "~" for st in named_steps)


def test_families_separate_the_ideal_policies():
    """The design claims of bench/README, at decode 2048: recency solves registers but not
    lemmas; RaaS's rule with ideal importance solves lemmas; only keep-all solves recall."""
    rows = separation_table(2048, n=4)
    got = {(r["family"], r["oracle"], r["budget_fraction"]): r["answerable"] for r in rows}
    for frac in (1 / 8, 1 / 4, 1 / 2):
        assert got["registers", "streaming", frac] == 1.0
        assert got["lemmas", "streaming", frac] == 0.0
        assert got["lemmas", "raas", frac] == got["lemmas", "guard", frac] == 1.0
        for oracle in ("streaming", "raas", "guard"):
            assert got["recall", oracle, frac] == got["mixture", oracle, frac] == 0.0
    assert all(got[f, "keep_all", frac] == 1.0 for f in FAMILY_NAMES for frac in (1 / 16, 1 / 2))


def test_clairvoyant_bounds_every_ideal_policy():
    """No eviction rule beats the clairvoyant one: wherever an ideal policy answers, it does.
    At L = 1/16 it answers nothing (the forced reads alone overflow the budget), so that
    column of the accuracy table measures answers reached without them."""
    rows = separation_table(2048, n=4)
    got = {(r["family"], r["oracle"], r["budget_fraction"]): r["answerable"] for r in rows}
    for (fam, oracle, frac), share in got.items():
        if oracle != "keep_all":
            assert share <= got[fam, "clairvoyant", frac], (fam, oracle, frac)
    assert all(got[f, "clairvoyant", 1 / 16] == 0.0 for f in FAMILY_NAMES)
    assert all(got[f, "clairvoyant", 1 / 8] == 1.0 for f in FAMILY_NAMES)
