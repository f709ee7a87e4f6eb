"""The full accuracy table in one command: every family x policy x L x dtype, plus fidelity,
run as many small processes at once (one GPU is mostly idle under one decode loop of a 15M
model), under a wall-clock cap, resumable across capped calls.

    python -m bench.accuracy.table --model $CKPT --out-dir $OUT --minutes 9
    # a later call: pass what the last one returned, it skips the units already measured
    python -m bench.accuracy.table --model $CKPT --out-dir $OUT --minutes 9 \\
        --resume bench/results/accuracy/v2/accuracy_v2.json bench/results/accuracy/v2/fidelity_v2.json

A unit is one (policy, dtype, L) accuracy run over every family not yet measured (one
process of `python -m bench.accuracy accuracy --families ...`), or one policy's fidelity run
in bf16 over its Ls and the families: a decode step is compiled once, for the first family,
and reused for the others (raas_flex.hf.compiled shares one backend per model, so Dynamo keeps the graph
across apply_raas calls). Dense runs once per dtype, at L = 1 (keep-all). Units start in priority
order (bf16 accuracy, fidelity, then fp32) while the time left exceeds --unit-seconds; a unit
cut off by the cap is not recorded and runs again on resume, where only the (family, policy,
dtype, L) cells missing from the --resume files run. Writes at most 8 files (what the device
machine returns): accuracy_<tag>.{json,md}, one accuracy_<tag>_<family>.png per family,
fidelity_<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.accuracy.cli import (
    FID_COLUMNS, merge_results, merged_calls, merged_notes, merged_sources,
)
from bench.accuracy.harness.policies import FRACTIONS, PEER_POLICIES
from bench.accuracy.harness.report import markdown_table, write_json
from bench.accuracy.harness.variants import named_rows, parse_variant
from bench.accuracy.tasks import FAMILY_NAMES

# the goal's comparison set (issue 17: raas / streaming / h2o vs the new policy) and dense
FP32_POLICIES = ("dense", "raas", "raas_guard", "streaming", "h2o")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--tag", default="v2")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock cap for this call")
    p.add_argument("--unit-seconds", type=float, default=120.0,
                   help="expected length of one unit (process start ~15 s, one compile, 4 "
                        "families' decodes): none starts with less time left")
    p.add_argument("--procs", type=int, default=None,
                   help="units at once (default: 8 per GPU, at most CPU cores / 2)")
    p.add_argument("--families", nargs="+", default=list(FAMILY_NAMES))
    p.add_argument("--policies", nargs="+", default=list(PEER_POLICIES),
                   help="registered names, or variants with changed settings as the rows name "
                        "them: h2o_decay@h2o_decay_gamma=0.999 (apply_raas keywords)")
    p.add_argument("--fp32-policies", nargs="*", default=list(FP32_POLICIES),
                   help="policies also run in float32 (none: bf16 only)")
    p.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    p.add_argument("--decode-tokens", type=int, default=2048)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0,
                   help="test-split seed of the accuracy units' problems; another seed (with "
                        "another --tag) is a held-out check of a setting chosen on seed 0")
    p.add_argument("--fidelity-n", type=int, default=8, help="0: no fidelity units")
    p.add_argument("--fidelity-fractions", nargs="+", type=float, default=[1 / 8, 1 / 4])
    p.add_argument("--resume", nargs="*", type=Path, default=[],
                   help="accuracy_/fidelity_ JSONs of earlier calls: their units are skipped")
    p.add_argument("--dry-run", action="store_true", help="list the units and stop")
    args = p.parse_args(argv)
    for variant in dict.fromkeys(args.policies + args.fp32_policies):
        check_variant(variant)
    return args


def check_variant(variant: str) -> None:
    """Refuse a misspelt policy or setting before any unit starts (not in a worker's log)."""
    from raas_flex import RaaSConfig
    policy, config = parse_variant(variant)
    try:
        RaaSConfig().with_fields(policy=policy, **config)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"--policies {variant}: {error}") from error


Cell = tuple[str, str, str, str, float]  # (mode, family, policy, dtype, budget fraction)
Unit = tuple[str, str, str, tuple[float, ...], tuple[str, ...]]  # (mode, policy, dtype, Ls, families)


def all_cells(args) -> list[Cell]:
    """Every (mode, family, policy, dtype, L) of the table, in the order units start; dense
    only at L = 1 (it keeps everything)."""
    def fractions(policy: str, wanted) -> list[float]:
        return [1.0] if parse_variant(policy)[0] == "dense" else [_key(f) for f in wanted]

    acc16 = [("accuracy", f, p, "bfloat16", x) for p in args.policies
             for x in fractions(p, args.fractions) for f in args.families]
    fid = [("fidelity", f, p, "bfloat16", x) for p in args.policies
           for x in fractions(p, args.fidelity_fractions) for f in args.families
           if args.fidelity_n > 0]
    acc32 = [("accuracy", f, p, "float32", x) for p in args.fp32_policies
             for x in fractions(p, args.fractions) for f in args.families]
    return acc16 + fid + acc32


def group_units(cells: list[Cell]) -> list[Unit]:
    """Accuracy: one unit per (policy, dtype, L) over its families, so one process compiles
    that decode step once and reuses it for every family. Fidelity: one unit per policy over
    its Ls and families, so each family's dense reference (eager, the slow part) is decoded
    once per policy, not once per L. First-seen order kept."""
    units: dict[tuple, tuple[dict, dict]] = {}
    for mode, fam, policy, dtype, frac in cells:
        key = (mode, policy, dtype) + ((frac,) if mode == "accuracy" else ())
        fracs, fams = units.setdefault(key, ({}, {}))
        fracs[frac], fams[fam] = None, None  # ordered sets
    return [(*key[:3], tuple(fracs), tuple(fams)) for key, (fracs, fams) in units.items()]


def done_cells(paths: list[Path]) -> set[Cell]:
    """Cells with a row (or a skip, e.g. a budget too small for the policy) in earlier results
    files (a unit writes its file only when complete)."""
    done = set()
    for path in paths:
        data = json.loads(path.read_text())
        mode = "fidelity" if path.name.startswith("fidelity") else "accuracy"
        for r in data["rows"] + data.get("skipped", []):
            dtype = r.get("dtype", "bfloat16") if mode == "accuracy" else "bfloat16"
            done.add((mode, r.get("family") or "registers", r["policy"], dtype,
                      _key(r["budget_fraction"])))
    return done


def _key(fraction: float) -> float:
    """A budget fraction as a cell key (1/3 read back from JSON equals 1/3 passed in)."""
    return round(float(fraction), 9)


def unit_name(unit: Unit) -> str:
    mode, policy, dtype, fracs, _ = unit
    return f"{mode}_{policy}_{dtype}_" + "_".join(f"{f:g}" for f in fracs)


def unit_command(args, unit: Unit, out: Path) -> list[str]:
    mode, variant, dtype, fracs, fams = unit
    policy, config = parse_variant(variant)
    common = ["--model", str(args.model), "--families", *fams, "--policies", policy,
              *(["--policy-config", json.dumps(config)] if config else []),
              "--fractions", *map(str, fracs), "--decode-tokens", str(args.decode_tokens),
              "--dtype", dtype, "--out-dir", str(out), "--tag", unit_name(unit), "--no-progress"]
    if mode == "accuracy":
        return [sys.executable, "-m", "bench.accuracy", "accuracy", *common, "--n", str(args.n),
                "--batch-size", str(args.n), "--seed", str(args.seed), "--no-reference",
                "--no-plot"]
    return [sys.executable, "-m", "bench.accuracy", "fidelity", *common, "--data", "task",
            "--n", str(args.fidelity_n)]


def gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except ImportError:
        return 0


def run_units(args, units, work: Path) -> list[dict]:
    """Run units on `procs` workers until none is left or the cap is near; a log per unit."""
    deadline = time.monotonic() + 60 * args.minutes
    gpus = gpu_count()
    procs = args.procs or max(1, min(8 * max(gpus, 1), (os.cpu_count() or 2) // 2))
    queue, lock, log = list(units), threading.Lock(), []

    def worker(i: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        while True:
            with lock:
                left = deadline - time.monotonic()
                if not queue or left < args.unit_seconds:
                    return
                unit = queue.pop(0)
            start, name = time.monotonic(), unit_name(unit)
            with open(work / f"{name}.log", "w") as f:
                try:
                    rc = subprocess.run(unit_command(args, unit, work), stdout=f, stderr=subprocess.STDOUT,
                                        env=env, timeout=max(1.0, left - 15)).returncode
                except subprocess.TimeoutExpired:
                    rc = "cut off by the cap"
            entry = {"unit": name, "families": list(unit[4]), "rc": rc,
                     "seconds": round(time.monotonic() - start, 1),
                     "family_seconds": family_seconds(work / f"{unit[0]}_{name}.json")}
            with lock:
                log.append(entry)
            print(json.dumps(entry), flush=True)
            if rc != 0:
                tail = (work / f"{name}.log").read_text()[-2000:]
                print(f"--- {entry['unit']} failed:\n{tail}", flush=True)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(procs)]
    print(json.dumps({"units": len(units), "procs": procs, "gpus": gpus,
                      "minutes": args.minutes}), flush=True)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return log


def family_seconds(path: Path) -> dict[str, float] | None:
    """Seconds per family of a finished accuracy unit (the first includes the compile, the
    others show whether the compiled step was reused); None for fidelity or a failed unit."""
    if not path.exists():
        return None
    return {r["family"]: r["seconds"] for r in json.loads(path.read_text())["rows"] if "seconds" in r} or None


def merge_fidelity(paths: list[Path], out: Path, tag: str) -> Path | None:
    """One fidelity file: the rows of every input (a later file's row wins per key)."""
    if not paths:
        return None
    runs = [json.loads(p.read_text()) for p in paths]
    rows = {}
    for run in runs:
        for r in named_rows(run):
            rows[(r.get("family"), r["policy"], r["budget_fraction"])] = r
    payload = {"rows": list(rows.values()), "curves": {k: v for run in runs
                                                       for k, v in run.get("curves", {}).items()},
               "skipped": [s for run in runs for s in named_rows(run, "skipped")],
               "settings": runs[-1]["settings"], "meta": runs[-1]["meta"],
               "merged_from": merged_sources(paths, runs), "calls": merged_calls(runs),
               "notes": merged_notes(runs)}
    path = write_json(out / f"fidelity_{tag}.json", payload)
    (out / f"fidelity_{tag}.md").write_text(
        f"Teacher-forced fidelity vs dense per family, {runs[-1]['meta']['device']}\n\n"
        + markdown_table(sorted(payload["rows"], key=lambda r: (r.get("family") or "", r["policy"],
                                                                r["budget_fraction"])), FID_COLUMNS))
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    done = done_cells(args.resume)
    units = group_units([c for c in all_cells(args) if c not in done])
    print(json.dumps({"to_run": len(units), "cells_done": len(done)}), flush=True)
    if args.dry_run:
        print("\n".join(f"{unit_name(u)}: {' '.join(u[4])}" for u in units))
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="acc_units_") as tmp:
        work = Path(tmp)
        log = run_units(args, units, work)
        acc = [p for p in args.resume if p.name.startswith("accuracy")] + sorted(work.glob("accuracy_*.json"))
        fid = [p for p in args.resume if p.name.startswith("fidelity")] + sorted(work.glob("fidelity_*.json"))
        if acc:
            merge_results(acc, args.out_dir, args.tag)
        merge_fidelity(fid, args.out_dir, args.tag)
    done = done_cells([p for p in (args.out_dir / f"accuracy_{args.tag}.json",
                                   args.out_dir / f"fidelity_{args.tag}.json") if p.exists()])
    left = group_units([c for c in all_cells(args) if c not in done])
    print(json.dumps({"ran": log, "units_left": [unit_name(u) for u in left]}), flush=True)


if __name__ == "__main__":
    main()
