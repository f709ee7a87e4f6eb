"""How much of dense attention each policy's pool keeps, step by step.

    python -m bench.accuracy.mass_trace [--family registers] [--fraction 0.125] [--n 16]
                                        [--policies streaming h2o_horizon] [--seed 2]
                                        [--out PATH]

hold_trace says whether the reads a task forces find their page held. On registers at
L = 1/8 every forced read was held under both streaming and h2o_horizon, yet h2o_horizon
answers 226 of 256 against streaming's 238 (bench/README.md): the answers also depend on
context no single read names. This measures that context. With the same recording and
replay as hold_trace (the reasoner teacher-forced on correct chains, each policy replayed
per layer on the recorded queries and keys through raas_flex's functional API), at each
decode step and for each (layer, kv head) it takes dense attention (the softmax of the
step's query over every key so far, averaged over the GQA group's query heads) and sums it
over the tokens whose page the pool holds at that step: 1 means the pool holds everything
dense attention looks at. Reported per policy: the mean over problems, layers, heads and
steps, per layer, and the lost share by how far back it lies (and in the prompt). Teacher
forcing compares the rules on one correct chain; it is not an accuracy.
"""

from __future__ import annotations

import torch

from bench.accuracy.hold_trace import recorded_layers, replay, run_trace, trace_parser
from bench.accuracy.page_agreement import P

# Edges (tokens back from the query) of the distance bins the lost share is reported in.
EDGES = (16, 64, 128, 256, 512, 1024)
BINS = ["prompt"] + [f"<{e}" for e in EDGES] + [f">={EDGES[-1]}"]


def held_tokens(page_id: torch.Tensor, tokens: int) -> torch.Tensor:
    """[B, H, tokens] bool: token j's page (j // P) is among page_id [B, H, S] (FREE -1)."""
    pages = torch.arange(tokens, device=page_id.device) // P
    return (page_id[..., :, None] == pages).any(-2)


def distance_bins(t: int, prompt: int) -> torch.Tensor:
    """[t + 1] int64: the BINS index of each key j <= t for the query at t."""
    j = torch.arange(t + 1)
    back = t - j
    bins = 1 + torch.bucketize(back, torch.tensor(EDGES), right=True)
    return torch.where(j < prompt, 0, bins)


def dense_weights(q: torch.Tensor, k: torch.Tensor, t: int) -> torch.Tensor:
    """[B, H, t + 1]: softmax of the query at t over keys 0..t, mean over the GQA group.
    q [B, Hq, N, D], k [B, H, N, D]."""
    B, H, _, D = k.shape
    qt = q[:, :, t].reshape(B, H, -1, D)  # [B, H, G, D]
    logits = torch.einsum("bhgd,bhnd->bhgn", qt, k[:, :, : t + 1]) / D ** 0.5
    return torch.softmax(logits, -1).mean(2)


def layer_trace(q: torch.Tensor, k: torch.Tensor, prompt: int,
                snapshots: dict[str, dict[int, torch.Tensor]]) -> dict[str, dict]:
    """For one layer, per policy: retained share [B, H, T] and lost share by bin [B, H, T,
    len(BINS)] over the decode steps t = prompt .. N-1 (snapshots: {policy: {t: page_id}})."""
    N = k.shape[2]
    out = {name: dict(retained=[], lost=[]) for name in snapshots}
    for t in range(prompt, N):
        weights = dense_weights(q, k, t)  # [B, H, t + 1]
        bins = distance_bins(t, prompt).expand_as(weights)
        for name, snaps in snapshots.items():
            held = held_tokens(snaps[t], t + 1)
            out[name]["retained"].append((weights * held).sum(-1))
            lost = torch.zeros(*weights.shape[:2], len(BINS), dtype=weights.dtype)
            out[name]["lost"].append(lost.scatter_add_(-1, bins, weights * ~held))
    return {name: dict(retained=torch.stack(r["retained"], -1), lost=torch.stack(r["lost"], 2))
            for name, r in out.items()}


def trace(model_path: str, family: str, fraction: float, n: int, policies: list[str],
          seed: int, decode_tokens: int) -> dict:
    budget = int(fraction * decode_tokens)
    _, _, prompt, layers = recorded_layers(model_path, family, n, seed, decode_tokens)
    results = {name: dict(per_layer=[], lost=[]) for name in policies}
    for q, k in layers:  # q [B, Hq, N, D], k [B, H, N, D]
        steps = set(range(prompt, k.shape[2]))
        snapshots = {name: replay(q, k, prompt, name, budget, steps)[0] for name in policies}
        for name, r in layer_trace(q, k, prompt, snapshots).items():
            results[name]["per_layer"].append(float(r["retained"].mean()))
            results[name]["lost"].append(r["lost"].mean((0, 1, 2)))
    summary = {}
    for name, r in results.items():
        lost = torch.stack(r["lost"]).mean(0)
        summary[name] = dict(retained=sum(r["per_layer"]) / len(r["per_layer"]),
                             retained_per_layer=r["per_layer"],
                             lost_by_distance=dict(zip(BINS, lost.tolist())))
    return dict(model=model_path, family=family, budget_fraction=fraction, budget=budget, n=n,
                seed=seed, decode_tokens=decode_tokens, page_size=P, prompt_tokens=prompt,
                policies=summary)


def main(argv=None) -> dict:
    args = trace_parser(__doc__, "registers", 0.125, 16,
                        ["streaming", "h2o_horizon"]).parse_args(argv)
    result = run_trace(trace, args, "bench.accuracy.mass_trace")
    print(f"{args.family}, L = {result['budget']} tokens, {args.n} problems, seed {args.seed}: "
          "share of dense attention on held tokens; lost share by tokens back")
    print(f"{'policy':13s} {'kept':>6s} " + " ".join(f"{b:>7s}" for b in BINS))
    for name, r in result["policies"].items():
        print(f"{name:13s} {r['retained']:6.3f} "
              + " ".join(f"{r['lost_by_distance'][b]:7.4f}" for b in BINS))
    return result


if __name__ == "__main__":
    main()
