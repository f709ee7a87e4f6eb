"""Long chain-of-thought problems with exact answers, over a tiny word vocabulary.

    from bench.accuracy.tasks import make_problems, check
    problems = make_problems("test", count=100, decode_tokens=2048, seed=0)
    verdict = check(problems[0].prompt, generated_text)

    problems = make_problems("test", count=64, decode_tokens=2048, family="lemmas")

See generate.py for the rules, families.py for the four families (registers, lemmas, recall,
mixture), spec.py for the train/test partition, and dependencies.py for which earlier
tokens each step must read.
"""

from bench.accuracy.tasks.batch import Batch, train_batch
from bench.accuracy.tasks.checker import Verdict, check, expected_answer, extract_answer
from bench.accuracy.tasks.families import FAMILIES, FAMILY_NAMES, Family, family, fit_steps
from bench.accuracy.tasks.generate import Problem, make_problem, make_problems
from bench.accuracy.tasks.spec import DEFAULT_SPEC, TaskSpec, is_test_facts
from bench.accuracy.tasks.vocab import VOCAB_SIZE, WordTokenizer

__all__ = [
    "Batch", "DEFAULT_SPEC", "FAMILIES", "FAMILY_NAMES", "Family", "family", "fit_steps", "Problem", "TaskSpec", "VOCAB_SIZE", "Verdict", "WordTokenizer",
    "check", "expected_answer", "extract_answer", "is_test_facts", "make_problem",
    "make_problems", "train_batch",
]
