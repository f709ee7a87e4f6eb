"""Serving decode under tensor parallelism (issue 19): RaaS against the live-length dense
baseline on a random-weight Llama sharded over N GPUs.

    torchrun --nproc_per_node N -m bench.e2e.tensor_parallel --model llama-3-8b --batch 16
    torchrun --nproc_per_node 2 -m bench.e2e.tensor_parallel --model llama-3-70b --kv-budget-gib 40

The model is built directly in shards (bench.e2e.sharded_llama: q/k/v/gate/up by output
columns, o/down by input columns, one all-reduce after each), so every rank decodes every
sequence of the batch with its 1/N of the heads: `batch` is the batch of the run and of each
GPU, and total tokens/s = batch x timed steps / seconds. N must divide the kv heads. Each
method's cache on a rank holds only its local kv heads (num_key_value_heads / N): checked on
the cache the attention filled, not assumed. The batch is --batch, or the one whose caches fit
--kv-budget-gib per GPU (a method's per-sequence bytes over its local heads).

The timed cells are bench.e2e.serve's (run_dense, run_raas): the length is reached by
fast-forward (dense: stand-in K/V in a full-length cache; RaaS: real steps over a full,
evicting pool at positions up to the length), then a window of real decode steps is timed on
each rank. Before timing, a greedy check (generate(), eager): a --check-prompt-token prompt,
--check-new tokens, dense and RaaS with an evicting budget and with one above the length.
--write-reference saves those tokens (the 1-GPU run); --reference compares against them (the
N-GPU run); without a reference, RaaS above the length is compared with dense under the same
sharding. Rows say what was compared. The check also keeps, per new token up to the first
difference, dense's top-2 logit margin and the largest logit difference of RaaS above the
length (logit_agreement): it tells a near-tie flip from bf16 rounding apart from a wrong
attention, where fp32 does not fit (the 70B shape).

Rank 0 appends one run to --out (default bench/results/e2e/serving_tp_<device>.json) and
rewrites the file after every cell, so a run cut short keeps its rows. Peak memory is each
rank's own; rank 0 reports the largest.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist

from bench.e2e.models import llama_config
from bench.e2e.serve import (DENSE, PROMPT_TOKENS, add_step_args, decode_settings, run_dense,
                             run_header, run_raas, write_result)
from bench.e2e.serve_sizing import (GIB, batch_that_fits, dense_bytes_per_seq, dense_capacity,
                                    raas_bytes_per_seq)
from bench.e2e.serve_steps import DenseRunner, RaaSRunner
from bench.e2e.sharded_llama import build_sharded_llama
from bench.e2e.tp_check import comparisons, logit_line, read_reference, run_check

METHODS = {"dense": DENSE, "raas": "raas"}  # --methods name -> row method


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama-3-8b", help="a bench.e2e.models.SHAPES name")
    p.add_argument("--decode-tokens", type=int, default=32768,
                   help="decode length N reached before the window (after a PROMPT_TOKENS "
                   "prompt)")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=["dense", "raas"])
    p.add_argument("--budget", type=int, default=2048, help="RaaS L")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--batch", type=int, nargs="+",
                      help="the batch (per GPU, and of the run): one for every method, or one "
                      "per --methods entry; the 1-vs-N GPU scaling runs pass the same values")
    size.add_argument("--kv-budget-gib", type=float,
                      help="each method runs the batch whose caches fit this many GiB per GPU")
    add_step_args(p)
    p.add_argument("--check-prompt", type=int, default=48)
    p.add_argument("--check-new", type=int, default=64)
    p.add_argument("--check-budget", type=int, default=96,
                   help="RaaS L of the check, below prompt + new so pages are evicted")
    p.add_argument("--check-dtype", choices=["float32", "bfloat16"], default="float32",
                   help="float32: a separate fp32 build for the check, so 1 and N GPUs sum "
                   "alike (bf16 partial sums may flip near-tied tokens); bfloat16: the timed "
                   "model itself (a 70B does not fit in fp32)")
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--reference", default=None, help="check tokens of a 1-GPU run to equal")
    p.add_argument("--write-reference", default=None, help="save this run's check tokens")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.batch is not None and len(args.batch) not in (1, len(args.methods)):
        p.error(f"--batch takes one value or one per method ({args.methods}), got {args.batch}.")
    if args.no_check and (args.reference or args.write_reference):
        p.error("--reference and --write-reference need the check; drop --no-check.")
    if args.check_budget >= args.check_prompt + args.check_new:
        p.error("--check-budget must be below --check-prompt + --check-new (the check must "
                "evict); lower it.")
    return args


class Ranks:
    """This process's place in the run: rank, world size, device, mesh (None on one rank).
    Without torchrun's environment it is one rank and no process group."""

    def __init__(self, device: str) -> None:
        self.distributed = "RANK" in os.environ
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        if self.distributed:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.mesh = None
        if self.world > 1:
            from torch.distributed.device_mesh import init_device_mesh
            self.mesh = init_device_mesh(self.device.type, (self.world,))

    def agree(self, value):
        """Rank 0's value on every rank (decisions that must not differ between ranks)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's value, in rank order."""
        if not self.distributed:
            return [value]
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.distributed:
            dist.destroy_process_group()


def local_kv_config(config, ranks: int) -> SimpleNamespace:
    """The KV-relevant sizes of one rank's share: its kv heads are num_key_value_heads/ranks."""
    if config.num_key_value_heads % ranks:
        raise ValueError(f"{config.num_key_value_heads} kv heads cannot be split over {ranks} "
                         f"ranks; run a number of GPUs that divides them.")
    return SimpleNamespace(num_hidden_layers=config.num_hidden_layers, head_dim=config.head_dim,
                           num_key_value_heads=config.num_key_value_heads // ranks)


def plan(args, config, ranks: int) -> list[dict]:
    """One cell per method at --decode-tokens: its per-GPU bytes per sequence and batch."""
    local = local_kv_config(config, ranks)
    cells = []
    for i, name in enumerate(args.methods):
        if name == "dense":
            capacity = dense_capacity(PROMPT_TOKENS, args.decode_tokens)
            cell = dict(method=DENSE, L=None, capacity=capacity,
                        kv_bytes_per_seq=dense_bytes_per_seq(local, capacity))
        else:
            from raas_flex import RaaSConfig
            raas = RaaSConfig(budget=args.budget, page_size=args.page_size)
            cell = dict(method="raas", L=args.budget,
                        kv_bytes_per_seq=raas_bytes_per_seq(local, raas))
        if args.batch is not None:
            fit = batch = args.batch[min(i, len(args.batch) - 1)]
        else:
            fit = batch_that_fits(int(args.kv_budget_gib * GIB), cell["kv_bytes_per_seq"])
            batch = min(fit, args.max_batch)
        cells.append(dict(cell, lengths=[args.decode_tokens], batch=batch, batch_fit=fit,
                          series="tp"))
    return cells


def local_weight_bytes(model) -> int:
    """Bytes of this rank's parameters (its shards and the replicated ones)."""
    from torch.distributed.tensor import DTensor
    seen = {}
    for p in model.parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        seen[local.data_ptr()] = local.nbytes
    return sum(seen.values())


def run_cell(model, cell: dict, args, facts: dict) -> dict:
    torch.manual_seed(0)  # every rank draws the same prompts
    compile_ = not args.no_compile
    graphs = compile_ and model.device.type == "cuda"
    if cell["method"] == DENSE:
        runner = DenseRunner(model, compile_, graphs, dynamic=False)
        try:
            return run_dense(runner, cell, args, facts)[0]
        finally:
            runner.close()
    runner = RaaSRunner(model, cell["L"], args.page_size, compile_, graphs)
    try:
        return run_raas(runner, cell, args, facts)[0]
    finally:
        runner.close()


def tp_row(row: dict, ranks: Ranks, config, compared: dict, run: dict) -> dict:
    """serve's row plus the issue's per-GPU fields (gathered over the ranks)."""
    local = config.num_key_value_heads // ranks.world
    heads = ranks.gather(row["kv_heads"])
    if set(heads) != {local}:
        raise RuntimeError(f"the {row['method']} caches hold {heads} kv heads per rank, not "
                           f"{local} ({config.num_key_value_heads} over {ranks.world} ranks): "
                           "the attention was not sharded by heads.")
    peaks = ranks.gather(row["peak_gib"])
    kv_bytes = ranks.gather(row["kv_bytes_total"])
    out = dict(gpus=ranks.world, model=row["model"], method=row["method"], batch=row["batch"],
               decode_tokens=row["decode_tokens"], tokens_per_s=row["tokens_per_s"],
               kv_bytes_per_gpu=max(kv_bytes), peak_gib_per_gpu=max(peaks),
               **compared[row["method"]], kv_heads_per_gpu=local,
               peak_gib_per_rank=peaks, kv_bytes_per_rank=kv_bytes,
               compiled_graphs_per_rank=ranks.gather(row.get("compiled_graphs")),
               **{k: run[k] for k in ("device", "torch", "transformers", "command")},
               deadline_s=run["args"]["deadline_s"])
    for key, value in row.items():  # serve's fields: step_ms, L, fast_forward, graphs, ...
        if key not in ("peak_gib", "kv_heads"):
            out.setdefault(key, value)
    return out


def run_all(args, ranks: Ranks, run: dict, write) -> None:
    t0 = time.time()
    config = llama_config(args.model)
    cells = plan(args, config, ranks.world)  # refuses a world that does not divide the heads
    reference = read_reference(args.reference, args) if args.reference else None
    model = build_sharded_llama(args.model, ranks.mesh, ranks.device, torch.bfloat16)
    run["build_s"] = round(time.time() - t0, 1)
    check = None
    if not args.no_check:
        check = run_check(args, ranks.mesh, ranks.device, ranks.world, model)
        run["check"] = check
        run["check_s"] = round(time.time() - t0 - run["build_s"], 1)
        if args.write_reference and ranks.rank == 0:
            write_result(args.write_reference, check)
        if ranks.rank == 0:
            print(logit_line(check["logits_raas_full_vs_dense"]), flush=True)
    compared = comparisons(check, reference, ranks.world)
    write()
    facts = dict(model=args.model, weights_bytes=local_weight_bytes(model),
                 other_weights_bytes=0, bandwidth_bytes_per_s=run["bandwidth_bytes_per_s"])
    for cell in cells:
        name = (f"{args.model} {cell['method']} L={cell['L']} B={cell['batch']} "
                f"N={args.decode_tokens}")
        late = args.deadline_s is not None and time.time() - run["t0"] > args.deadline_s
        if ranks.agree(late):
            run["skipped"].append(name)
            write()
            continue
        start = time.time()
        try:
            row = tp_row(run_cell(model, cell, args, facts), ranks, config, compared, run)
        except Exception as error:  # recorded, then raised: a rank alone cannot go on
            run["errors"].append(f"{name}: {error!r}")  # without hanging the others
            write()
            raise
        row["cell_s"] = round(time.time() - start, 1)
        run["rows"].append(row)
        write()
        if ranks.rank == 0:
            print(_line(row), flush=True)
        if ranks.device.type == "cuda":
            torch.cuda.empty_cache()


def _line(r: dict) -> str:
    return (f"{r['gpus']} GPU {r['model']} {r['method']} L={r['L']} N={r['decode_tokens']} "
            f"B={r['batch']}: {r['tokens_per_s']:.0f} tok/s, {r['step_ms']:.2f} ms/step, KV/GPU "
            f"{r['kv_bytes_per_gpu'] / GIB:.2f} GiB, peak/GPU {r['peak_gib_per_gpu']:.1f} GiB, "
            f"tokens_equal {r['tokens_equal']}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    ranks = Ranks(args.device)
    run = run_header(ranks.device, f"torchrun --nproc_per_node {ranks.world} -m "
                     "bench.e2e.tensor_parallel", argv, args)
    out = args.out or f"bench/results/e2e/serving_tp_{run['device'].split()[-1].lower()}.json"
    run.update(gpus=ranks.world, model=args.model, rows=[], skipped=[], errors=[],
               t0=time.time())
    earlier = _runs(out) if ranks.rank == 0 else []

    def write() -> None:
        if ranks.rank == 0:
            run["wall_s"] = round(time.time() - run["t0"], 1)
            write_result(out, {"runs": earlier + [{k: v for k, v in run.items() if k != "t0"}]})

    try:
        with decode_settings():
            run_all(args, ranks, run, write)
    finally:
        write()
        ranks.close()
    return run


def _runs(path: str) -> list[dict]:
    """The runs already in `path` (this run is appended to them)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        data = json.load(f)
    if "runs" not in data:
        raise ValueError(f"{path} is not a tensor-parallel results file (no 'runs'); pass "
                         "another --out.")
    return data["runs"]


if __name__ == "__main__":
    main()
