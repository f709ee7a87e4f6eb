"""A policy's bookkeeping beside the attention: a second CUDA stream inside the one graph.

Why: at batch 1 a RaaS step is mostly small kernels in a row (bench/NOTES.md, issue 15):
FlexAttention's three, and the score and timestamp kernels that only decide *later*
evictions. When a policy's `score` + `update` write nothing this step's attention reads
(`Policy.deferred_writes`), they can run on a side stream while flex runs: the step then
costs about append + max(attention, bookkeeping) instead of their sum.

How: two custom ops, opaque to Inductor, so the outer compiled step (or a whole model's
compiled forward) stays one graph that a CUDA graph captures, side stream included:
- `raas_flex::fork_bookkeeping` makes the side stream wait for the main one (the append is
  done), then runs the policy's score + update there, through its own compiled graph
  (one per policy config, shared by every layer);
- `raas_flex::join_bookkeeping` makes the main stream wait for the side one. It takes the
  attention's output as a mutated argument, so Inductor places it after the attention, and
  the query as an input, so the query's buffer is not reused before the side stream has
  read it.
Off CUDA both ops run the bookkeeping inline, in order, as the plain step does.

The ops see tensors only, so the LayerCache is passed as named tensor lists and rebuilt
inside; the policy is looked up by a key (its config) registered when it was built.
"""

from __future__ import annotations

import functools

import torch

from raas_flex.cache.pool import LayerCache
from raas_flex.policies.base import POLICIES_BY_KEY, Policy

STATE = "state:"  # name prefix of a policy_state tensor in the op's name lists
# Never passed to the side stream: the main stream writes `visible` while it runs, and
# nothing a policy scores with lives there. The rebuilt cache holds an empty tensor.
UNSHARED = ("visible",)
TENSOR_FIELDS = ("k", "v", "fill", "timestamp", "pinned", "page_id", "kmin", "kmax",
                 "current", "length", "overflow", "k_scale", "v_logscale", "sinks")


def cache_tensors(cache: LayerCache, writes: tuple[str, ...]
                  ) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """(names of the read tensors, the read tensors, the written tensors): every tensor of
    the cache (policy state included, `UNSHARED` left out) by name, split by `writes`."""
    named = {name: getattr(cache, name) for name in TENSOR_FIELDS
             if getattr(cache, name) is not None}
    for name, tensor in cache.policy_state.items():
        named[STATE + name] = tensor
    unknown = [name for name in writes if name not in named]
    if unknown:
        raise ValueError(f"deferred_writes names {unknown}, which are not tensors of the "
                         f"cache; choose among {sorted(named)}.")
    read_names = [name for name in named if name not in writes]
    return read_names, [named[n] for n in read_names], [named[n] for n in writes]


def rebuild_cache(names: list[str], tensors: list[torch.Tensor], page_size: int,
                  softcap: float | None) -> LayerCache:
    """A LayerCache over the given tensors (same storage: writes land in the real cache)."""
    plain = {n: t for n, t in zip(names, tensors) if not n.startswith(STATE)}
    state = {n[len(STATE):]: t for n, t in zip(names, tensors) if n.startswith(STATE)}
    empty = {n: plain["fill"].new_empty(0) for n in UNSHARED}
    return LayerCache(page_size=page_size, policy_state=state, softcap=softcap,
                      **plain, **empty)


def bookkeeping(policy: Policy, query: torch.Tensor, cache: LayerCache, step: torch.Tensor,
                scale: float) -> None:
    """The deferred part of a step: this step's scores, then the policy's update."""
    policy.update(cache, policy.score(query, cache, scale), step)


@functools.lru_cache(maxsize=None)
def compiled_bookkeeping():
    return torch.compile(bookkeeping, fullgraph=True, dynamic=False)


@functools.lru_cache(maxsize=None)
def side_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device, shared by every layer (their work is ordered anyway)."""
    return torch.cuda.Stream(device=device)


@torch.library.custom_op("raas_flex::fork_bookkeeping", mutates_args=("writes",))
def fork_bookkeeping_op(key: str, query: torch.Tensor, step: torch.Tensor, scale: float,
                        page_size: int, softcap: float | None, read_names: str,
                        reads: list[torch.Tensor], write_names: str,
                        writes: list[torch.Tensor]) -> None:
    """Run `bookkeeping` for the policy `key` over the rebuilt cache: on CUDA on the side
    stream (after the main stream's work so far), elsewhere inline. The names come
    comma-joined (a custom op takes no list of strings)."""
    policy = POLICIES_BY_KEY[key]
    names = read_names.split(",") + write_names.split(",")
    cache = rebuild_cache(names, reads + writes, page_size, softcap)
    if not query.is_cuda:
        bookkeeping(policy, query, cache, step, scale)
        return
    side = side_stream(query.device)
    side.wait_stream(torch.cuda.current_stream(query.device))
    with torch.cuda.stream(side):
        compiled_bookkeeping()(policy, query, cache, step, scale)


@fork_bookkeeping_op.register_fake
def _(key, query, step, scale, page_size, softcap, read_names, reads, write_names, writes):
    return None


@torch.library.custom_op("raas_flex::join_bookkeeping", mutates_args=("out", "writes"))
def join_bookkeeping_op(out: torch.Tensor, query: torch.Tensor, reads: list[torch.Tensor],
                        writes: list[torch.Tensor]) -> None:
    """Make the main stream wait for the side stream's bookkeeping (no-op off CUDA)."""
    if out.is_cuda:
        torch.cuda.current_stream(out.device).wait_stream(side_stream(out.device))


@join_bookkeeping_op.register_fake
def _(out, query, reads, writes):
    return None


def fork_bookkeeping(key: str, query: torch.Tensor, cache: LayerCache, step: torch.Tensor,
                     scale: float, writes: tuple[str, ...]) -> list[torch.Tensor]:
    """Start the score + update of the policy registered as `key` beside what follows (see
    the module note). query [B, H, G, D]; writes: the cache tensors they mutate, by name
    (`Policy.deferred_writes`). Returns what `join_bookkeeping` must hold until it waits."""
    read_names, reads, written = cache_tensors(cache, writes)
    softcap = None if cache.softcap is None else float(cache.softcap)
    fork_bookkeeping_op(key, query, step, float(scale), cache.page_size, softcap,
                        ",".join(read_names), reads, ",".join(writes), written)
    return [*reads, *written]


def join_bookkeeping(out: torch.Tensor, query: torch.Tensor, held: list[torch.Tensor],
                     writes: int) -> None:
    """Wait for the bookkeeping `fork_bookkeeping` started; `out` is the attention's output,
    `held` what fork returned (its last `writes` entries are the written tensors)."""
    split = len(held) - writes
    join_bookkeeping_op(out, query, held[:split], held[split:])
