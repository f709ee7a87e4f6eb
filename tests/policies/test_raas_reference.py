"""The tensor RaaS against the plain Python RaaS, decision for decision."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import raas_flex as rf
from tests.layer_harness import Drive
from tests.plain_raas import PlainRaaS
from tests.strategies import PAGE_SIZES, prompt_lengths, shapes


def _fast_state(cache, b: int, h: int) -> dict[int, tuple[int, int, bool]]:
    live = cache.page_id[b, h] >= 0
    return {
        int(p): (int(f), int(t), bool(pin))
        for p, f, t, pin in zip(cache.page_id[b, h][live], cache.fill[b, h][live],
                                cache.timestamp[b, h][live], cache.pinned[b, h][live])
    }


@given(data=st.data(), shape=shapes(), page_size=st.sampled_from(PAGE_SIZES),
       keep_prefill=st.booleans(), steps=st.integers(1, 100))
def test_decisions_match_plain_reference(data, shape, page_size, keep_prefill, steps):
    prompts = data.draw(prompt_lengths(shape.batch, page_size, max_pages=2))
    slots = -(-max(prompts) // page_size) + data.draw(st.integers(2, 4))
    config = rf.RaaSConfig(budget=slots * page_size, page_size=page_size,
                           keep_prefill=keep_prefill, attention_kernel="sdpa")
    # Integer-valued q/k make every bound exact, so ties are real ties in both versions.
    drive = Drive(config, rf.make_policy(config), shape, prompts, steps,
                  seed=data.draw(st.integers(0, 2**16)), integer_valued=True)
    B, H, G = shape.batch, shape.kv_heads, shape.group
    plain = [[PlainRaaS(config.budget, page_size, config.top_ratio, keep_prefill)
              for _ in range(H)] for _ in range(B)]
    steps_iter = drive.run()
    for step in steps_iter:
        if step.index == 1:  # the prompt is in the history once the first step ran
            for b, n in enumerate(prompts):
                for h in range(H):
                    plain[b][h].prefill(step.keys[b, h, :n].tolist())
        for b in range(B):
            n = int(step.lengths[b])
            for h in range(H):
                reference = plain[b][h]
                before = reference.state()
                queries = step.q[b, h * G:(h + 1) * G, 0].tolist()
                reference.decode(step.keys[b, h, n - 1].tolist(), queries, step.index)
                assert _fast_state(step.cache, b, h) == reference.state(), (
                    f"step {step.index} seq {b} head {h}")
                evicted = set(before) - set(reference.state())
                if evicted:  # the victim had the oldest timestamp among unpinned pages
                    (victim,) = evicted
                    oldest = min((t, p) for p, (_, t, pin) in before.items() if not pin)
                    assert (before[victim][1], victim) == oldest
