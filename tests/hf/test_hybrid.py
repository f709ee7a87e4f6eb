"""Hybrid families with their own layer patterns: sliding-window layers keep the model's
window exactly (a ring of W tokens), full layers get the policy, softcap and sinks are
folded into the softmax. Tiny random-weight models from the real config classes."""

import pytest
import torch

from raas_flex.hf.compat import returned_cache
from tests._hf_common import fast_cpu, greedy, prompts, with_cache  # noqa: F401  (autouse)
from raas_flex import apply_raas, held_positions, remove_raas, stats
from raas_flex.hf.cache import RaaSLayer, WindowLayer
from raas_flex.hf.families import WINDOWED
from raas_flex.hf.layer_kinds import layer_windows
from raas_flex.hf.tiny import tiny_model
from tests.policy_harness import PEERS, settings_for

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

NEW_TOKENS = 48  # every window (16..24 tokens) slides: prompts reach 30, totals 78
BATCHES = {1: (11,), 3: (30, 6, 3)}
PAGE = 16


def _run(model, ids, mask, new_tokens, **options):
    apply_raas(model, page_size=PAGE, **options)
    try:
        out = greedy(model, ids, mask, new_tokens, return_dict_in_generate=True)
    finally:
        remove_raas(model)
    return out.sequences, returned_cache(out)


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("family", WINDOWED)
def test_own_layers_match_unpatched_with_room(family, batch):
    model = tiny_model(family, full_attention=False)
    windows = layer_windows(model.config)
    assert any(w is not None for w in windows)  # the family's own windows are in use
    ids, mask = prompts(BATCHES[batch])
    expected = greedy(model, ids, mask, NEW_TOKENS)
    got, cache = _run(model, ids, mask, NEW_TOKENS, budget=128)  # 8 pages >= 78 tokens
    assert torch.equal(got, expected)
    kinds = [layer.window if isinstance(layer, WindowLayer) else None for layer in cache.layers]
    assert kinds == windows


@pytest.mark.parametrize("family", WINDOWED)
def test_own_layers_bounded_without_room(family):
    """Budget 64 under 30 + 80 tokens, left-padded batch of 3, RaaS on the full layers:
    every sliding layer holds a W-token ring (whole pages), every full layer L tokens."""
    model = tiny_model(family, full_attention=False)
    ids, mask = prompts(BATCHES[3])
    new_tokens, budget = 80, 64
    got, cache = _run(model, ids, mask, new_tokens, budget=budget)
    assert got.shape == (3, ids.shape[1] + new_tokens)
    lengths = [n + new_tokens - 1 for n in BATCHES[3]]  # the last token is never fed back
    report = stats(cache)
    for layer, row in zip(cache.layers, report.layers):
        pool = layer.pool
        if isinstance(layer, WindowLayer):
            assert pool.k.shape[2] == -(-layer.window // PAGE) * PAGE
            assert row.policy == f"window {layer.window}" and row.capacity == layer.window
            assert row.held == round(sum(min(n, layer.window) for n in lengths) / 3, 2)
        else:
            assert isinstance(layer, RaaSLayer) and pool.capacity == budget
            assert row.policy == "raas" and row.evicted_pages > 0
        assert pool.length.tolist() == lengths


def test_exact_window_is_what_matches():
    """The check above can fail: a window one token longer or shorter changes the tokens."""
    import raas_flex.windowed as windowed

    model = tiny_model("qwen2", full_attention=False)
    ids, mask = prompts(BATCHES[3])
    expected = greedy(model, ids, mask, NEW_TOKENS)
    allocate = windowed.allocate_window
    for shift in (-1, 1):
        windowed.allocate_window = lambda b, h, d, w, *a, **k: allocate(b, h, d, w + shift,
                                                                        *a, **k)
        try:
            got, _ = _run(model, ids, mask, NEW_TOKENS, budget=128)
        finally:
            windowed.allocate_window = allocate
        assert not torch.equal(got, expected)


def test_a_model_outside_the_table_is_accepted_by_its_features():
    """GPT-2 is no family of hf/families.py: full MHA layers, so it is supported as is."""
    import transformers

    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=128,
                                     bos_token_id=1, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    ids, mask = prompts(BATCHES[3])
    expected = greedy(model, ids, mask, NEW_TOKENS)
    got, _ = _run(model, ids, mask, NEW_TOKENS, budget=128)
    assert torch.equal(got, expected)


def _follows_logit_mods(policy: str) -> bool:
    from raas_flex.policies import policy_class

    return policy_class(policy).Options.follows_logit_mods


LOGIT_PEERS = [p for p in PEERS if _follows_logit_mods(p)]


@pytest.mark.parametrize("policy", LOGIT_PEERS)
@pytest.mark.parametrize("family", ("gemma2", "gpt_oss"))
def test_every_peer_under_softcap_and_sinks(family, policy):
    """With room every peer decodes the unpatched tokens (scores under softcap / sinks);
    with a 64-token budget it runs 80 tokens to the end, pools bounded."""
    model = tiny_model(family, full_attention=False)
    ids, mask = prompts(BATCHES[3])
    expected = greedy(model, ids, mask, NEW_TOKENS)
    options = settings_for(policy, recycled_period=3, rkv_buffer=16, lazy_window=16)
    got, _ = _run(model, ids, mask, NEW_TOKENS, budget=128, policy=policy, **options)
    assert torch.equal(got, expected)
    _, cache = _run(model, ids, mask, 80, budget=64, policy=policy, **options)
    for layer in cache.layers:
        if not isinstance(layer, WindowLayer) and not layer.keeps_all:
            assert int(held_positions(layer.pool, 30 + 80).sum(-1).max()) <= 64


def test_second_generate_continues_rings_and_pools():
    """A returned hybrid cache continues like one longer generate() (no eviction). gpt-oss:
    Gemma 2's own continued generate() already differs from its one-shot run."""
    model = tiny_model("gpt_oss", full_attention=False)
    ids, mask = prompts((30,), seed=5)
    expected = greedy(model, ids, mask, 40)
    apply_raas(model, budget=128, page_size=16)
    try:
        first = greedy(model, ids, mask, 20, return_dict_in_generate=True)
        again = greedy(model, first.sequences, None, 20, **with_cache(returned_cache(first)))
    finally:
        remove_raas(model)
    assert torch.equal(again, expected)


def test_a_cache_built_without_the_windows_is_refused():
    from raas_flex import RaaSCache, RaaSConfig

    model = tiny_model("gemma2", full_attention=False)
    ids, mask = prompts(BATCHES[1])
    apply_raas(model, budget=128, page_size=16)
    try:
        cache = RaaSCache(RaaSConfig(budget=128), 2)  # every layer full: layer 0 slides
        with pytest.raises(ValueError, match="RaaSCache.for_model"):
            greedy(model, ids, mask, 4, **with_cache(cache))
    finally:
        remove_raas(model)


@pytest.mark.parametrize("family,dropped", [("gemma2", "softcap"), ("gpt_oss", "sinks")])
def test_softcap_and_sinks_are_what_match(family, dropped, monkeypatch):
    """The equality above can fail: without the softcap (or the sinks) the tokens change."""
    import raas_flex.attention.decode as decode
    import raas_flex.attention.prefill as prefill

    model = tiny_model(family, full_attention=False)
    ids, mask = prompts(BATCHES[3])
    expected = greedy(model, ids, mask, NEW_TOKENS)
    for module in (decode, prefill):
        if dropped == "softcap":
            monkeypatch.setattr(module, "softcap_score_mod",
                                lambda cap: lambda score, b, h, q, kv: score)
        else:
            monkeypatch.setattr(module, "fold_sinks", lambda out, lse, sinks: out.float())
    got, _ = _run(model, ids, mask, NEW_TOKENS, budget=128)
    assert not torch.equal(got, expected)
