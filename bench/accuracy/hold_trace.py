"""Which forced reads find their page held: a policy replayed on the reasoner's own queries.

    python -m bench.accuracy.hold_trace [--family recall] [--fraction 0.25] [--n 8]
                                        [--policies h2o h2o_horizon] [--seed 2] [--out PATH]

Issue 17 asks why a policy misses a cell. The accuracy table says how often an answer is
right; this says, for the reads the task forces (tasks/dependencies.long_reads), whether the
page holding the read token is still in the pool when the model needs it. Each test problem
(prompt plus its correct chain) is run teacher-forced through the trained reasoner once,
recording every layer's post-RoPE queries and keys (page_agreement.record); then each policy
is replayed per layer on those queries and keys through raas_flex's own functional API
(new_layer_cache, prefill, decode_step: the rule the model runs under apply_raas, with
zero values, since no policy here reads V). A read (t, s) is held for a (layer, kv head)
when page s // P is in that pool at the step that attends with the query at t - 1.

Teacher forcing keeps both policies on the same (correct) chain, so the comparison is of
the rules alone; in free generation an early miss changes everything after it. For each
policy and read kind: the share of reads held in every (layer, kv head), in at least one,
and on average; the share held in every head that reads the page under dense attention
(READER_MASS of its attention on the page: the heads the answer depends on); and, per
problem, the first read the policies hold differently, with when each pool evicted it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import torch

import raas_flex as rf
from bench.accuracy.harness.variants import parse_variant
from bench.accuracy.page_agreement import P, record
from bench.accuracy.tasks.dependencies import long_reads

READER_MASS = 0.5  # dense attention share on a page that makes a head its reader


def replay(q: torch.Tensor, k: torch.Tensor, prompt: int, policy_name: str, budget: int,
           positions: set[int]) -> tuple[dict[int, torch.Tensor], dict[tuple, int]]:
    """One layer's pools under `policy_name`, all problems as one batch: q [B, Hq, N, D],
    k [B, H, N, D] (equal prompts and chains). Returns ({position t: page_id [B, H, S]
    after the step that attends with the query at t}, {(problem, kv head, page): position
    at which the page last left that pool})."""
    policy, settings = parse_variant(policy_name)  # a variant: "h2o@h2o_recent_ratio=0.25"
    config = rf.RaaSConfig.from_fields(budget=budget, page_size=P, policy=policy, **settings)
    policy = rf.make_policy(config)
    B, H, N, D = k.shape
    q, k = q.float(), k.float()
    v = torch.zeros_like(k)
    cache = rf.new_layer_cache(config, policy, B, H, D, prompt_tokens=prompt,
                               max_new_tokens=N - prompt)
    rf.prefill(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt], cache, policy)
    snapshots, left = {}, {}
    before = pooled(cache)
    for t in range(prompt, N):
        rf.decode_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], cache, policy,
                       t - prompt + 1)
        now = pooled(cache)
        for key in before - now:
            left[key] = t
        before = now
        if t in positions:
            snapshots[t] = cache.page_id.clone()
    return snapshots, left


def pooled(cache) -> set[tuple[int, int, int]]:
    """(problem, kv head, page) triples held by the pools."""
    return {(b, h, int(p)) for b, heads in enumerate(cache.page_id.tolist())
            for h, row in enumerate(heads) for p in row if p >= 0}


def reading_heads(layers: list[tuple[torch.Tensor, torch.Tensor]], b: int, t: int,
                  page: int) -> torch.Tensor:
    """[layers, H] bool: the (layer, kv head) pairs whose dense attention, from the query
    at t over every token up to t, puts at least READER_MASS on `page` (max over the GQA
    group): the heads that actually read it when nothing is evicted."""
    rows = []
    for q, k in layers:  # q [B, Hq, N, D], k [B, H, N, D]
        H, G = k.shape[1], q.shape[1] // k.shape[1]
        logits = torch.einsum("hgd,hnd->hgn", q[b, :, t].view(H, G, -1), k[b, :, :t + 1])
        weights = torch.softmax(logits / q.shape[-1] ** 0.5, dim=-1)
        mass = weights[..., page * P:(page + 1) * P].sum(-1).amax(-1)  # [H]
        rows.append(mass >= READER_MASS)
    return torch.stack(rows)


def recorded_layers(model_path: str, family: str, n: int, seed: int, decode_tokens: int
                    ) -> tuple[list, object, int, list[tuple[torch.Tensor, torch.Tensor]]]:
    """(problems, spec, prompt tokens, [(q [B, Hq, N, D], k [B, H, N, D]) per layer]): n
    test problems (prompt plus correct chain) teacher-forced through the reasoner, batched
    (their prompts must be equally long). Shared by hold_trace and mass_trace."""
    from bench.accuracy.reasoner import load_checkpoint
    from bench.accuracy.tasks import make_problems

    model, tok, spec = load_checkpoint(model_path)
    problems = make_problems("test", n, decode_tokens, seed=seed, spec=spec, family=family)
    prompt = len(tok.encode(problems[0].prompt))
    per_layer = []  # per problem: [(q [Hq, N, D], k [H, N, D]) per layer]
    for problem in problems:
        prompt_ids = tok.encode(problem.prompt)
        if len(prompt_ids) != prompt:
            raise ValueError("the traces batch problems: their prompts must be equally long")
        per_layer.append(record(model, torch.tensor([prompt_ids + tok.encode(problem.chain)])))
    layers = [(torch.stack([p[i][0] for p in per_layer]), torch.stack([p[i][1] for p in per_layer]))
              for i in range(len(per_layer[0]))]
    return problems, spec, prompt, layers


def trace(model_path: str, family: str, fraction: float, n: int, policies: list[str],
          seed: int, decode_tokens: int) -> dict:
    budget = int(fraction * decode_tokens)
    problems, spec, prompt, layers = recorded_layers(model_path, family, n, seed,
                                                     decode_tokens)
    reads = [[r for r in long_reads(pr, spec) if r[0] - 1 >= prompt] for pr in problems]
    positions = {t - 1 for rs in reads for t, _, _ in rs}
    readers = [[reading_heads(layers, b, t - 1, s // P) for t, s, _ in rs]
               for b, rs in enumerate(reads)]  # [layers, H] bool per read
    totals = {p: defaultdict(lambda: [0, 0, 0.0, 0, 0, 0]) for p in policies}
    runs = {name: [replay(q, k, prompt, name, budget, positions) for q, k in layers]
            for name in policies}
    examples = []
    for b, problem in enumerate(problems):
        first = None
        for (t, s, what), reading in zip(reads[b], readers[b]):
            shares = {}
            for name in policies:
                flags = torch.stack([(snap[t - 1][b] == s // P).any(-1) for snap, _ in runs[name]])
                row = totals[name][what]  # flags: [layers, H]
                row[0] += bool(flags.all())
                row[1] += bool(flags.any())
                row[2] += float(flags.float().mean())
                row[3] += 1
                if reading.any():  # held in every head that reads it under dense attention
                    row[4] += bool(flags[reading].all())
                    row[5] += 1
                shares[name] = float(flags.float().mean())
            if first is None and len(set(shares.values())) > 1:
                H = layers[0][1].shape[1]
                first = dict(problem=problem.index, read=what, reader=t, source=s, page=s // P,
                             held_share=shares,
                             left_at={name: [[left.get((b, h, s // P)) for h in range(H)]
                                             for _, left in runs[name]] for name in policies})
        if first is not None:
            examples.append(first)
    table = {p: {what: dict(all_held=a / c, any_held=m_any / c, mean_held=m / c, reads=c,
                            reader_held=r / max(rc, 1), reads_with_reader=rc)
                 for what, (a, m_any, m, c, r, rc) in rows.items()} for p, rows in totals.items()}
    return dict(model=model_path, family=family, budget_fraction=fraction, budget=budget,
                n=n, seed=seed, decode_tokens=decode_tokens, page_size=P, policies=policies,
                prompt_tokens=prompt, held=table, first_difference=examples)


def trace_parser(doc: str, family: str, fraction: float, n: int,
                 policies: list[str]) -> argparse.ArgumentParser:
    """The trace tools' shared command line, with each tool's defaults."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--model", default="bench/accuracy/checkpoints/reasoner_v2")
    p.add_argument("--family", default=family)
    p.add_argument("--fraction", type=float, default=fraction)
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--policies", nargs="+", default=policies)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--decode-tokens", type=int, default=2048)
    p.add_argument("--out", default=None)
    return p


def run_trace(trace_fn, args: argparse.Namespace, module: str) -> dict:
    """trace_fn on the parsed arguments, the command recorded, the JSON written to --out."""
    result = trace_fn(args.model, args.family, args.fraction, args.n, args.policies,
                      args.seed, args.decode_tokens)
    result["command"] = f"python -m {module} " + " ".join(sys.argv[1:])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


def main(argv=None) -> dict:
    args = trace_parser(__doc__, "recall", 0.25, 8, ["h2o", "h2o_horizon"]).parse_args(argv)
    result = run_trace(trace, args, "bench.accuracy.hold_trace")
    print(f"{args.family}, L = {result['budget']} tokens, {args.n} problems, seed {args.seed}:")
    print("policy        read   all held  any held  mean held  reads  held by readers (of)")
    for name, rows in result["held"].items():
        for what, r in sorted(rows.items()):
            print(f"{name:13s} {what:6s} {r['all_held']:8.3f} {r['any_held']:9.3f} "
                  f"{r['mean_held']:10.3f} {r['reads']:6d}  {r['reader_held']:8.3f} "
                  f"({r['reads_with_reader']})")
    return result


if __name__ == "__main__":
    main()
