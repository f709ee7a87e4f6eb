"""The full accuracy table in one command: every family x policy x L x dtype, plus fidelity,
run as many small processes at once (one GPU is mostly idle under one decode loop of a 15M
model), under a wall-clock cap, resumable across capped calls.

    python -m bench.accuracy.table --model $CKPT --out-dir $OUT --minutes 9
    # a later call: pass what the last one returned, it skips the units already measured
    python -m bench.accuracy.table --model $CKPT --out-dir $OUT --minutes 9 \\
        --resume bench/results/accuracy/v2/accuracy_v2.json bench/results/accuracy/v2/fidelity_v2.json

A unit is one (family, policy, dtype) accuracy run over every --fractions (one process of
`python -m bench.accuracy accuracy`), or one (family, policy) fidelity run in bf16. Units
start in priority order (bf16 accuracy, fidelity, then fp32) while the time left exceeds
--unit-seconds; a unit cut off by the cap is not recorded and runs again on resume. Writes at
most 8 files (what the device machine returns): accuracy_<tag>.{json,md}, one
accuracy_<tag>_<family>.png per family, fidelity_<tag>.{json,md}.
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

from bench.accuracy.cli import FID_COLUMNS, merge_results
from bench.accuracy.harness.policies import FRACTIONS, PEER_POLICIES
from bench.accuracy.harness.report import markdown_table, write_json
from bench.accuracy.tasks import FAMILY_NAMES

# the goal's comparison set (issue 17: raas / streaming / h2o vs the new policy) and dense
FP32_POLICIES = ("dense", "raas", "raas_guard", "streaming", "h2o")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--tag", default="v2")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock cap for this call")
    p.add_argument("--unit-seconds", type=float, default=150.0,
                   help="expected length of one unit: none starts with less time left")
    p.add_argument("--procs", type=int, default=None,
                   help="units at once (default: 8 per GPU, at most CPU cores / 2)")
    p.add_argument("--families", nargs="+", default=list(FAMILY_NAMES))
    p.add_argument("--policies", nargs="+", default=list(PEER_POLICIES))
    p.add_argument("--fp32-policies", nargs="*", default=list(FP32_POLICIES),
                   help="policies also run in float32 (none: bf16 only)")
    p.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    p.add_argument("--decode-tokens", type=int, default=2048)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--fidelity-n", type=int, default=8, help="0: no fidelity units")
    p.add_argument("--fidelity-fractions", nargs="+", type=float, default=[1 / 8, 1 / 4])
    p.add_argument("--resume", nargs="*", type=Path, default=[],
                   help="accuracy_/fidelity_ JSONs of earlier calls: their units are skipped")
    p.add_argument("--dry-run", action="store_true", help="list the units and stop")
    return p.parse_args(argv)


def all_units(args) -> list[tuple[str, str, str, str]]:
    """(mode, family, policy, dtype) in the order they start."""
    acc16 = [("accuracy", f, p, "bfloat16") for p in args.policies for f in args.families]
    fid = [("fidelity", f, p, "bfloat16") for p in args.policies for f in args.families
           if args.fidelity_n > 0]
    acc32 = [("accuracy", f, p, "float32") for p in args.fp32_policies for f in args.families]
    return acc16 + fid + acc32


def done_units(paths: list[Path]) -> set[tuple[str, str, str, str]]:
    """Units with rows in earlier results files (a unit writes its file only when complete)."""
    done = set()
    for path in paths:
        data = json.loads(path.read_text())
        mode = "fidelity" if path.name.startswith("fidelity") else "accuracy"
        for r in data["rows"] + data.get("skipped", []):
            dtype = r.get("dtype", "bfloat16") if mode == "accuracy" else "bfloat16"
            done.add((mode, r.get("family") or "registers", r["policy"].split("@")[0], dtype))
    return done


def unit_command(args, unit, out: Path) -> list[str]:
    mode, fam, policy, dtype = unit
    common = ["--model", str(args.model), "--families", fam, "--policies", policy,
              "--decode-tokens", str(args.decode_tokens), "--dtype", dtype,
              "--out-dir", str(out), "--tag", "_".join(unit), "--no-progress"]
    if mode == "accuracy":
        return [sys.executable, "-m", "bench.accuracy", "accuracy", *common, "--n", str(args.n),
                "--batch-size", str(args.n), "--no-reference", "--no-plot",
                "--fractions", *map(str, args.fractions)]
    return [sys.executable, "-m", "bench.accuracy", "fidelity", *common, "--data", "task",
            "--n", str(args.fidelity_n), "--fractions", *map(str, args.fidelity_fractions)]


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
            start = time.monotonic()
            with open(work / f"{'_'.join(unit)}.log", "w") as f:
                try:
                    rc = subprocess.run(unit_command(args, unit, work), stdout=f, stderr=subprocess.STDOUT,
                                        env=env, timeout=max(1.0, left - 15)).returncode
                except subprocess.TimeoutExpired:
                    rc = "cut off by the cap"
            entry = {"unit": "/".join(unit), "rc": rc, "seconds": round(time.monotonic() - start, 1)}
            with lock:
                log.append(entry)
            print(json.dumps(entry), flush=True)
            if rc != 0:
                tail = (work / f"{'_'.join(unit)}.log").read_text()[-2000:]
                print(f"--- {entry['unit']} failed:\n{tail}", flush=True)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(procs)]
    print(json.dumps({"units": len(units), "procs": procs, "gpus": gpus,
                      "minutes": args.minutes}), flush=True)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return log


def merge_fidelity(paths: list[Path], out: Path, tag: str) -> Path | None:
    """One fidelity file: the rows of every input (a later file's row wins per key)."""
    if not paths:
        return None
    runs = [json.loads(p.read_text()) for p in paths]
    rows = {}
    for run in runs:
        for r in run["rows"]:
            rows[(r.get("family"), r["policy"], r["budget_fraction"])] = r
    payload = {"rows": list(rows.values()), "curves": {k: v for run in runs
                                                       for k, v in run.get("curves", {}).items()},
               "skipped": [s for run in runs for s in run.get("skipped", [])],
               "settings": runs[-1]["settings"], "meta": runs[-1]["meta"],
               "merged_from": [p.name for p in paths]}
    path = write_json(out / f"fidelity_{tag}.json", payload)
    (out / f"fidelity_{tag}.md").write_text(
        f"Teacher-forced fidelity vs dense per family, {runs[-1]['meta']['device']}\n\n"
        + markdown_table(sorted(payload["rows"], key=lambda r: (r.get("family") or "", r["policy"],
                                                                r["budget_fraction"])), FID_COLUMNS))
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    done = done_units(args.resume)
    units = [u for u in all_units(args) if u not in done]
    print(json.dumps({"to_run": len(units), "already_done": len(done)}), flush=True)
    if args.dry_run:
        print("\n".join("/".join(u) for u in units))
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
    left = [u for u in all_units(args) if u not in done_units(
        [p for p in (args.out_dir / f"accuracy_{args.tag}.json",
                     args.out_dir / f"fidelity_{args.tag}.json") if p.exists()])]
    print(json.dumps({"ran": log, "units_left": ["/".join(u) for u in left]}), flush=True)


if __name__ == "__main__":
    main()
