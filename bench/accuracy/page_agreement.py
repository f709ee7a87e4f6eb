"""Page rule vs token rule for the reasoning peers (issue 20), on real queries and keys.

    python -m bench.accuracy.page_agreement [--budgets 256 512] [--out PATH]

The trained reasoner (bench/accuracy/checkpoints/reasoner) reads one test problem, prompt
plus its correct 1k-token chain, teacher-forced; every layer's post-RoPE queries and keys
are recorded. At checkpoints n (a multiple of the page size), each source's token rule and
raas_flex's page rule pick what to keep (rkv, lazy_eviction) or attend (lessismore) from
the same tokens with the same token budget L, in float64 on the CPU:

* rkv: one compression of the whole prefix to L tokens. Token rule: R-KV's code (the
  window's softmax over all but the window, max-pool of 7 along positions, redundancy
  with the 0.5-threshold "keep the latest neighbour" rule, lambda 0.1). Page rule: the
  policy's (max-pool inside pages, no threshold rule, page sums).
* lazy_eviction: last / MRI tracked over every step with nothing evicted, then one
  eviction to L. Token rule: per query head, token weights >= 1e-4. Page rule: per kv
  head, a page's largest weight over its tokens and the group.
* lessismore: the selection of L tokens for the query at n. Token rule: exact logits per
  query head, token top-k, interleaved union, 25 % recent with 4 sinks. Page rule: the
  policy's (page bounds per query head, interleaved pages, recent pages and a sink page).

Reported per policy, averaged over layers, kv heads (and query heads where the token rule
is per query head) and checkpoints: `token_recall` = share of the token rule's tokens the
page rule also keeps; `mass_token` / `mass_page` / `mass_random` = share of the dense
attention of the next 32 queries (lessismore: of the query at n) that falls on the
tokens kept by the token rule, the page rule, and by random whole pages of the same count
besides the forced ones (the baseline). Writes bench/results/accuracy/page_agreement_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

P = 16
FUTURE = 32  # queries after a checkpoint whose attention mass is measured
LAMBDA, WINDOW, KERNEL = 0.1, 8, 7  # R-KV
ALPHA, LAZY_WINDOW = 1e-4, 175  # LazyEviction
TOP_RATIO, SINK_TOKENS = 0.75, 4  # LessIsMore


def record(model, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(q [Hq, N, D], k [H, N, D]) float64 per layer] of one teacher-forced forward."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def recorder(module, query, key, value, attention_mask, **kwargs):
        seen[module.layer_idx] = (query[0].double(), key[0].double())
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("page_agreement_recorder", recorder)
    model.set_attn_implementation("page_agreement_recorder")
    with torch.no_grad():
        model(ids)
    return [seen[i] for i in sorted(seen)]


def future_mass(q: torch.Tensor, k: torch.Tensor, n: int, kept: torch.Tensor,
                group: int, queries: range) -> float:
    """Mean over query heads of the group and `queries` of the dense softmax mass that
    positions <= n in `kept` ([n+1] bool) receive, relative to all positions <= n."""
    total = 0.0
    for s in queries:
        logits = q[:, s] @ k[:, : s + 1].T / math.sqrt(k.shape[-1])  # [G, s+1]
        probs = torch.softmax(logits, -1)[:, : n + 1]
        total += float((probs[:, kept].sum(-1) / probs.sum(-1)).mean())
    return total / len(queries)


def random_pages(count: int, candidates: list[int], gen: torch.Generator) -> set[int]:
    order = torch.randperm(len(candidates), generator=gen).tolist()
    return {candidates[i] for i in order[:count]}


def tokens_of(pages: set[int], n: int) -> torch.Tensor:
    kept = torch.zeros(n + 1, dtype=torch.bool)
    for p in pages:
        kept[p * P: min((p + 1) * P, n + 1)] = True
    return kept


def top_pages(scores: dict[int, float], count: int) -> set[int]:
    return set(sorted(scores, key=lambda p: (-scores[p], p))[:max(count, 0)])


# --- R-KV ---------------------------------------------------------------------------

def rkv_token_keep(q: torch.Tensor, k: torch.Tensor, n: int, budget: int) -> torch.Tensor:
    """R-KV's code on one kv head: keep `budget` of tokens 0..n. [n+1] bool."""
    keys = k[: n + 1]
    window_q = q[:, n + 1 - WINDOW: n + 1]  # [G, W, D]
    logits = (window_q @ keys.T / math.sqrt(k.shape[-1])).amax(0)  # [W, n+1]
    attn = torch.softmax(logits[:, : -WINDOW], -1).mean(0)
    attn = F.max_pool1d(attn[None, None], KERNEL, stride=1, padding=KERNEL // 2)[0, 0]
    unit = keys / (keys.norm(dim=-1, keepdim=True) + 1e-8)
    sim = unit @ unit.T
    sim.fill_diagonal_(0.0)
    index = torch.arange(n + 1)
    latest = torch.where(sim > 0.5, index, 0).amax(-1)  # each row's latest close neighbour
    sim[index, latest] = 0.0
    redundancy = torch.softmax(sim.mean(0), -1)[: -WINDOW]
    score = attn * LAMBDA - redundancy * (1 - LAMBDA)
    kept = torch.zeros(n + 1, dtype=torch.bool)
    kept[score.topk(budget - WINDOW).indices] = True
    kept[n + 1 - WINDOW:] = True
    return kept


def rkv_page_scores(q: torch.Tensor, k: torch.Tensor, n: int) -> dict[int, float]:
    """The rkv policy's page scores of pages 0..n//P (all full)."""
    keys = k[: n + 1]
    window_q = q[:, n + 1 - WINDOW: n + 1]
    logits = (window_q @ keys.T / math.sqrt(k.shape[-1])).amax(0)
    attn = torch.softmax(logits, -1).mean(0).view(-1, P)
    attn = F.max_pool1d(attn[:, None], KERNEL, stride=1, padding=KERNEL // 2)[:, 0]
    unit = keys / (keys.norm(dim=-1, keepdim=True) + 1e-8)
    mean = (unit @ unit.sum(0) - (unit * unit).sum(-1)) / (n + 1)
    redundancy = torch.softmax(mean, -1).view(-1, P)
    page = (LAMBDA * attn - (1 - LAMBDA) * redundancy).sum(-1)
    return dict(enumerate(page.tolist()))


def rkv_case(q, k, n, budget, group, gen) -> dict:
    token = rkv_token_keep(q, k, n, budget)
    forced = {n // P}
    scores = rkv_page_scores(q, k, n)
    pages = forced | top_pages({p: s for p, s in scores.items() if p not in forced},
                               budget // P - len(forced))
    rand = forced | random_pages(budget // P - len(forced), sorted(set(scores) - forced), gen)
    return measure(q, k, n, token, tokens_of(pages, n), tokens_of(rand, n), group)


# --- LazyEviction -------------------------------------------------------------------

def lazy_states(q: torch.Tensor, k: torch.Tensor, prompt: int, n: int, group: int):
    """(last, mri) per query head and token [G, n+1], and per page [n//P+1] (page rule:
    max over the group and the page's tokens), tracked over decode steps prompt..n."""
    G = group
    last = torch.zeros(G, n + 1)
    mri = torch.zeros(G, n + 1)
    pages = n // P + 1
    plast = torch.zeros(pages)
    pmri = torch.zeros(pages)
    for s in range(prompt, n + 1):
        clock = s - prompt + 1
        last[:, s] = clock - 1
        if s % P == 0:
            plast[s // P] = clock - 1
        w = torch.softmax(q[:, s] @ k[: s + 1].T / math.sqrt(k.shape[-1]), -1)  # [G, s+1]
        hit = w >= ALPHA
        new_last = torch.where(hit, float(clock), last[:, : s + 1])
        mri[:, : s + 1] = torch.maximum(mri[:, : s + 1], new_last - last[:, : s + 1])
        last[:, : s + 1] = new_last
        peak = F.pad(w.amax(0), (0, (-(s + 1)) % P)).view(-1, P).amax(-1)
        phit = peak >= ALPHA
        live = slice(0, phit.shape[0])
        pnew = torch.where(phit, float(clock), plast[live])
        pmri[live] = torch.maximum(pmri[live], pnew - plast[live])
        plast[live] = pnew
    return last, mri, plast, pmri, n - prompt + 1


def lazy_score(last: torch.Tensor, mri: torch.Tensor, now: int) -> torch.Tensor:
    due = 2 / (1 + torch.exp(1 + (now - last) / (mri + 1e-5)))
    return due + torch.where(mri == 0, 0.0, 2 / (1 + torch.exp(mri - 1)))


def lazy_case(q, k, n, budget, group, gen, prompt) -> list[dict]:
    last, mri, plast, pmri, now = lazy_states(q, k, prompt, n, group)
    window_pages = -(-LAZY_WINDOW // P)
    forced = set(range(-(-prompt // P))) | set(range(n // P + 1 - window_pages, n // P + 1))
    pscore = lazy_score(plast, pmri, now)
    pages = forced | top_pages({p: float(pscore[p]) for p in range(n // P + 1)
                                if p not in forced}, budget // P - len(forced))
    rand = forced | random_pages(budget // P - len(forced),
                                 sorted(set(range(n // P + 1)) - forced), gen)
    rows = []
    for g in range(group):  # the token rule keeps a set per query head
        score = lazy_score(last[g], mri[g], now)
        token = torch.zeros(n + 1, dtype=torch.bool)
        token[:prompt] = True
        token[n + 1 - LAZY_WINDOW:] = True
        rest = torch.where(token, float("-inf"), score)
        token[rest.topk(budget - int(token.sum())).indices] = True
        rows.append(measure(q[g:g + 1], k, n, token, tokens_of(pages, n), tokens_of(rand, n),
                            1))
    return rows


# --- LessIsMore ---------------------------------------------------------------------

def lim_token_select(q: torch.Tensor, k: torch.Tensor, n: int, budget: int) -> torch.Tensor:
    """LessIsMore's code for the query at n, all query heads ([Hq, ...]); [n+1] bool."""
    middle = int(budget * TOP_RATIO)
    recent = budget - middle
    sinks = SINK_TOKENS if recent >= SINK_TOKENS else 0
    recent -= sinks
    logits = torch.einsum("hd,hnd->hn", q[:, n], k[:, : n + 1])  # [Hq, n+1]
    start = n + 1 - recent
    top = logits[:, sinks:start].topk(middle, -1).indices + sinks  # [Hq, middle]
    order = list(dict.fromkeys(top.T.reshape(-1).tolist()))[:middle]
    kept = torch.zeros(n + 1, dtype=torch.bool)
    kept[order] = True
    kept[:sinks] = True
    kept[start:] = True
    return kept


def lim_page_select(q: torch.Tensor, k: torch.Tensor, n: int,
                    budget: int) -> tuple[set[int], set[int]]:
    """The lessismore policy's (forced recent and sink pages, chosen pages) for the query
    at n (q [Hq, N, D], k [Hq, N, D])."""
    pages = budget // P
    top = int(pages * TOP_RATIO)
    recent = pages - top
    sinks = min(1, recent - 1) if recent >= 2 else 0
    recent -= sinks
    newest = n // P
    forced = set(range(max(0, newest - recent + 1), newest + 1)) | set(range(sinks))
    count = newest + 1
    keys = F.pad(k[:, : n + 1], (0, 0, 0, (-(n + 1)) % P)).view(k.shape[0], count, P, -1)
    valid = (torch.arange(count * P) <= n).view(count, P)[None, :, :, None]
    kmax = torch.where(valid, keys, float("-inf")).amax(2)
    kmin = torch.where(valid, keys, float("inf")).amin(2)
    qh = q[:, n][:, None]  # [Hq, 1, D]
    bound = torch.maximum(qh * kmax, qh * kmin).sum(-1)  # [Hq, count]
    candidates = [p for p in range(count) if p not in forced]
    rankings = [sorted(candidates, key=lambda p: (-float(row[p]), p)) for row in bound]
    order = []
    for rank in range(len(candidates)):
        for ranking in rankings:
            if ranking[rank] not in order:
                order.append(ranking[rank])
    return forced, forced | set(order[:top])


def lim_case(q, k_full, n, budget, group, gen) -> dict:
    token = lim_token_select(q, k_full, n, budget)
    forced, pages = lim_page_select(q, k_full, n, budget)
    rand = forced | random_pages(budget // P - len(forced),
                                 sorted(set(range(n // P + 1)) - forced), gen)
    return measure(q, k_full, n, token, tokens_of(pages, n), tokens_of(rand, n), q.shape[0],
                   future=range(n, n + 1))


# --- driver -------------------------------------------------------------------------

def measure(q, k, n, token, page, rand, group, future=None) -> dict:
    future = future or range(n + 1, min(n + 1 + FUTURE, q.shape[1]))
    kk = k if k.dim() == 3 else k[None].expand(q.shape[0], -1, -1)
    mass = lambda kept: sum(future_mass(q[g:g + 1], kk[g], n, kept, 1, future)  # noqa: E731
                            for g in range(q.shape[0])) / q.shape[0]
    return dict(token_recall=float((token & page).sum() / token.sum()),
                mass_token=mass(token), mass_page=mass(page), mass_random=mass(rand))


def mean_rows(rows: list[dict]) -> dict:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} | {"cases": len(rows)}


def run(model_path: str, budgets: list[int], decode_tokens: int, seed: int) -> dict:
    from bench.accuracy.reasoner import load_checkpoint
    from bench.accuracy.tasks import make_problems

    model, tok, spec = load_checkpoint(model_path, dtype=torch.float64)
    problem = make_problems("test", 1, decode_tokens, seed=seed, spec=spec)[0]
    ids = torch.tensor([tok.encode(problem.prompt) + tok.encode(problem.chain)])
    prompt = len(tok.encode(problem.prompt))
    layers = record(model, ids)
    N = ids.shape[1]
    gen = torch.Generator().manual_seed(0)
    out = {}
    for budget in budgets:
        rows = {"rkv": [], "lazy_eviction": [], "lessismore": []}
        # Each checkpoint drops at least 128 tokens of the prefix.
        checkpoints = [n for n in range(budget + 127, N - FUTURE, 128) if (n + 1) % P == 0]
        for q_all, k_all in layers:
            H = k_all.shape[0]
            G = q_all.shape[0] // H
            for h in range(H):
                q, k = q_all[h * G:(h + 1) * G], k_all[h]
                for n in checkpoints:
                    rows["rkv"].append(rkv_case(q, k, n, budget, G, gen))
                    rows["lessismore"].append(lim_case(q, k[None].expand(G, -1, -1), n,
                                                       budget, G, gen))
                if budget >= (-(-LAZY_WINDOW // P) + 1 + -(-prompt // P)) * P:
                    for n in checkpoints[::2]:
                        rows["lazy_eviction"] += lazy_case(q, k, n, budget, G, gen, prompt)
        out[str(budget)] = {name: mean_rows(r) for name, r in rows.items() if r}
    return dict(model=model_path, tokens=N, prompt_tokens=prompt, page_size=P,
                budgets=budgets, checkpoints_every=128, future_queries=FUTURE, results=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bench/accuracy/checkpoints/reasoner")
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--decode-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/accuracy/page_agreement_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    result = run(args.model, args.budgets, args.decode_tokens, args.seed)
    result.update(command="python -m bench.accuracy.page_agreement " + " ".join(sys.argv[1:]),
                  torch=torch.__version__, device="cpu", dtype="float64",
                  wall_s=round(time.time() - t0, 1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for budget, table in result["results"].items():
        for name, row in table.items():
            print(f"L={budget:>4} {name:<14} " + "  ".join(
                f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                for key, value in row.items()))


if __name__ == "__main__":
    main()
