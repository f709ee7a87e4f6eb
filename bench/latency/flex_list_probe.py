"""Issue 15 probe: why FlexAttention over a listed set of pages costs more when the list
comes from masks.chosen_blocks (recycled, hsr) than from quest's select.

python -m bench.latency.flex_list_probe [--out probe.json]

One layer (8 kv heads, 4 query rows each, head_dim 128, bf16, P = 16) over a keep-all pool
of S = 9,217 slots (N = 128k + margin), `pages` of them visible. Times, as CUDA-graph replay
medians, the same flex call under block lists made five ways:
- given_sorted / given_random: the list precomputed outside the graph (ascending slots,
  or in a random order as quest's ranking leaves it);
- chosen_blocks: the list computed from `visible > 0` inside the compiled graph, as the
  recycled and hsr steps do;
- chosen_blocks_realized: the same, then copied into persistent buffers before flex;
- padded_select: quest's form, the k chosen slots padded with zeros to S.
Prints each variant's kernel profile; with TORCH_LOGS=output_code the generated kernels.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.nn.attention.flex_attention import flex_attention

from bench.latency.decode_probe import profile
from bench.latency.decode_timing import graph_stats_ms
from raas_flex.masks import chosen_blocks, listed_block_mask

H, G, D, P, S = 8, 4, 128, 16, 9217


def run(pages: int, gen: torch.Generator, device: str = "cuda") -> list[dict]:
    """Time flex over `pages` visible pages under each way of making its block list
    (device "cpu": only check that the variants agree, untimed)."""
    q = torch.randn(1, H, G, D, device=device, generator=gen).bfloat16()
    k = torch.randn(1, H, S * P, D, device=device, generator=gen).bfloat16()
    v = torch.randn_like(k)
    picked = torch.rand(1, H, S, device=device, generator=gen).argsort(-1)[..., :pages]
    visible = torch.zeros(1, H, S, dtype=torch.int32, device=device)
    visible.scatter_(-1, picked, P)
    ascending = picked.sort(-1).values
    count = torch.full((1, H, 1), pages, dtype=torch.int32, device=device)

    def padded(index: torch.Tensor) -> torch.Tensor:  # [1, H, k] -> [1, H, 1, S] int32
        return torch.nn.functional.pad(index.to(torch.int32), (0, S - index.shape[-1]))[:, :, None]

    lists = {"given_sorted": padded(ascending), "given_random": padded(picked)}
    count_buffer = torch.zeros_like(count)
    index_buffer = torch.zeros(1, H, 1, S, dtype=torch.int32, device=device)
    out = torch.empty_like(q)

    def attend(c, i):
        mask = listed_block_mask(visible, P, G, c, i)
        return flex_attention(q, k, v, block_mask=mask, scale=D ** -0.5)

    def given(name):
        index = lists[name]
        return lambda: out.copy_(attend(count, index))

    def computed():
        out.copy_(attend(*chosen_blocks(visible > 0)))

    def realized():
        c, i = chosen_blocks(visible > 0)
        count_buffer.copy_(c)
        index_buffer.copy_(i)
        out.copy_(attend(count_buffer, index_buffer))

    def padded_select():
        out.copy_(attend(count, padded(picked + 0)))

    variants = {"given_sorted": given("given_sorted"), "given_random": given("given_random"),
                "chosen_blocks": computed, "chosen_blocks_realized": realized,
                "padded_select": padded_select}
    reference = None
    rows = []
    for name, fn in variants.items():
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True)
        compiled()
        result = out.float().clone()
        reference = result if reference is None else reference
        error = float((result - reference).abs().max())
        if error > 1e-2:
            raise AssertionError(f"{name} differs from given_sorted by {error}")
        if device != "cuda":
            continue
        stats = graph_stats_ms(compiled)
        rows.append(dict(variant=name, pages=pages, median_us=stats["median_ms"] * 1e3,
                         max_abs_diff_vs_first=error))
        print(json.dumps(rows[-1]), flush=True)
        profile(compiled, f"{name}, {pages} pages")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="flex_list_probe.json")
    args = parser.parse_args()
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = run(129, gen) + run(512, gen)
    with open(args.out, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       command="python -m bench.latency.flex_list_probe", rows=rows), f, indent=1)
    print(f"{'variant':24} {'pages':>5} {'us':>8}")
    for row in rows:
        print(f"{row['variant']:24} {row['pages']:5d} {row['median_us']:8.1f}")


if __name__ == "__main__":
    main()
