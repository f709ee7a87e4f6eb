"""Accuracy vs KV budget for every policy, and a teacher-forced fidelity mode for any model.

    # the trained reasoner, every policy, L = 1/16 .. 1/2 of a 2048-token decode (GPU)
    python -m bench.accuracy accuracy --model bench/accuracy/checkpoints/reasoner --decode-tokens 2048 --n 128
    # every task family (registers, lemmas, recall, mixture): one plot per family
    python -m bench.accuracy accuracy --model $CKPT --families all --n 64
    python -m bench.accuracy fidelity --model $CKPT --data task --families all --n 8
    # any local HF causal LM on a text/jsonl file: per-step KL(dense || policy), top-1 agreement
    python -m bench.accuracy fidelity --model /path/to/hf_model --data notes.jsonl --decode-tokens 1024
    # runs split by policy (each under a time limit), then one table and plot
    python -m bench.accuracy merge bench/results/accuracy/accuracy_a.json bench/results/accuracy/accuracy_b.json --tag all

Writes bench/results/accuracy/accuracy_<tag>.{json,md,png} (or fidelity_<tag>.{json,md}); a
run or merge over several families writes one plot per family, accuracy_<tag>_<family>.png.
Rows: {family, policy, budget_fraction, accuracy, ci_low, ci_high, n, mean_generated_tokens,
dtype, ...}; runs in bf16 and fp32 (--dtype) merge into one file, told apart by dtype. Policies run
through raas_flex.apply_raas(model, budget=, page_size=, policy=) + model.generate(); the row
'hf' is plain transformers greedy decoding, the reference every policy is judged against.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from bench.accuracy.harness.fidelity import FidelitySettings, load_sequences, run_fidelity
from bench.accuracy.harness.policies import FRACTIONS, PEER_POLICIES, raas_applier
from bench.accuracy.harness.report import accuracy_plot, environment, markdown_table, write_json
from bench.accuracy.harness.sweep import SweepSettings, dtype_name, run_accuracy
from bench.accuracy.harness.variants import named_rows
from bench.accuracy.tasks import FAMILY_NAMES

ACC_COLUMNS = ["family", "policy", "budget_fraction", "budget_tokens", "dtype", "accuracy", "ci_low",
               "ci_high", "n", "chain_accuracy", "mean_generated_tokens", "phoenix_error_share"]
FID_COLUMNS = ["family", "policy", "budget_fraction", "budget_tokens", "mean_kl", "p95_kl", "max_kl",
               "top1_agreement", "n_sequences", "n_steps"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("accuracy", "fidelity"):
        q = sub.add_parser(name)
        q.add_argument("--model", type=Path, required=True, help="checkpoint / HF model folder")
        q.add_argument("--decode-tokens", type=int, default=2048 if name == "accuracy" else 1024)
        q.add_argument("--n", type=int, default=128 if name == "accuracy" else 8)
        q.add_argument("--policies", nargs="*", default=list(PEER_POLICIES),
                       help="none: only the plain-HF reference row (needs no apply_raas)")
        q.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
        q.add_argument("--page-size", type=int, default=16)
        q.add_argument("--policy-config", type=json.loads, default={},
                       help='extra apply_raas keywords as JSON, e.g. \'{"top_ratio": 0.5}\'')
        q.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        q.add_argument("--attention-kernel", default="auto", choices=["auto", "flex", "sdpa"],
                       help="auto: flex on CUDA; sdpa on CPU (same selection through a "
                            "materialised mask; eager CPU flex is ~4x slower per token)")
        q.add_argument("--compile", default="auto", choices=["auto", "yes", "no"],
                       help="compile the decode step and replay it as a CUDA graph "
                            "(apply_raas compile=True, cuda_graph=True on CUDA). auto: yes on "
                            "CUDA (one budget took > 150 s on the H200 without, 25-35 s with), "
                            "no on the CPU (each new graph costs ~25 s to compile there)")
        q.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                       help="default: bfloat16 on CUDA, float32 on CPU")
        q.add_argument("--out-dir", type=Path, default=Path("bench/results/accuracy"))
        q.add_argument("--tag", default=None, help="results file suffix")
        q.add_argument("--no-progress", action="store_true")
        q.add_argument("--families", nargs="+", default=["registers"],
                       choices=[*FAMILY_NAMES, "all"],
                       help="task families (bench/accuracy/tasks/families.py); 'all' = every "
                            "one. fidelity: with --data task only")
    acc = sub.choices["accuracy"]
    acc.add_argument("--seed", type=int, default=0, help="test-split seed of the problems")
    acc.add_argument("--batch-size", type=int, default=64)
    acc.add_argument("--slack", type=float, default=1.25, help="max_new_tokens / correct length")
    acc.add_argument("--no-reference", action="store_true", help="skip the plain-HF 'hf' row")
    acc.add_argument("--no-plot", action="store_true")
    fid = sub.choices["fidelity"]
    fid.add_argument("--data", required=True,
                     help="a .txt or .jsonl file, or 'task' for generated test problems")
    fid.add_argument("--prompt-tokens", type=int, default=128)
    merge = sub.add_parser("merge", help="combine accuracy JSONs (e.g. one run per policy)")
    merge.add_argument("inputs", nargs="+", type=Path)
    merge.add_argument("--out-dir", type=Path, default=Path("bench/results/accuracy"))
    merge.add_argument("--tag", required=True)
    merge.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if "all" in getattr(args, "families", ()):
        args.families = list(FAMILY_NAMES)
    return args


def load_any(path: Path, device: str, dtype: torch.dtype):
    """(model, encode) for a reasoner checkpoint or any local HF causal LM (no downloads)."""
    from bench.accuracy.reasoner import is_checkpoint, load_checkpoint

    if is_checkpoint(path):
        model, tok, spec = load_checkpoint(path, device, dtype)
        return model, tok.encode, (tok, spec)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), (lambda text: tokenizer(text).input_ids), None


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.mode == "merge":
        return merge_results(args.inputs, args.out_dir, args.tag, plot=not args.no_plot)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    model, encode, task = load_any(args.model, args.device, dtype)
    kernel = args.attention_kernel
    if kernel == "auto":
        kernel = "flex" if args.device.startswith("cuda") else "sdpa"
    args.policy_config = {"attention_kernel": kernel, **decode_options(args.compile, args.device),
                          **args.policy_config}
    tag = args.tag or f"{args.model.name}_D{args.decode_tokens}"
    meta = {"model": str(args.model), "dtype": str(dtype), **environment(),
            "args": {k: str(v) for k, v in vars(args).items()}}
    # each (policy, L) is its own compiled graph (reused across families): Dynamo's default
    # limit of 8 per code object would fail a run over every policy and L under fullgraph
    graphs = 2 * len(args.policies) * len(args.fractions) + 8  # x2: a smaller last batch
    with torch._dynamo.config.patch(recompile_limit=max(8, graphs)):
        if args.mode == "accuracy":
            return _accuracy(args, model, task, tag, meta)
        return _fidelity(args, model, encode, task, tag, meta)


def decode_options(choice: str, device: str) -> dict:
    """apply_raas's compile/cuda_graph options for --compile on `device` (see its help)."""
    on_cuda = device.startswith("cuda")
    if choice == "no" or (choice == "auto" and not on_cuda):
        return {"compile": False, "cuda_graph": False}
    return {"compile": True, "cuda_graph": on_cuda}


def merge_results(inputs: list[Path], out_dir: Path, tag: str, plot: bool = True) -> dict:
    """One accuracy file from several runs on the same problems; a later file's row replaces
    an earlier one for the same (policy, budget_fraction)."""
    runs = [json.loads(Path(p).read_text()) for p in inputs]
    keys = ("decode_tokens", "n", "seed")
    first = {k: runs[0]["settings"][k] for k in keys}
    for path, run in zip(inputs, runs):
        if {k: run["settings"][k] for k in keys} != first:
            raise ValueError(f"{path} ran other problems ({keys} differ from {inputs[0]}).")
    rows = {}
    for run in runs:
        for r in named_rows(run):
            # files from before the families (and dtype column): registers, the run's dtype
            r.setdefault("family", run["settings"].get("family") or "registers")
            r.setdefault("dtype", dtype_name(run["meta"].get("dtype", "")))
            rows[(r["family"], r["policy"], r["budget_fraction"], r["dtype"])] = r
    skipped = [s for run in runs for s in named_rows(run, "skipped")]
    payload = {"rows": list(rows.values()), "skipped": skipped, "settings": runs[0]["settings"],
               "merged_from": merged_sources(inputs, runs), "calls": merged_calls(runs),
               "notes": merged_notes(runs), "meta": runs[-1]["meta"]}
    _write_accuracy(out_dir, tag, payload, plot)
    return payload


def merged_sources(inputs: list[Path], runs: list[dict]) -> list[str]:
    """The files a merge read, a merged input's own sources in its place."""
    return [src for path, run in zip(inputs, runs) for src in run.get("merged_from", [str(path)])]


CALL_KEYS = ("git_commit", "device", "torch", "transformers")


def merged_calls(runs: list[dict]) -> list[dict]:
    """Where and from which commit each merged run came, in order, each once. Why: a table
    grown over several GPU calls (a merge of merges) must still name every call's commit and
    versions, not only the last one's `meta`."""
    calls: list[dict] = []
    for run in runs:
        meta = run["meta"]
        for call in run.get("calls") or [{k: meta.get(k) for k in CALL_KEYS}]:
            if call not in calls:
                calls.append(call)
    return calls


def merged_notes(runs: list[dict]) -> list[str]:
    """Every input's hand-written `notes` (what a call's rows need said), each once, in
    order: a resumed table must not drop them."""
    notes: list[str] = []
    for run in runs:
        notes += [n for n in run.get("notes", []) if n not in notes]
    return notes


def _write_accuracy(out_dir: Path, tag: str, payload: dict, plot: bool) -> Path:
    """accuracy_<tag>.json, .md and .png from a payload with rows/skipped/settings/meta."""
    s, meta = payload["settings"], payload["meta"]
    name = Path(meta["model"]).name
    out = write_json(out_dir / f"accuracy_{tag}.json", payload)
    table = markdown_table(payload["rows"], ACC_COLUMNS)
    skipped = "".join(f"\n- skipped {r['policy']} at {r['budget_fraction']:g}: {r['reason']}"
                      for r in payload["skipped"])
    (out_dir / f"accuracy_{tag}.md").write_text(
        f"Accuracy vs budget, {name}, decode {s['decode_tokens']} tokens, n={s['n']}, "
        f"{meta['device']}\n\n{table}{skipped}\n")
    if plot:
        families = list(dict.fromkeys(r.get("family", "registers") for r in payload["rows"]))
        for fam in families:  # one plot per family; a line per policy (and dtype)
            rows = [{**r, "policy": _line_label(r, payload["rows"])} for r in payload["rows"]
                    if r.get("family", "registers") == fam]
            path = f"accuracy_{tag}.png" if len(families) == 1 else f"accuracy_{tag}_{fam}.png"
            accuracy_plot(rows, out_dir / path,
                          f"{name}, {fam}: exact answers at decode {s['decode_tokens']}, "
                          f"n={s['n']}, Wilson 95% ({meta['device']})")
    print(table + skipped)
    print(json.dumps({"results": str(out), "rows": len(payload["rows"])}))
    return out


def _line_label(row: dict, rows: list[dict]) -> str:
    """The policy, plus the dtype where the file holds more than one."""
    if len({r.get("dtype") for r in rows}) > 1:
        return f"{row['policy']} ({row.get('dtype')})"
    return row["policy"]


def _accuracy(args, model, task, tag: str, meta: dict) -> dict:
    if task is None:
        raise ValueError(f"{args.model} is not a reasoner checkpoint (no reasoner.json); "
                         f"accuracy mode needs one; use the fidelity mode for other models.")
    tok, spec = task
    applier = raas_applier() if args.policies else None
    rows, skipped, per_family = [], [], {}
    for fam in args.families:
        s = SweepSettings(decode_tokens=args.decode_tokens, family=fam, n=args.n, seed=args.seed,
                          policies=tuple(args.policies), fractions=tuple(args.fractions),
                          page_size=args.page_size, batch_size=args.batch_size, slack=args.slack,
                          reference=not args.no_reference, policy_config=args.policy_config)
        result = run_accuracy(model, tok, spec, s, applier, progress=not args.no_progress)
        rows += result.pop("rows")
        skipped += result.pop("skipped")
        per_family[fam] = result  # max_new_tokens, correct_decode_tokens, prompt_tokens
    settings = {**asdict(s), "family": None, "families": list(args.families)}
    payload = {"rows": rows, "skipped": skipped, "per_family": per_family,
               "settings": settings, "meta": meta}
    _write_accuracy(args.out_dir, tag, payload, plot=not args.no_plot)
    return payload


def _fidelity(args, model, encode, task, tag: str, meta: dict) -> dict:
    s = FidelitySettings(prompt_tokens=args.prompt_tokens, decode_tokens=args.decode_tokens,
                         n=args.n, policies=tuple(args.policies), fractions=tuple(args.fractions),
                         page_size=args.page_size, policy_config=args.policy_config)
    if args.data == "task":
        if task is None:
            raise ValueError("--data task needs a reasoner checkpoint.")
        from bench.accuracy.tasks import make_problems
        tok, spec = task
        sets = {fam: [(tok.encode(p.prompt), tok.encode(p.chain)) for p in make_problems(
            "test", args.n, args.decode_tokens, spec=spec, family=fam)] for fam in args.families}
    else:
        sets = {None: load_sequences(args.data, encode, s)}
    result = {"rows": [], "curves": {}, "skipped": []}
    for fam, pairs in sets.items():  # per family: mean KL and top-1 agreement vs L
        part = run_fidelity(model, pairs, s, raas_applier(), progress=not args.no_progress)
        result["rows"] += [{"family": fam, **r} for r in part["rows"]]
        result["skipped"] += [{"family": fam, **r} for r in part["skipped"]]
        result["curves"].update({f"{fam}/{k}" if fam else k: v for k, v in part["curves"].items()})
    payload = {**result, "settings": asdict(s), "data": str(args.data), "meta": meta}
    out = write_json(args.out_dir / f"fidelity_{tag}.json", payload)
    table = markdown_table(result["rows"], FID_COLUMNS)
    (args.out_dir / f"fidelity_{tag}.md").write_text(
        f"Teacher-forced fidelity vs dense, {args.model.name}, data {args.data}, "
        f"{meta['device']}\n\n{table}")
    print(table)
    print(json.dumps({"results": str(out), "rows": len(result["rows"])}))
    return payload


if __name__ == "__main__":
    main()
