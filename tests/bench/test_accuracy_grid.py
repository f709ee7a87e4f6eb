"""bench.accuracy.grid: counts land in the right cell; dense stands for every fraction."""

from bench.accuracy.grid import grid


def _row(family, policy, fraction, correct, dtype="bfloat16"):
    return {"family": family, "policy": policy, "budget_fraction": fraction, "correct": correct,
            "n": 64, "dtype": dtype}


def test_grid_places_each_count_and_skips_other_dtypes():
    rows = [_row("registers", "dense", 1.0, 64), _row("lemmas", "dense", 1.0, 63),
            _row("registers", "raas", 0.25, 10), _row("registers", "raas", 0.5, 50),
            _row("lemmas", "raas", 0.5, 7), _row("registers", "raas", 0.5, 1, "float32")]
    text = grid(rows, "bfloat16")
    assert "L = 1/4 / 1/2" in text
    assert "| raas | O(L) | 10 / 50 | – / 7 |" in text
    assert "| dense | O(N) | 64 / 64 | 63 / 63 |" in text
    assert text.index("| raas |") < text.index("| dense |")  # O(L) rows first
