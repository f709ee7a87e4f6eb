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
# Task families (families.py): the prompt's last word names the family; registers keeps
# the original <think>, so its problems (and the first checkpoint's scores) are unchanged.
FAMILY_THINK = {"registers": THINK, "lemmas": "<think:lemmas>", "recall": "<think:recall>",
                "mixture": "<think:mixture>"}
LEMMA_NAMES = tuple("klmn")  # decode-time values read for a whole phase (lemmas)
NOTE_NAMES = tuple("opqr")  # decode-time values read once, near the end (recall)
HIDDEN = "~"  # the value slot of a named read: the value is fetched, never copied


def fact_word(name: str, digit: int) -> str:
    """A prompt fact is one word, `g=9`: the name and its value in one token, so that a later
    read of fact g is a one-hop lookup (attend to the token that contains g) rather than an
    induction pattern (find g, then take the token after it), which trains far more slowly."""
    return f"{name}={digit}"


FACT_WORDS = tuple(fact_word(n, d) for n in FACT_NAMES for d in range(10))
# The first 137 words are the original vocabulary in its original order (the first
# checkpoint's ids); the families' words follow.
WORDS: tuple[str, ...] = (
    (PAD, BOS, EOS, THINK, ANS) + DIGITS + FACT_NAMES + REGISTER_NAMES
    + (PLUS, MINUS, EQUALS, END_STEP) + FACT_WORDS
    + tuple(FAMILY_THINK[f] for f in ("lemmas", "recall", "mixture")) + LEMMA_NAMES + NOTE_NAMES
    + (HIDDEN,) + tuple(fact_word(n, d) for n in LEMMA_NAMES + NOTE_NAMES for d in range(10))
)
# Embedding rows of a new model: WORDS padded to a multiple of 64; extra rows are never seen.
# (The first checkpoint has 192 rows over the first 137 words; its config says so.)
VOCAB_SIZE = 256


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
