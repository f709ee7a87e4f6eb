"""A word-level tokenizer over the task's fixed vocabulary: one token per word, no downloads.

Why word-level: every value is one digit and every name one letter, so a chain step has a
fixed token count and the decode length is an exact function of the number of steps.
"""

from __future__ import annotations

PAD, BOS, EOS, THINK, ANS = "<pad>", "<bos>", "<eos>", "<think>", "<ans>"
DIGITS = tuple("0123456789")
FACT_NAMES = tuple("abcdefghij")  # ten facts, indexed by a digit on fact steps
REGISTER_NAMES = tuple("stuvwxyz")  # at most eight rotating intermediate registers
PLUS, MINUS, EQUALS, END_STEP = "+", "-", "=", ";"


def fact_word(name: str, digit: int) -> str:
    """A prompt fact is one word, `g=9`: the name and its value in one token, so that a later
    read of fact g is a one-hop lookup (attend to the token that contains g) rather than an
    induction pattern (find g, then take the token after it), which trains far more slowly."""
    return f"{name}={digit}"


FACT_WORDS = tuple(fact_word(n, d) for n in FACT_NAMES for d in range(10))
WORDS: tuple[str, ...] = (
    (PAD, BOS, EOS, THINK, ANS) + DIGITS + FACT_NAMES + REGISTER_NAMES
    + (PLUS, MINUS, EQUALS, END_STEP) + FACT_WORDS
)
VOCAB_SIZE = 192  # embedding rows: WORDS padded to a multiple of 64; extra rows are never seen


class WordTokenizer:
    """Maps whitespace-separated words to ids and back; unknown words raise."""

    def __init__(self, words: tuple[str, ...] = WORDS) -> None:
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique.")
        self.words = tuple(words)
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.bos_id, self.eos_id = self.ids[PAD], self.ids[BOS], self.ids[EOS]
        self.ans_id = self.ids[ANS]

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[w] for w in text.split()]
        except KeyError as err:
            raise ValueError(f"word {err.args[0]!r} is not in the task vocabulary.") from None

    def decode(self, ids, skip_pad: bool = True) -> str:
        """Words joined by spaces; ids past the vocabulary render as <unused:i>."""
        out = []
        for i in (int(x) for x in ids):
            if skip_pad and i == self.pad_id:
                continue
            out.append(self.words[i] if 0 <= i < len(self.words) else f"<unused:{i}>")
        return " ".join(out)
