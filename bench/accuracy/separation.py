"""Before any training: can a policy's held set answer a family at budget L at all?

From the forced reads alone (tasks/dependencies.py: token t needs token s), replay the page
pool of an idealised policy over the correct chain and call a problem answerable when every
forced read finds its token held. An idealised policy keeps pages by the rule it is named
after, with perfect knowledge where the rule needs a score:

    keep_all   every page (quest, recycled, hsr, dense: O(N) memory)
    clairvoyant  the best any O(L) policy can do (it knows every future read): answerable
               iff at every step the pages that still hold a future forced read, plus the
               current page, fit in the budget beside the pinned prompt; when they do not,
               no eviction rule whatever can hold every forced read
    streaming  the prompt pages and the newest pages that fill the budget
    raas       RaaS's rule with the ideal importance signal: a page's timestamp is refreshed
               whenever a forced read lands in it; the stalest unpinned page is evicted
    guard      raas_guard's rule: as raas, but the newest `guard` pages are never evicted

A real policy can only do worse than its ideal (its importance scores are estimates, the
model's reads are not exactly the forced ones), so: a family an ideal policy cannot answer
at L is out of reach for that policy at L, whatever the model. The table this prints is the
design check of bench/README ("which policy can solve which family").

    python -m bench.accuracy.separation --decode-tokens 2048 --n 16
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from bench.accuracy.harness.policies import FRACTIONS, budget_tokens
from bench.accuracy.tasks import DEFAULT_SPEC, FAMILY_NAMES, TaskSpec, make_problems
from bench.accuracy.tasks.dependencies import long_reads

ORACLES = ("keep_all", "clairvoyant", "streaming", "raas", "guard")


def answerable(reads: list[tuple[int, int, str]], prompt_tokens: int, end: int, oracle: str,
               budget: int, page_size: int = 16, guard_pages: int = 4) -> tuple[bool, str | None]:
    """(every forced read held?, kind of the first read that is not). `end`: last position."""
    if oracle == "keep_all":
        return True, None
    prompt_pages = -(-prompt_tokens // page_size)
    slots = budget // page_size
    if oracle == "clairvoyant":
        return clairvoyant_fits(reads, prompt_pages, slots - prompt_pages, end, page_size)
    by_reader = defaultdict(list)
    for t, s, kind in reads:
        by_reader[t].append((s, kind))
    held: dict[int, int] = {}  # unpinned page -> timestamp (the step it was opened / last read)
    for t in range(prompt_tokens + 1, end + 1):  # the step whose input is token t - 1
        page = (t - 1) // page_size
        if page >= prompt_pages and page not in held:
            if len(held) + prompt_pages >= slots:
                newest = sorted(held)[-guard_pages:] if oracle == "guard" else []
                if oracle == "streaming":
                    victim = min(held)
                else:
                    victim = min((p for p in held if p not in newest), key=lambda p: (held[p], p))
                del held[victim]
            held[page] = t
        for s, kind in by_reader.get(t, ()):
            p = s // page_size
            if p >= prompt_pages and p not in held:
                return False, kind
            if p in held and oracle in ("raas", "guard"):
                held[p] = t
    return True, None


def clairvoyant_fits(reads: list[tuple[int, int, str]], prompt_pages: int, decode_slots: int,
                     end: int, page_size: int) -> tuple[bool, str | None]:
    """(do the needed pages fit at every step?, when not: the kind of the last read of the
    needed page whose pending reads end soonest). Needed at step t: the current page and
    every decode page, begun before t, that a forced read at t' >= t reads. A page's need
    ends at its last forced read."""
    last_read: dict[int, tuple[int, str]] = {}  # page -> (last reader, kind)
    for t, s, kind in reads:
        p = s // page_size
        if p >= prompt_pages and t >= last_read.get(p, (-1, ""))[0]:
            last_read[p] = (t, kind)
    for t in range(1, end + 1):
        current = (t - 1) // page_size
        if current < prompt_pages:
            continue
        live = [p for p, (last, _) in last_read.items()
                if p * page_size < t <= last and p != current]
        if len(live) + 1 > decode_slots:
            soonest = min(live, key=lambda p: last_read[p][0], default=None)
            return False, None if soonest is None else last_read[soonest][1]
    return True, None


def separation_table(decode_tokens: int = 2048, n: int = 16, spec: TaskSpec = DEFAULT_SPEC,
                     fractions=FRACTIONS, page_size: int = 16, guard_share: float = 0.5) -> list[dict]:
    """Rows {family, oracle, budget_fraction, answerable, first_failures} over n test problems."""
    rows = []
    for fam in FAMILY_NAMES:
        problems = make_problems("test", n, decode_tokens, spec=spec, family=fam)
        reads = [long_reads(p, spec) for p in problems]
        end = spec.prompt_tokens + len(problems[0].chain.split()) - 1
        for frac in fractions:
            budget = budget_tokens(frac, decode_tokens, page_size)
            decode_slots = budget // page_size - -(-spec.prompt_tokens // page_size)
            guard = max(1, int(guard_share * decode_slots))
            for oracle in ORACLES:
                results = [answerable(r, spec.prompt_tokens, end, oracle, budget, page_size, guard)
                           for r in reads]
                fails = defaultdict(int)
                for ok, kind in results:
                    if not ok:
                        fails[kind] += 1
                rows.append({"family": fam, "oracle": oracle, "budget_fraction": frac,
                             "answerable": sum(ok for ok, _ in results) / n,
                             "first_failures": dict(fails)})
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decode-tokens", type=int, default=2048)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--guard-share", type=float, default=0.5,
                   help="guard pages as a share of the decode slots (raas_guard's default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = separation_table(args.decode_tokens, args.n, guard_share=args.guard_share)
    if args.json:
        print(json.dumps(rows, indent=1))
        return rows
    fracs = sorted({r["budget_fraction"] for r in rows})
    print("| family | oracle | " + " | ".join(f"L={f:g}" for f in fracs) + " |")
    print("|---|---|" + "---|" * len(fracs))
    for fam in FAMILY_NAMES:
        for oracle in ORACLES:
            cells = [r["answerable"] for r in rows
                     if r["family"] == fam and r["oracle"] == oracle]
            print(f"| {fam} | {oracle} | " + " | ".join(f"{c:.0%}" for c in cells) + " |")
    return rows


if __name__ == "__main__":
    main()
