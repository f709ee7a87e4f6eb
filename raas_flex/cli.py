"""`raas-flex generate`: decode with a RaaS budget from the command line.

With no --model it builds a small random-weight Llama (no downloads), so the first command
of the README runs on a fresh machine; its prompts are random token ids (random weights come
without a tokenizer) and the point is the budget's effect on speed and memory. --model PATH
loads a local checkpoint folder with its tokenizer; --prompt TEXT is then tokenized and the
generated text printed.

Every argument is checked before a model is built, and an error is one line on stderr
(exit 2 for a bad argument, 1 for a failed run); --debug shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from raas_flex import __version__
from raas_flex.cli_generate import BUILTIN_HELP, UsageError, run_generate
from raas_flex.config import ATTENTION_KERNELS, KV_DTYPES, SUPPORTED_PAGE_SIZES
from raas_flex.policies import available_policies

DTYPES = ("auto", "float32", "bfloat16", "float16")
EXAMPLES = """examples:
  raas-flex generate                          # random-weight Llama: 512 tokens on a 256 budget
  raas-flex generate --model qwen3-tiny --budget 64 --batch 3 --max-new-tokens 200
  raas-flex generate --model ./Qwen3-0.6B --prompt "What is 17 * 23?" --budget 512 --compile
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """Every option's default in --help; the examples keep their line breaks."""


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (the usage text of `generate` is long)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(prog="raas-flex", formatter_class=HelpFormatter,
                    description="Decode a Hugging Face causal LM with a fixed KV budget per "
                                "sequence (RaaS eviction as FlexAttention block masks).")
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gen = commands.add_parser("generate", help="generate with a fixed KV budget",
                              description=__doc__.split("\n\n")[1], epilog=EXAMPLES,
                              formatter_class=HelpFormatter)
    add_model_options(gen)
    add_raas_options(gen)
    add_run_options(gen)
    return parser


def add_model_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--model", default="llama-small", metavar="NAME_OR_PATH",
                     help=f"a local Hugging Face checkpoint folder (config, weights and "
                          f"tokenizer), or a built-in model: {BUILTIN_HELP}")
    gen.add_argument("--prompt", default=None, metavar="TEXT",
                     help="text to continue, tokenized with the checkpoint's tokenizer; the "
                          "generated text is printed (needs --model PATH). A checkpoint run "
                          "without it continues a short built-in question")
    gen.add_argument("--prompt-len", type=positive_int, default=32, metavar="N",
                     help="random prompt token ids per sequence (built-in models only)")
    gen.add_argument("--batch", type=positive_int, default=1, metavar="N",
                     help="sequences decoded together (a --prompt is repeated)")
    gen.add_argument("--device", default="auto",
                     help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    gen.add_argument("--dtype", default="auto", choices=DTYPES,
                     help="model dtype; auto = bfloat16 on CUDA, float32 on CPU")


def add_raas_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--budget", type=positive_int, default=256, metavar="TOKENS",
                     help="tokens kept per sequence, layer and kv head, prompt included "
                          "(a multiple of --page-size)")
    gen.add_argument("--page-size", type=int, default=16, choices=SUPPORTED_PAGE_SIZES,
                     help="tokens per page (one FlexAttention KV block)")
    gen.add_argument("--policy", default="raas", choices=available_policies(),
                     help="what to keep and attend (README: Policies)")
    gen.add_argument("--dense-layers", type=non_negative_int, default=0, metavar="N",
                     help="the first N layers keep every token")
    gen.add_argument("--attention-kernel", default="auto", choices=("auto", *ATTENTION_KERNELS),
                     help="decode kernel over the selected pages; auto = flex on CUDA or "
                          "with --kv-dtype, else sdpa (same selection through a materialised "
                          "mask: eager FlexAttention on a CPU costs ~10-50 ms a call)")
    gen.add_argument("--kv-dtype", default=None, choices=[d for d in KV_DTYPES if d],
                     help="store the K/V pool in 8 bits with per-token scales (default None: "
                          "the model's dtype)")
    gen.add_argument("--compile", action="store_true",
                     help="compile the decode step (torch.compile, one graph); its compile "
                          "time is reported apart from the decode speed")


def add_run_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--max-new-tokens", type=positive_int, default=512, metavar="N",
                     help="tokens to generate per sequence")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy")
    gen.add_argument("--ignore-eos", action="store_true",
                     help="keep decoding past the end-of-sequence token (a checkpoint's; "
                          "built-in models have none)")
    gen.add_argument("--seed", type=non_negative_int, default=0,
                     help="seed of the random weights, random prompt ids and sampling")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.add_argument("--debug", action="store_true",
                     help="show full tracebacks instead of one-line errors")


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def version_line() -> str:
    """raas-flex's version and the torch / transformers it runs with (no imports)."""
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"raas-flex {__version__} (torch {installed('torch')}, "
            f"transformers {installed('transformers')})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `raas-flex` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        run_generate(args)
    except KeyboardInterrupt:
        print("raas-flex: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure becomes one line, or --debug
        if args.debug:
            raise
        print(f"raas-flex {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    return 0


def one_line(error: BaseException) -> str:
    """The error's message on one line; the type is named unless it is a plain bad value."""
    message = " ".join(str(error).split())
    if isinstance(error, (ValueError, TypeError)):
        return message or type(error).__name__
    return f"{type(error).__name__}: {message} (--debug shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
