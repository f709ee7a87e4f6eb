"""Run a random sequence through prefill + N decode steps of one policy, keeping the full
K/V history in logical order, and compare each step with a masked dense reference.

Reusable by any policy test: `make_sequence` draws the tensors, `run_policy` drives the
single-layer functional API and records what every step attended and held, and
`masked_dense` is the float64 oracle over exactly those positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from hypothesis import settings

from raas_flex import (
    RaaSConfig, attended_positions, decode_step, held_positions, make_policy,
    new_layer_cache, prefill,
)
from raas_flex.cache import LayerCache
from raas_flex.policies import Policy, available_policies, policy_class
from tests.reference_attention import reference_attention

# Every registered policy but the library's own two: the peers each policy test covers.
PEERS = tuple(name for name in available_policies() if name not in ("dense", "raas"))
EVICTING = tuple(name for name in PEERS if not policy_class(name).Options.keeps_all)


def settings_for(policy: str, **flat) -> dict:
    """Of `flat` peer settings (e.g. recycled_period=3, hsr_epsilon=0.05), the ones
    `policy` takes, so one table of settings can drive every peer."""
    taken = policy_class(policy).Options.flat_names()
    return {name: value for name, value in flat.items() if name in taken}


@dataclass
class Sequence:
    """One layer's inputs. Prompt tensors are left-padded to the longest prompt."""

    q_prompt: torch.Tensor  # [B, Hq, T, D]
    k_prompt: torch.Tensor  # [B, H, T, D]
    v_prompt: torch.Tensor  # [B, H, T, D]
    q_decode: torch.Tensor  # [B, Hq, N, D]
    k_decode: torch.Tensor  # [B, H, N, D]
    v_decode: torch.Tensor  # [B, H, N, D]
    lengths: torch.Tensor  # [B] int64 real prompt tokens per row
    _history: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def steps(self) -> int:
        return self.q_decode.shape[2]

    @property
    def positions(self) -> int:
        """Logical positions a row can reach: longest prompt + decode steps."""
        return int(self.lengths.max()) + self.steps

    def attention_mask(self) -> torch.Tensor:
        T = self.k_prompt.shape[2]
        return (torch.arange(T) >= (T - self.lengths)[:, None]).long()

    def history(self, which: str) -> torch.Tensor:
        """Keys ("k") or values ("v") by logical position, [B, H, positions, D]; row b holds
        its real prompt tokens at 0..len_b-1, then decode token t at len_b + t."""
        if which not in self._history:
            self._history[which] = self._build_history(which)
        return self._history[which]

    def _build_history(self, which: str) -> torch.Tensor:
        prompt, decode = (self.k_prompt, self.k_decode) if which == "k" else (
            self.v_prompt, self.v_decode)
        B, H, T, D = prompt.shape
        out = torch.zeros(B, H, self.positions, D, dtype=prompt.dtype)
        for b in range(B):
            n = int(self.lengths[b])
            out[b, :, :n] = prompt[b, :, T - n:]
            out[b, :, n:n + self.steps] = decode[b]
        return out


def make_sequence(seed: int, batch: int = 1, kv_heads: int = 2, group: int = 2,
                  head_dim: int = 16, prompt_lengths: list[int] | int = 20, steps: int = 30,
                  key_scale: float = 1.0, dtype: torch.dtype = torch.float32) -> Sequence:
    """Gaussian q/k/v; `key_scale` > 1 sharpens attention (fewer pages carry the mass)."""
    lengths = [prompt_lengths] * batch if isinstance(prompt_lengths, int) else prompt_lengths
    T = max(lengths)
    g = torch.Generator().manual_seed(seed)

    def draw(heads: int, tokens: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(batch, heads, tokens, head_dim, generator=g) * scale).to(dtype)

    return Sequence(
        q_prompt=draw(kv_heads * group, T), k_prompt=draw(kv_heads, T, key_scale),
        v_prompt=draw(kv_heads, T), q_decode=draw(kv_heads * group, steps),
        k_decode=draw(kv_heads, steps, key_scale), v_decode=draw(kv_heads, steps),
        lengths=torch.tensor(lengths, dtype=torch.int64),
    )


@dataclass
class Trace:
    """What a run produced, one entry per decode step."""

    config: RaaSConfig
    policy: Policy
    cache: LayerCache
    outputs: list[torch.Tensor] = field(default_factory=list)  # [B, Hq, 1, D]
    attended: list[torch.Tensor] = field(default_factory=list)  # [B, H, positions] bool
    held: list[torch.Tensor] = field(default_factory=list)  # [B, H, positions] bool


def run_policy(config: RaaSConfig, seq: Sequence, first_step: int = 1,
               on_step: Callable[[int, LayerCache, Policy], None] | None = None,
               step_fn: Callable | None = None) -> Trace:
    """Prefill then decode every step of `seq`; `on_step(t, cache, policy)` runs after
    decode step t (0-based); `step_fn` replaces decode_step (e.g. a compiled body)."""
    policy = make_policy(config)
    B, H, T, D = seq.k_prompt.shape
    cache = new_layer_cache(config, policy, B, H, D, prompt_tokens=T,
                            max_new_tokens=seq.steps, dtype=seq.k_prompt.dtype)
    prefill(seq.q_prompt, seq.k_prompt, seq.v_prompt, cache, policy,
            attention_mask=seq.attention_mask())
    trace = Trace(config, policy, cache)
    step_fn = step_fn or decode_step
    for t in range(seq.steps):
        piece = slice(t, t + 1)
        out = step_fn(seq.q_decode[:, :, piece], seq.k_decode[:, :, piece],
                      seq.v_decode[:, :, piece], cache, policy, first_step + t)
        trace.outputs.append(out)
        trace.attended.append(attended_positions(cache, seq.positions))
        trace.held.append(held_positions(cache, seq.positions))
        if on_step is not None:
            on_step(t, cache, policy)
    return trace


def masked_dense(seq: Sequence, t: int, attended: torch.Tensor,
                 scale: float | None = None) -> torch.Tensor:
    """float64 attention of decode query t over exactly the `attended` positions
    ([B, H, positions] bool). Returns [B, Hq, 1, D]."""
    return reference_attention(seq.q_decode[:, :, t:t + 1], seq.history("k"),
                               seq.history("v"), attended, scale)


def causal_positions(seq: Sequence, t: int) -> torch.Tensor:
    """[B, H, positions] bool: every position decode step t may see (dense attention)."""
    H = seq.k_prompt.shape[1]
    limit = seq.lengths + t + 1  # [B]
    seen = torch.arange(seq.positions) < limit[:, None]
    return seen[:, None, :].expand(-1, H, -1)


def max_error_vs_masked_dense(seq: Sequence, trace: Trace) -> float:
    """Largest |output - masked dense over the reported attended set| over all steps."""
    return max(float((out.double() - masked_dense(seq, t, att)).abs().max())
               for t, (out, att) in enumerate(zip(trace.outputs, trace.attended)))


def max_error_vs_dense(seq: Sequence, trace: Trace) -> float:
    """Largest |output - full causal dense attention| over all steps."""
    return max(float((out.double() - masked_dense(seq, t, causal_positions(seq, t))).abs().max())
               for t, out in enumerate(trace.outputs))


DEV_EXAMPLES = 30  # tests/conftest.py's "dev" profile


def examples(n: int) -> int:
    """Hypothesis example count: `n` under the dev profile, scaled with the loaded
    profile's max_examples (the "ci" profile's 200 gives ~6.7 n), and never below a
    larger profile's own count: CI runs at least 200 examples per property."""
    profile = settings.default.max_examples
    scaled = max(1, round(n * profile / DEV_EXAMPLES))
    return max(scaled, profile) if profile > DEV_EXAMPLES else scaled


def page_sets(positions: torch.Tensor, page_size: int) -> list[list[set[int]]]:
    """[B, H, positions] bool -> per (row, head) the set of pages with any position set."""
    B, H, N = positions.shape
    return [[{int(p) // page_size for p in positions[b, h].nonzero().flatten()}
             for h in range(H)] for b in range(B)]


def step_page_mass(seq: Sequence, t: int, attended: torch.Tensor,
                   page_size: int) -> torch.Tensor:
    """float64 softmax mass of decode step t's query on each logical page, over the
    `attended` positions, max over the GQA group: [B, H, pages]."""
    k = seq.history("k").double()
    B, H, N, D = k.shape
    q = seq.q_decode[:, :, t].double().view(B, H, -1, D)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    probs = torch.softmax(logits.masked_fill(~attended[:, :, None, :], float("-inf")), dim=-1)
    pages = -(-N // page_size)
    padded = torch.nn.functional.pad(probs, (0, pages * page_size - N))
    return padded.view(B, H, -1, pages, page_size).sum(-1).amax(2)


def current_page(seq: Sequence, t: int, page_size: int) -> torch.Tensor:
    """[B] logical page that decode step t writes into."""
    return (seq.lengths + t) // page_size

# Eager flex costs ~50 ms a call on this CPU; property tests attend through the "sdpa"
# kernel (the identical selection as a boolean mask), the flex path is checked per policy.
SDPA = "sdpa"


def fullgraph_step(scale: float) -> tuple[Callable, list]:
    """A run_policy step_fn through one torch.compile(fullgraph=True) of the decode step,
    and the list of graphs Inductor compiled for it (one per distinct step shape)."""
    from torch._inductor.compile_fx import compile_fx

    from raas_flex.functional import decode_step_tensors

    graphs: list = []

    def counting_inductor(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    compiled = torch.compile(decode_step_tensors, backend=counting_inductor, fullgraph=True,
                             dynamic=False)

    def step(q, k, v, cache, policy, t):
        return compiled(q, k, v, cache, policy, torch.tensor(t), scale)

    return step, graphs


def compiled_and_eager(config: RaaSConfig, seq: Sequence,
                       scale: float = 0.25) -> tuple[Trace, Trace]:
    """The same run through one fullgraph compile of the step and eagerly. Asserts the
    compiled run is one graph and equals masked dense over its attended set; the caller
    compares the two traces' decisions. scale 0.25 = 1/sqrt(head_dim 16), as eager uses."""
    step, graphs = fullgraph_step(scale)
    fast = run_policy(config, seq, step_fn=step)
    slow = run_policy(config, seq)
    assert len(graphs) == 1, f"{len(graphs)} graphs compiled for one step shape"
    assert max_error_vs_masked_dense(seq, fast) <= 1e-5
    return fast, slow


def prompts_and_budget(draw, st, page_size: int, extra_pages: tuple[int, int],
                       steps: tuple[int, int]) -> tuple[Sequence, int]:
    """Hypothesis draws (inside an @st.composite): a 1-2 row sequence with prompts of 1-40
    tokens, and a budget of its prompt pages plus `extra_pages` (a range) decode pages."""
    batch = draw(st.integers(1, 2))
    lengths = [draw(st.integers(1, 40)) for _ in range(batch)]
    budget = page_size * (-(-max(lengths) // page_size) + draw(st.integers(*extra_pages)))
    seq = make_sequence(draw(st.integers(0, 2**16)), batch=batch, prompt_lengths=lengths,
                        steps=draw(st.integers(*steps)),
                        key_scale=draw(st.sampled_from([1.0, 3.0])))
    return seq, budget
