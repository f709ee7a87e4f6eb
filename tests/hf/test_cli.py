"""`raas-flex generate` in-process, with small settings: the summary, argument checks made
before any model is built, one-line errors vs --debug, --help/--version, a local checkpoint
with its tokenizer and --prompt, the timing split and warnings above the progress bar."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import raas_flex
import raas_flex.cli_generate as run
import raas_flex.cli_report as report
from raas_flex.cli import build_parser, main
from raas_flex.hf.tiny import tiny_model
from tests._hf_common import WORDS, save_word_tokenizer
from tests._hf_common import fast_cpu  # noqa: F401

TINY = ["generate", "--model", "llama-tiny", "--no-progress"]

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range


def test_generate_prints_summary(capsys):
    code = main(["generate", "--model", "llama-tiny", "--budget", "64", "--max-new-tokens",
                 "100", "--batch", "2", "--prompt-len", "10"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["new_tokens"] == 2 * 100
    assert summary["tokens_per_s"] > 0 and summary["decode_steps"] == 99 - 2
    assert summary["kv_bytes"] < summary["dense_kv_bytes"]
    assert summary["stats"]["total"]["evicted_pages"] == 2 * (7 - 4)  # ceil(109/16) - 64/16
    assert lines[0].startswith("prefill") and lines[1].startswith("warm-up")
    assert "tokens/s" in lines[2] and "dense" in lines[3] and "preallocated" in lines[3]
    assert any(line.split()[:1] == ["all"] for line in lines)  # the stats table's total row


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as building a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the arguments were checked")

    monkeypatch.setattr(run, "load_model", refuse)


@pytest.mark.parametrize("argv, named", [
    (["--batch", "0"], "--batch"),
    (["--prompt-len", "0"], "--prompt-len"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--budget", "-16"], "--budget"),
    (["--batch", "two"], "--batch"),
    (["--page-size", "8"], "--page-size"),
    (["--dtype", "float64"], "--dtype"),
])
def test_bad_values_are_refused_by_the_parser(argv, named, capsys, no_model):
    with pytest.raises(SystemExit) as exit_:
        main(TINY + argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "--help" in err


@pytest.mark.parametrize("argv, says", [
    (["--budget", "70"], "multiple of page_size"),
    (["--prompt-len", "60", "--budget", "64"], "raise budget to at least 96"),
    (["--prompt", "hello"], "--prompt needs --model PATH"),
    (["--model", "no/such/folder"], "nor a checkpoint folder"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--device", "nonsense"], "is not a device"),
    (["--kv-dtype", "int8", "--compile", "--device", "cpu"], "compiles on CUDA only"),
])
def test_bad_combinations_are_refused_before_the_model(argv, says, capsys, no_model):
    assert main(TINY + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raas-flex generate: error:")
    assert says in err


def test_run_errors_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    assert main(TINY + ["--dense-layers", "5", "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "raas-flex generate: error: dense_layers=5 exceeds the model's 2 layers."
    with pytest.raises(ValueError, match="exceeds the model's 2 layers"):
        main(TINY + ["--dense-layers", "5", "--max-new-tokens", "2", "--debug"])

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory\nwhile allocating")

    monkeypatch.setattr(run, "load_model", crash)
    assert main(TINY) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("raas-flex generate: error: RuntimeError: out of memory while allocating "
                   "(--debug shows the traceback)")
    with pytest.raises(RuntimeError, match="out of memory"):
        main(TINY + ["--debug"])


def generate_parser():
    return build_parser()._subparsers._group_actions[0].choices["generate"]


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(default: llama-small)", "(default: 256)", "(default: 16)",
                    "(default: raas)", "(default: 512)", "(default: auto)"):
        assert default in out
    assert "examples:" in out
    for action in generate_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"raas-flex {raas_flex.__version__} (torch {torch.__version__}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random Llama and a word-level tokenizer over WORDS, saved like a hub folder."""
    path = tmp_path_factory.mktemp("checkpoint")
    tokenizer = save_word_tokenizer(path)
    tiny_model("llama", vocab_size=len(WORDS)).save_pretrained(path)
    return path, tokenizer


def test_checkpoint_prompt_prints_the_models_text(checkpoint, capsys):
    path, tokenizer = checkpoint
    assert main(["generate", "--model", str(path), "--prompt", "the cat sat on",
                 "--max-new-tokens", "12", "--budget", "64", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(path)  # no RaaS; 16 tokens fit the budget
    ids = tokenizer(["the cat sat on"], return_tensors="pt")["input_ids"]
    expected = plain.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                              do_sample=False, pad_token_id=0)
    assert lines[0] == tokenizer.decode(expected[0], skip_special_tokens=True)
    assert lines[0].startswith("the cat sat on ")
    summary = json.loads(lines[-1])
    assert summary["prompt_len"] == ids.shape[1] and summary["new_tokens"] == 12


def test_checkpoint_without_prompt_continues_the_default_question(checkpoint, capsys):
    path, tokenizer = checkpoint
    assert main(["generate", "--model", str(path), "--batch", "2", "--max-new-tokens", "4",
                 "--budget", "128", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[0] ") and lines[1].startswith("[1] ")
    tokens = tokenizer(run.DEFAULT_PROMPT)["input_ids"]
    assert json.loads(lines[-1])["prompt_len"] == len(tokens)


def test_checkpoint_without_tokenizer_is_refused(tmp_path, capsys, no_model):
    tiny_model("llama").config.save_pretrained(tmp_path)
    assert main(["generate", "--model", str(tmp_path), "--prompt", "hi"]) == 2
    assert "has no tokenizer" in capsys.readouterr().err


def test_timing_keeps_prefill_and_warmup_out_of_tokens_per_s():
    # token 0 at 1 s (prefill), steps 1-2 slow (compiling), steps 3-4 one second each
    timing = report.Timing.split(0.0, [1.0, 11.0, 12.0, 13.0, 14.0], 15.0, warmup=2)
    assert (timing.prefill_s, timing.warmup_steps, timing.warmup_s) == (1.0, 2, 11.0)
    assert (timing.decode_steps, timing.decode_s, timing.total_s) == (2, 2.0, 15.0)
    assert timing.tokens_per_s(batch=3) == 3.0
    short = report.Timing.split(0.0, [1.0, 2.0], 2.0, warmup=2)
    assert (short.warmup_steps, short.decode_steps) == (0, 1)  # one step stays timed
    assert report.Timing.split(0.0, [1.0], 1.0).tokens_per_s(1) is None  # no decode step


def test_warnings_print_above_the_bar_and_flex_as_one_note(capsys):
    from tqdm import tqdm

    flex = ("flex_attention called without torch.compile() - this will use an unfused "
            "implementation.\n\nSOLUTION: Use torch.compile(flex_attention)(...)")
    bar = tqdm(total=3, desc="decode")
    with report.warnings_above_bar():
        warnings.simplefilter("always")
        bar.update(1)
        warnings.warn(flex, UserWarning)
        warnings.warn("something else", FutureWarning)
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert f"\n{report.FLEX_EAGER_NOTE}\n" in err.replace("\r", "\n")
    assert "FutureWarning: something else" in err and "SOLUTION" not in err
