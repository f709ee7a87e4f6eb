"""The task generator: right by construction, reproducible, split-disjoint, length-controlled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.accuracy.tasks import (
    DEFAULT_SPEC, VOCAB_SIZE, TaskSpec, WordTokenizer, check, expected_answer, is_test_facts, make_problem,
    make_problems, train_batch,
)
from bench.accuracy.tasks.generate import problem_rng

TOK = WordTokenizer()


@settings(max_examples=40, deadline=None)
@given(
    split=st.sampled_from(["train", "test"]), index=st.integers(0, 10**6),
    seed=st.integers(0, 10**6), n_steps=st.integers(1, 120),
    registers=st.integers(2, 8), fact_every=st.integers(2, 12),
)
def test_answers_agree_with_independent_checker(split, index, seed, n_steps, registers, fact_every):
    spec = TaskSpec(registers=registers, fact_every=fact_every)
    p = make_problem(split, index, n_steps, seed, spec)
    verdict = check(p.prompt, p.chain, registers, fact_every)
    assert verdict.ok and verdict.first_error_step is None
    assert verdict.expected == verdict.answer == p.answer
    assert verdict.steps_checked == n_steps
    assert expected_answer(p.prompt, registers, fact_every) == p.answer


@pytest.mark.parametrize("where", [0, 5, 100, 700, -2])
def test_checker_catches_one_wrong_word(where):
    p = make_problem("test", 1, 60)
    words = p.chain.split()
    i = where % len(words)
    words[i] = "7" if words[i] != "7" else "3"
    verdict = check(p.prompt, " ".join(words))
    assert not verdict.ok
    assert verdict.first_error_step == min(i // DEFAULT_SPEC.step_tokens, 60)


def test_checker_flags_truncated_chain_and_missing_answer():
    p = make_problem("test", 2, 30)
    cut = " ".join(p.chain.split()[: DEFAULT_SPEC.step_tokens * 10])
    assert check(p.prompt, cut).first_error_step == 10
    no_answer = " ".join(p.chain.split()[:-3])
    verdict = check(p.prompt, no_answer)
    assert not verdict.ok and verdict.answer is None and verdict.first_error_step == 30


def test_seeds_reproduce_and_vary():
    a = make_problem("train", 5, 40, seed=3)
    assert a == make_problem("train", 5, 40, seed=3)
    assert a.text != make_problem("train", 6, 40, seed=3).text
    assert a.text != make_problem("train", 5, 40, seed=4).text
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    b1 = train_batch(rng_a, np.array([10, 20]), 300, TOK)
    b2 = train_batch(rng_b, np.array([10, 20]), 300, TOK)
    assert np.array_equal(b1.ids, b2.ids)


def test_train_and_test_are_structurally_disjoint():
    test = make_problems("test", 200, 200, seed=0)
    train = make_problems("train", 400, 200, seed=0)
    assert all(is_test_facts(p.facts) for p in test)
    assert not any(is_test_facts(p.facts) for p in train)
    assert not {p.facts for p in test} & {p.facts for p in train}
    batch = train_batch(np.random.default_rng(0), np.full(4096, 2), 64, TOK)
    for row in batch.ids:
        facts = [int(w.partition("=")[2]) for w in TOK.decode(row[1:11]).split()]
        assert len(facts) == 10 and not is_test_facts(facts)
    # the same (seed, index) draws from different streams in each split
    assert (problem_rng("train", 0, 0).integers(0, 2**62)
            != problem_rng("test", 0, 0).integers(0, 2**62))


@pytest.mark.parametrize("decode_tokens", [1024, 2048, 4096, 16384])
def test_decode_length_is_controlled(decode_tokens):
    (p,) = make_problems("test", 1, decode_tokens, seed=1)
    n = len(p.chain.split())
    assert decode_tokens - DEFAULT_SPEC.step_tokens < n <= decode_tokens
    assert n == DEFAULT_SPEC.decode_tokens(p.n_steps)
    assert check(p.prompt, p.chain).ok
    # the budget L = D/16 leaves at least two decode pages of 16 beside the prompt
    prompt_pages = -(-len(p.prompt.split()) // 16)
    assert decode_tokens // 16 // 16 - prompt_pages >= 2


def test_phoenix_reads_and_milestone_lifetime():
    p = make_problem("test", 4, 200)
    assert p.phoenix_steps == len(range(0, 200, DEFAULT_SPEC.fact_every))
    width = DEFAULT_SPEC.step_tokens
    steps = [p.chain.split()[i: i + width] for i in range(0, 200 * width, width)]
    for k in range(DEFAULT_SPEC.registers, 200):
        # a step's old value is exactly the result written `registers` steps earlier
        assert steps[k][5] == steps[k - DEFAULT_SPEC.registers][11]
    carries = [s[10] for s in steps]
    assert set(carries) == {"0", "1"}


def test_batch_rows_pass_the_checker_and_mask_targets():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 40, size=32)
    batch = train_batch(rng, n, 600, TOK)
    for row, steps, answer, mask in zip(batch.ids, n, batch.answers, batch.loss_mask):
        words = TOK.decode(row).split()
        cut = DEFAULT_SPEC.prompt_tokens
        verdict = check(" ".join(words[:cut]), " ".join(words[cut:]))
        assert verdict.ok and verdict.expected == answer
        assert mask.sum() == DEFAULT_SPEC.decode_tokens(int(steps)) and not mask[:cut].any()


def test_tokenizer_round_trip_and_errors():
    p = make_problem("train", 0, 5)
    assert TOK.decode(TOK.encode(p.text)) == p.text
    assert max(TOK.encode(p.text)) < len(TOK)
    with pytest.raises(ValueError, match="vocabulary"):
        TOK.encode("a 7 Q")
    assert len(TOK) <= VOCAB_SIZE and len(p.prompt.split()) == DEFAULT_SPEC.prompt_tokens == 16
    with pytest.raises(ValueError, match="malformed"):
        check(p.prompt.replace("a=", "b=", 1), p.chain)
    with pytest.raises(ValueError, match="steps"):
        DEFAULT_SPEC.steps_for(5)
    with pytest.raises(ValueError, match="split"):
        make_problem("valid", 0, 5)
    with pytest.raises(ValueError, match="registers"):
        TaskSpec(registers=9)
