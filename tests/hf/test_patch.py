"""apply_raas / remove_raas round trip, explicit caches, continuation, refused modes."""

import dataclasses
import inspect

import pytest
import torch
from transformers import DynamicCache

from raas_flex.hf.compat import returned_cache
from tests._hf_common import fast_cpu, greedy, prompts, with_cache  # noqa: F401
from raas_flex import RaaSCache, RaaSConfig, apply_raas, remove_raas
from raas_flex.hf.patch import GENERATE_HOOK, STATE_ATTR, attention_modules, raas_state
from raas_flex.hf.tiny import tiny_model

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen3")


@pytest.fixture
def patched(model):
    apply_raas(model, budget=256, page_size=16)
    yield model
    if hasattr(model, STATE_ATTR):
        remove_raas(model)


def test_remove_restores_outputs_and_model(model):
    ids, mask = prompts((9, 4), seed=3)
    before = greedy(model, ids, mask, 24)
    logits_before = model(ids, attention_mask=mask).logits
    apply_raas(model, budget=48, page_size=16)  # small: evicts
    patched_out = greedy(model, ids, mask, 24)
    remove_raas(model)
    assert model.config._attn_implementation == "sdpa"
    assert GENERATE_HOOK not in vars(model)
    assert all(not m._forward_pre_hooks for m in attention_modules(model, 2))
    assert torch.equal(greedy(model, ids, mask, 24), before)
    assert torch.equal(model(ids, attention_mask=mask).logits, logits_before)
    assert patched_out.shape == before.shape


def test_explicit_cache_and_return_dict(patched):
    ids, mask = prompts((7,))
    cache = RaaSCache.for_model(patched)
    out = greedy(patched, ids, mask, 12, **with_cache(cache), return_dict_in_generate=True)
    assert returned_cache(out) is cache
    assert int(cache.get_seq_length()) == 7 + 12 - 1


def test_second_generate_continues_the_cache(model, patched):
    ids, mask = prompts((7,), seed=5)
    remove_raas(model)
    expected_40 = greedy(model, ids, mask, 40)
    apply_raas(model, budget=256, page_size=16)
    first = greedy(model, ids, mask, 20, return_dict_in_generate=True)
    again = greedy(model, first.sequences, None, 20, **with_cache(returned_cache(first)))
    assert torch.equal(again, expected_40)
    # a continuation chunk of several new tokens runs token by token through the policy
    extra = torch.cat([again, torch.tensor([[5, 6, 7, 8, 9]])], dim=1)
    remove_raas(model)
    expected = greedy(model, extra, None, 10)
    apply_raas(model, budget=256, page_size=16)
    cache = RaaSCache.for_model(model)
    greedy(model, again, None, 1, **with_cache(cache))  # fills the cache with `again`
    got = greedy(model, extra, None, 10, **with_cache(cache))
    assert torch.equal(got, expected)


def test_compiled_forward_keeps_the_signature(model):
    signature = inspect.signature(model.forward)
    apply_raas(model, budget=64, compile=True)  # torch.compile is lazy: nothing compiles here
    try:
        assert inspect.signature(model.forward) == signature
    finally:
        remove_raas(model)
    assert "forward" not in vars(model)


def test_apply_twice_and_remove_unpatched_are_refused(model, patched):
    with pytest.raises(ValueError, match="already applied"):
        apply_raas(model)
    remove_raas(model)
    with pytest.raises(ValueError, match="not patched"):
        remove_raas(model)


def test_config_object_with_keyword_overrides(model):
    config = RaaSConfig(budget=64, page_size=16, top_ratio=0.6)
    apply_raas(model, config)
    assert raas_state(model).config == config
    remove_raas(model)
    apply_raas(model, config=config, budget=128, policy="streaming")  # overrides win
    assert raas_state(model).config == RaaSConfig(budget=128, page_size=16, top_ratio=0.6,
                                                  policy="streaming")
    ids, mask = prompts((9,))
    assert greedy(model, ids, mask, 4).shape == (1, 13)
    remove_raas(model)


@pytest.mark.parametrize("args, options, error, match", [
    ((RaaSConfig(),), {"budget": 100}, ValueError, "multiple of page_size"),
    ((RaaSConfig(),), {"budgt": 64}, TypeError, "budgt"),
    ((1024,), {}, TypeError, "budget=1024"),
])
def test_config_object_overrides_are_validated(model, args, options, error, match):
    with pytest.raises(error, match=match):
        apply_raas(model, *args, **options)
    assert not hasattr(model, STATE_ATTR)


def test_defaults_come_from_raas_config(model):
    """apply_raas re-types none of RaaSConfig's defaults: its own parameters are only the
    model, the config and the two apply-time switches."""
    params = inspect.signature(apply_raas).parameters
    assert [p for p in params if p in {f.name for f in dataclasses.fields(RaaSConfig)}] == []
    apply_raas(model)
    assert raas_state(model).config == RaaSConfig()
    remove_raas(model)


def test_unknown_option_names_the_valid_ones(model):
    with pytest.raises(TypeError, match="valid"):
        apply_raas(model, budgt=64)
    assert not hasattr(model, STATE_ATTR)


@pytest.mark.parametrize("options, error, match", [
    ({"budget": 100}, ValueError, "multiple of page_size"),
    ({"page_size": 24}, ValueError, "page_size"),
    ({"policy": "nope"}, ValueError, "unknown policy"),
    ({"dense_layers": 3}, ValueError, "dense_layers"),
])
def test_bad_options_are_refused(model, options, error, match):
    with pytest.raises(error, match=match):
        apply_raas(model, **options)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_beams": 2}, ValueError, "not supported with RaaS"),
    ({"cache": "dynamic"}, TypeError, "RaaSCache"),
    ({"use_cache": False}, ValueError, "use_cache"),
    ({"cache_implementation": "static"}, ValueError, "cache_implementation"),
])
def test_refused_generate_modes(patched, kwargs, error, match):
    ids, mask = prompts((6,))
    if kwargs.get("cache") == "dynamic":
        kwargs = with_cache(DynamicCache(config=patched.config))
    with pytest.raises(error, match=match):
        greedy(patched, ids, mask, 4, **kwargs)


def test_plain_forward_without_raas_cache_is_refused(patched):
    ids, _ = prompts((6,))
    with pytest.raises(ValueError, match="RaaSCache"):
        patched(ids, use_cache=False)


@pytest.mark.parametrize("layers, compile", [(1, False), (3, False), (3, True)])
def test_cache_for_another_layer_count_is_refused_at_the_first_call(model, layers, compile):
    """Fewer layers used to be a bare IndexError; more were accepted silently (and with
    compile=True the cache never counted as prefilled, so the compiled path never ran)."""
    apply_raas(model, budget=256, compile=compile)
    cache = RaaSCache(RaaSConfig(budget=256), num_layers=layers)
    ids, mask = prompts((6,))
    try:
        with pytest.raises(ValueError, match=f"{layers} layers, but the model has 2.*for_model"):
            greedy(model, ids, mask, 3, **with_cache(cache))
        with pytest.raises(ValueError, match=f"{layers} layers, but the model has 2"):
            model(ids, attention_mask=mask, **with_cache(cache))  # a plain forward too
        assert not any(layer.pool is not None for layer in cache.layers)
    finally:
        remove_raas(model)


def test_reset_cache_generates_what_a_fresh_cache_generates(model):
    """reset() clears every layer back to its pre-prefill state (it used to raise); the
    budget evicts, so the first run leaves stale pages, timestamps and page ids behind."""
    apply_raas(model, budget=48, page_size=16)
    try:
        cache = RaaSCache.for_model(model)
        greedy(model, *prompts((9, 4), seed=1), 40, **with_cache(cache))
        cache.reset()
        assert int(cache.get_seq_length()) == 0 and cache.nbytes() == (0, 0)
        for lengths, seed in (((11, 6), 2), ((5,), 3)):  # same batch size, then another
            ids, mask = prompts(lengths, seed=seed)
            fresh = greedy(model, ids, mask, 40, **with_cache(RaaSCache.for_model(model)))
            assert torch.equal(greedy(model, ids, mask, 40, **with_cache(cache)), fresh)
            cache.reset()
    finally:
        remove_raas(model)


def test_graphed_decode_warms_again_after_a_reset():
    """A captured graph writes into the pools it was captured on; reset() drops them, so the
    next step must not replay that graph."""
    from raas_flex.hf.graphs import GraphedDecode
    from tests.fake_graph import FakeStepGraph

    cache = RaaSCache(RaaSConfig(), 2)
    calls = []
    graphed = GraphedDecode(lambda **kw: calls.append(1) or {"x": kw["x"] + 1}, FakeStepGraph)
    x = {"x": torch.zeros(1)}
    graphed(cache, x), graphed(cache, x)  # warm-up, capture
    assert graphed.captures == 1
    cache.reset()
    assert torch.equal(graphed(cache, x)["x"], torch.ones(1))
    assert graphed.captures == 1 and graphed._graph is None  # a direct (warming) step


def test_output_attentions_is_refused_naming_the_fix(patched):
    """RaaS attention returns no weights; transformers used to fill `attentions` with empty
    tuples. Refused at the first forward, before any layer writes the cache."""
    ids, mask = prompts((6,))
    with pytest.raises(ValueError, match="output_attentions.*remove_raas"):
        greedy(patched, ids, mask, 3, output_attentions=True, return_dict_in_generate=True)
    cache = RaaSCache.for_model(patched)
    with pytest.raises(ValueError, match="output_attentions.*remove_raas"):
        with torch.no_grad():
            patched(ids, attention_mask=mask, output_attentions=True, **with_cache(cache))
    assert not cache.is_prefilled and cache.layers[0].pool is None


def test_config_output_attentions_is_refused_at_apply_time():
    model = tiny_model("llama", attn_implementation="eager")
    model.config.output_attentions = True  # transformers allows it for eager attention only
    with pytest.raises(ValueError, match="output_attentions.*remove_raas|output_attentions=False"):
        apply_raas(model, budget=64)
    assert not hasattr(model, STATE_ATTR) and model.config._attn_implementation == "eager"


def test_raas_cache_on_unpatched_model_is_refused(model):
    apply_raas(model, budget=64)
    cache = RaaSCache.for_model(model)
    remove_raas(model)
    ids, mask = prompts((6,))
    with pytest.raises(RuntimeError, match="not patched"):
        greedy(model, ids, mask, 3, **with_cache(cache))
