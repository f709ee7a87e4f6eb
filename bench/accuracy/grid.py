"""One line per policy, correct answers per family at each budget fraction: the compact view
of an accuracy JSON that the READMEs quote (so no figure is copied by hand), O(L)-memory
policies first, then the keep-all ones, as the policy registry classes them.

    python -m bench.accuracy.grid bench/results/accuracy/v2/accuracy_v2.json --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raas_flex.policies import policy_class


def keeps_all(policy: str) -> bool:
    """O(N) memory: the policy's pool holds every token (the registry says so)."""
    return policy_class(policy.split("@")[0]).Options.keeps_all


def cells(rows: list[dict], dtype: str) -> dict[str, dict[tuple[str, float], int]]:
    """policy -> (family, fraction) -> correct answers; keep-all 'dense' rows (fraction 1)
    stand for every fraction."""
    out: dict[str, dict[tuple[str, float], int]] = {}
    for r in rows:
        if r.get("dtype", "bfloat16") != dtype:
            continue
        out.setdefault(r["policy"], {})[(r.get("family") or "registers", r["budget_fraction"])] = \
            int(r["correct"])
    return out


def grid(rows: list[dict], dtype: str) -> str:
    """Markdown: policy x family, each cell 'a / b / c / d' over the fractions (– not run)."""
    table = cells(rows, dtype)
    fams = list(dict.fromkeys(r.get("family") or "registers" for r in rows))
    fracs = sorted({f for c in table.values() for _, f in c if f < 1.0})
    n = max(int(r["n"]) for r in rows)
    head = " / ".join(f"1/{round(1 / f)}" for f in fracs)
    lines = [f"Correct of {n}, {dtype}, at L = {head} of the decode:", "",
             "| policy | memory | " + " | ".join(fams) + " |", "|---|---|" + "---|" * len(fams)]
    for policy in sorted(table, key=lambda p: (keeps_all(p), p)):
        c = table[policy]
        row = [" / ".join(str(c.get((fam, f), c.get((fam, 1.0), "–"))) for f in fracs)
               for fam in fams]
        lines.append(f"| {policy} | {'O(N)' if keeps_all(policy) else 'O(L)'} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path)
    p.add_argument("--dtype", default="bfloat16")
    args = p.parse_args(argv)
    print(grid(json.loads(args.results.read_text())["rows"], args.dtype), end="")


if __name__ == "__main__":
    main()
