"""Shared helpers for the Hugging Face tests: fast CPU settings and left-padded prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.attention.flex_attention as flex_module

from raas_flex.hf.compat import CACHE_ARG

PAD = 0
WORDS = ["<pad>", "<unk>", "<s>", "</s>", "the", "cat", "sat", "on", "a", "mat", "dog", "ran",
         "to", "red", "big", "small"]


@pytest.fixture(scope="module", autouse=True)
def fast_cpu():
    """One thread (the CPU is shared; oversubscribed threads spin) and flex's eager
    reference called directly instead of re-traced by dynamo on every call. Both only
    change speed: the same math runs. Restored after the module."""
    threads = torch.get_num_threads()
    debug = flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG
    torch.set_num_threads(1)
    flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True
    yield
    flex_module._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = debug
    torch.set_num_threads(threads)


def prompts(lengths: tuple[int, ...], vocab: int = 128, seed: int = 0):
    """(input_ids, attention_mask), left-padded to the longest of `lengths`."""
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(2, vocab, (len(lengths), T), generator=gen)
    mask = (torch.arange(T) >= T - torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, PAD), mask


def greedy(model, ids, mask, new_tokens: int, **kwargs):
    return model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                          do_sample=False, **kwargs)


def eager_then_compiled(model, ids, mask, new_tokens: int, **options):
    """Greedy tokens of eager RaaS decode with `options`, then the model left patched with
    the same options and compile=True; returns (eager tokens, its CompiledDecode)."""
    from raas_flex import apply_raas, remove_raas
    from raas_flex.hf.state import raas_state

    apply_raas(model, **options)
    try:
        eager = greedy(model, ids, mask, new_tokens)
    finally:
        remove_raas(model)
    apply_raas(model, compile=True, **options)
    return eager, raas_state(model).compiled


def with_cache(cache) -> dict:
    """generate()/forward kwargs that pass `cache` under the installed transformers' name."""
    return {CACHE_ARG: cache}


def save_word_tokenizer(path):
    """A word-level tokenizer over WORDS saved in `path` (a model of vocab len(WORDS) beside
    it makes a hub-like checkpoint folder); returns it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>",
                                        pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(path)
    return tokenizer
