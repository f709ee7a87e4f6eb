"""Small budgets: generation runs to the end and the cache stays at L + P tokens."""

import pytest
import torch

from raas_flex.hf.compat import returned_cache
from tests._hf_common import fast_cpu, greedy, prompts, with_cache  # noqa: F401
from raas_flex import RaaSCache, apply_raas, held_positions, remove_raas
from raas_flex.hf.tiny import tiny_model

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

BUDGET, PAGE = 64, 16
LENGTHS = (16, 10, 5)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def _tensor_bytes(layer) -> tuple[int, int]:
    """(K/V bytes, other bytes) of every tensor the layer holds, counted independently."""
    pool = layer.pool
    kv = pool.k.nbytes + pool.v.nbytes
    meta = [t for name, t in vars(pool).items() if isinstance(t, torch.Tensor)
            and name not in ("k", "v")]
    meta += list(pool.policy_state.values()) + [layer.seen, layer.step]
    return kv, sum(t.nbytes for t in meta)


def _run(model, new_tokens: int, **options):
    ids, mask = prompts(LENGTHS)
    apply_raas(model, budget=BUDGET, page_size=PAGE, **options)
    try:
        out = greedy(model, ids, mask, new_tokens, return_dict_in_generate=True)
    finally:
        remove_raas(model)
    assert out.sequences.shape == (len(LENGTHS), ids.shape[1] + new_tokens)
    return returned_cache(out)


def test_cache_bytes_bounded_and_independent_of_length(model):
    sizes = {}
    for new_tokens in (96, 192):
        cache = _run(model, new_tokens)
        assert isinstance(cache, RaaSCache)
        B, H, D = len(LENGTHS), model.config.num_key_value_heads, model.config.head_dim
        bound = 2 * B * H * (BUDGET + PAGE) * D * 4  # K and V of L + P fp32 tokens
        per_layer = [_tensor_bytes(layer) for layer in cache.layers]
        for kv, meta in per_layer:
            assert kv <= bound
            assert meta <= 0.10 * kv
        seen = max(LENGTHS) + new_tokens
        for layer in cache.layers:
            # pads are never written: each row counts only its real tokens
            assert layer.pool.length.tolist() == [n + new_tokens - 1 for n in LENGTHS]
            held = held_positions(layer.pool, seen).sum(-1)  # [B, H]
            assert int(held.max()) <= BUDGET
        assert cache.nbytes() == tuple(map(sum, zip(*per_layer)))
        sizes[new_tokens] = per_layer
    assert sizes[96] == sizes[192]


def test_sampling_runs_to_the_end(model):
    ids, mask = prompts(LENGTHS, seed=1)
    apply_raas(model, budget=BUDGET, page_size=PAGE)
    try:
        torch.manual_seed(0)
        out = model.generate(ids, attention_mask=mask, max_new_tokens=40, do_sample=True,
                             top_k=20)
    finally:
        remove_raas(model)
    assert out.shape == (3, ids.shape[1] + 40)


def test_dense_policy_sizes_pool_from_max_new_tokens(model):
    ids, mask = prompts(LENGTHS)
    expected = greedy(model, ids, mask, 40)
    cache = _run(model, 40, policy="dense")
    capacity = cache.layers[0].pool.capacity
    assert capacity >= max(LENGTHS) + 40 - 1
    apply_raas(model, budget=BUDGET, page_size=PAGE, policy="dense")
    try:
        assert torch.equal(greedy(model, ids, mask, 40), expected)
    finally:
        remove_raas(model)


def test_dense_layers_keep_everything_in_early_layers(model):
    cache = _run(model, 96, dense_layers=1)
    assert cache.layers[0].keeps_all and not cache.layers[1].keeps_all
    assert cache.layers[0].pool.capacity >= max(LENGTHS) + 95
    assert cache.layers[1].pool.capacity == BUDGET


def test_keep_all_without_max_length_is_refused(model):
    ids, _ = prompts((8,))
    apply_raas(model, budget=BUDGET, page_size=PAGE, policy="dense")
    try:
        cache = RaaSCache.for_model(model)
        with pytest.raises(ValueError, match="max_cache_len"):
            model(ids, **with_cache(cache), use_cache=True)
    finally:
        remove_raas(model)


def test_prompt_that_fills_the_budget_is_refused(model):
    ids, mask = prompts((40,))
    apply_raas(model, budget=BUDGET, page_size=PAGE)
    try:
        with pytest.raises(ValueError, match="raise budget"):
            greedy(model, ids, mask, 4)
    finally:
        remove_raas(model)


def test_keep_all_continuation_beyond_its_pool_is_refused(model):
    ids, mask = prompts((8,))
    apply_raas(model, budget=BUDGET, page_size=PAGE, policy="dense")
    try:
        first = greedy(model, ids, mask, 10, return_dict_in_generate=True)
        with pytest.raises(ValueError, match="cannot grow"):
            greedy(model, first.sequences, None, 40, **with_cache(returned_cache(first)))
        roomy = RaaSCache.for_model(model, max_cache_len=64)
        first = greedy(model, ids, mask, 10, **with_cache(roomy), return_dict_in_generate=True)
        more = greedy(model, first.sequences, None, 30, **with_cache(roomy))
        assert more.shape == (1, 8 + 40)
    finally:
        remove_raas(model)
