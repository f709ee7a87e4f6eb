"""How much of each head's dense attention lies far back, per family: can a policy tell them apart?

    python -m bench.accuracy.far_share [--families registers recall] [--n 4] [--seed 2]
                                       [--span 192] [--first-step 400] [--every 16] [--out PATH]

At L = 1/8 registers needs about 10 recent pages of the 15 a pool has, and recall 7 pages
kept by summed attention (bench/README.md, seed-3 table). A rule that adapts its window per
(layer, kv head) could serve both only if the heads behave differently in the two families
before recall's notes are read. This measures the simplest such signal: with the reasoner
teacher-forced on correct chains (hold_trace's recording), for each (layer, kv head) the
share of dense attention (max over the GQA group's query heads, as the h2o family scores
pages) that falls on decode tokens more than `span` tokens back, averaged over problems and
over every `every`-th step from `first_step` on. The prompt is excluded (every policy pins
it). Equal shares in every head mean the signal cannot separate the families.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from bench.accuracy.hold_trace import recorded_layers


def far_share(q: torch.Tensor, k: torch.Tensor, prompt: int, span: int,
              steps: range) -> list[float]:
    """Per kv head: the mean over problems and `steps` of the dense attention (max over the
    group) on decode tokens in [prompt, t - span], for q [B, Hq, N, D], k [B, H, N, D]."""
    H, G, D = k.shape[1], q.shape[1] // k.shape[1], q.shape[-1]
    shares = []
    for h in range(H):
        total = 0.0
        for t in steps:
            logits = torch.einsum("bgd,bnd->bgn", q[:, h * G:(h + 1) * G, t], k[:, h, :t + 1])
            weights = torch.softmax(logits / D ** 0.5, dim=-1)  # [B, G, t + 1]
            far = weights[..., prompt:max(prompt, t - span + 1)].sum(-1)  # [B, G]
            total += float(far.amax(1).mean())
        shares.append(total / len(steps))
    return shares


def measure(model: str, families: list[str], n: int, seed: int, span: int, first_step: int,
            every: int, decode_tokens: int = 2048) -> dict:
    per_family = {}
    for family in families:
        _, _, prompt, layers = recorded_layers(model, family, n, seed, decode_tokens)
        steps = range(prompt + first_step, layers[0][0].shape[2], every)
        per_family[family] = [far_share(q, k, prompt, span, steps) for q, k in layers]
    heads = [[per_family[f][li][h] for f in families]
             for li in range(len(per_family[families[0]]))
             for h in range(len(per_family[families[0]][li]))]
    return dict(model=model, families=families, n=n, seed=seed, span=span,
                first_step=first_step, every=every, decode_tokens=decode_tokens,
                far_share=per_family,
                max_difference=max(max(row) - min(row) for row in heads))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bench/accuracy/checkpoints/reasoner_v2")
    p.add_argument("--families", nargs="+", default=["registers", "recall"])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--span", type=int, default=192)
    p.add_argument("--first-step", type=int, default=400)
    p.add_argument("--every", type=int, default=16)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result = measure(args.model, args.families, args.n, args.seed, args.span,
                     args.first_step, args.every)
    result["command"] = "python -m bench.accuracy.far_share " + " ".join(sys.argv[1:])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(f"dense attention share > {args.span} tokens back, per (layer, kv head):")
    for family, layers in result["far_share"].items():
        print(f"{family:10s}", " | ".join(" ".join(f"{s:.3f}" for s in row) for row in layers))
    print(f"largest difference between families in one head: {result['max_difference']:.3f}")
    return result


if __name__ == "__main__":
    main()
