"""Serving throughput at a fixed GPU KV-memory budget: dense decode vs RaaS (issue 16).

For each model and decode length N, every method runs as many concurrent sequences as its
KV cache lets fit in --kv-budget-gib (dense: a full-length cache per sequence; RaaS: an
L-token pool plus its page metadata, from bench.e2e.serve_sizing), capped at --max-batch,
and reports total decoded tokens/s, tokens/s per sequence, KV bytes per sequence, peak GPU
memory and the batch reached. The dense baseline is bench.e2e.dense_live: a static cache
whose FlexAttention reads only the live tokens, compiled and replayed as a CUDA graph. RaaS
runs through apply_raas(model, compile=True, cuda_graph=True), what users get. Lengths are
reached by fast-forwarding the caches, then a window of real whole-model decode steps is
timed (bench.e2e.serve_steps says how). Rows in the "equal_batch" series run RaaS at the
dense batch of the longest length, for the per-step latency comparison at equal batch.

    python -m bench.e2e.serve                    # H200: both models, 8k/32k/64k, 40 GiB
    python -m bench.e2e.serve --models tiny --device cpu --no-compile --lengths 256 512 \
        --kv-budget-gib 0.001 --budgets 64 --window 4     # CPU smoke run

Writes bench/results/e2e/serving_<device>.json (rows written after every cell, so a run cut
short keeps what it measured) and serving_<device>_tps.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch

from bench.e2e.models import build_llama, kv_bytes_per_token, llama_config, weight_bytes
from bench.e2e.serve_sizing import (GIB, batch_that_fits, dense_bytes_per_seq, dense_capacity,
                                    raas_bytes_per_seq)
from bench.e2e.serve_steps import (DenseRunner, RaaSRunner, copy_bandwidth, run_steps, sync,
                                   timed_window)

PROMPT_TOKENS = 128  # the prompt every sequence is accounted with (dense reserves it too)
DENSE = "dense_flex_live"
FAST_FORWARD = {
    DENSE: "full-length cache filled with stand-in K/V in bulk; window of real decode steps "
           "at positions prompt+N-window .. prompt+N-1, each attending every position up to "
           "its own",
    "raas": "real prefill of a min(raas_prompt, L/2)-token prompt, then real decode steps "
            "until the pool is full plus fill_extra more (pages evicted), then the window of "
            "real decode steps at positions prompt+N-window .. prompt+N-1",
}


def add_step_args(p: argparse.ArgumentParser) -> None:
    """The options of the decode cells (run_dense, run_raas), shared with
    bench.e2e.tensor_parallel."""
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=256,
                   help="cap on concurrent sequences (prefill, graph capture and fill time)")
    p.add_argument("--window", type=int, default=64, help="timed decode steps per cell")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps before the window "
                   "(the first compiles, the second captures the CUDA graph)")
    p.add_argument("--raas-prompt", type=int, default=512,
                   help="RaaS fast-forward prompt (at most L/2; eager prefill materialises "
                   "its [B, Hq, T, T] scores)")
    p.add_argument("--fill-extra", type=int, default=128,
                   help="RaaS decode steps after the pool is full, before any window")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="skip cells that start after this many seconds (recorded as skipped)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--no-compile", action="store_true", help="eager, no CUDA graphs (CPU)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["llama-3.2-1b", "llama-3-8b"])
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 65536],
                   help="decode tokens N (after a PROMPT_TOKENS prompt)")
    p.add_argument("--kv-budget-gib", type=float, default=40.0)
    p.add_argument("--budgets", type=int, nargs="+", default=[2048, 1024], help="RaaS L")
    add_step_args(p)
    p.add_argument("--no-equal-batch", action="store_true")
    p.add_argument("--dense-compile", choices=["static", "dynamic"], default="static",
                   help="static: one graph per cell (flex's decode kernel; the baseline). "
                   "dynamic: one graph for every batch and length, but a symbolic batch makes "
                   "Inductor use flex's main kernel, 4x slower on the H200 (kept to show it)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def plan(args, model_config) -> list[dict]:
    """The cells for one model, most important first: dense at each length, RaaS at each L
    (its batch does not depend on N), then the equal-batch series."""
    budget = int(args.kv_budget_gib * GIB)
    cells = []
    dense_batches = {}
    for n in args.lengths:
        capacity = dense_capacity(PROMPT_TOKENS, n)
        per_seq = dense_bytes_per_seq(model_config, capacity)
        fit = batch_that_fits(budget, per_seq)
        dense_batches[n] = min(fit, args.max_batch)
        cells.append(dict(method=DENSE, L=None, lengths=[n], batch=dense_batches[n],
                          batch_fit=fit, kv_bytes_per_seq=per_seq, capacity=capacity,
                          series="budget"))
    for L in args.budgets:
        from raas_flex import RaaSConfig
        per_seq = raas_bytes_per_seq(model_config, RaaSConfig(budget=L, page_size=args.page_size))
        fit = batch_that_fits(budget, per_seq)
        cells.append(dict(method="raas", L=L, lengths=list(args.lengths),
                          batch=min(fit, args.max_batch), batch_fit=fit,
                          kv_bytes_per_seq=per_seq, series="budget"))
    if not args.no_equal_batch:
        equal = dense_batches[max(args.lengths)]
        L = max(args.budgets)
        per_seq = next(c["kv_bytes_per_seq"] for c in cells if c["L"] == L)
        cells.append(dict(method="raas", L=L, lengths=list(args.lengths), batch=equal,
                          batch_fit=equal, kv_bytes_per_seq=per_seq, series="equal_batch"))
        for n in args.lengths:
            if dense_batches[n] != equal:
                base = next(c for c in cells if c["method"] == DENSE and c["lengths"] == [n])
                cells.append(dict(base, batch=equal, batch_fit=equal, series="equal_batch"))
    return cells


def floor_ms(weights: int, read_kv: int, bandwidth: float | None) -> float | None:
    """The step's bandwidth floor: weights + the K/V it reads, at the measured copy rate."""
    return None if not bandwidth else (weights + read_kv) / bandwidth * 1e3


def run_dense(runner: DenseRunner, cell: dict, args, facts: dict) -> list[dict]:
    n = cell["lengths"][0]
    batch, capacity = cell["batch"], cell["capacity"]
    cache = runner.new_cache(batch, capacity)
    step = runner.stepper(cache, batch)
    end = PROMPT_TOKENS + n  # the window's last step writes position end - 1
    start = end - args.window
    ids = torch.ones((batch, 1), dtype=torch.long, device=runner.device)
    t0 = time.perf_counter()
    ids = run_steps(step, ids, start - args.warmup, args.warmup)
    sync(runner.device)
    warm_s = time.perf_counter() - t0
    window, _ = timed_window(step, ids, start, args.window)
    live = (start + end + 1) / 2  # tokens read per sequence, on average over the window
    read = int(cache.nbytes() * live / capacity)  # this cache's heads (a rank's, under TP)
    row = _row(cell, n, window, facts, read, args, cache_bytes=cache.nbytes())
    row["kv_heads"] = cache.layers[0].keys.shape[1]
    row.update(warmup_s=round(warm_s, 1), dense_compile=("dynamic" if runner.dynamic else
                                                          "static") if not args.no_compile else "eager")
    if not args.no_compile:
        row["compiled_graphs"] = runner.graphs  # all dense cells of this model so far
    if runner.graphed is not None:
        row["graph_captures"] = runner.graphed.captures
        runner.graphed.reset()
    del cache
    return [row]


def run_raas(runner: RaaSRunner, cell: dict, args, facts: dict) -> list[dict]:
    L, batch, device = cell["L"], cell["batch"], runner.model.device
    prompt_len = min(args.raas_prompt, L // 2)
    prompt = torch.randint(1, runner.model.config.vocab_size - 1, (batch, prompt_len),
                           device=device)
    t0 = time.perf_counter()
    cache, ids = runner.prefill(prompt)
    step = runner.stepper(cache, batch)
    fill = L - prompt_len + args.fill_extra
    ids = run_steps(step, ids, prompt_len, fill)
    sync(device)
    fill_s = time.perf_counter() - t0
    kv, meta = cache.nbytes()
    rows = []
    for n in cell["lengths"]:
        end = PROMPT_TOKENS + n
        start = end - args.window
        ids = run_steps(step, ids, start - args.warmup, args.warmup)
        window, ids = timed_window(step, ids, start, args.window)
        row = _row(cell, n, window, facts, kv + meta, args, cache_bytes=kv + meta)
        row.update(fill_s=round(fill_s, 1), prompt_tokens_ff=prompt_len, fill_steps=fill,
                   kv_bytes_measured_per_seq=(kv + meta) // batch, metadata_bytes=meta)
        row["kv_heads"] = cache.layers[0].num_heads  # as the attention handed them over
        rows.append(row)
    compiled = getattr(runner.model.forward, "graphs", None)  # CompiledDecode's count
    graphed = getattr(runner.model.forward, "graphed", None)
    for row in rows:
        row.update(compiled_graphs=compiled,
                   graph_captures=graphed.captures if graphed is not None else None)
    if graphed is not None:
        graphed.reset()
    del cache
    return rows


def _row(cell: dict, n: int, window, facts: dict, read_kv: int, args, cache_bytes: int) -> dict:
    batch = cell["batch"]
    tps = batch * window.steps / window.seconds
    floor = floor_ms(facts["weights_bytes"], read_kv, facts["bandwidth_bytes_per_s"])
    return dict(method=cell["method"], L=cell["L"], model=facts["model"], decode_tokens=n,
                kv_budget_gib=args.kv_budget_gib, batch=batch, batch_fit=cell["batch_fit"],
                capped=cell["batch_fit"] > batch, series=cell["series"],
                tokens_per_s=tps, per_seq_tokens_per_s=tps / batch, step_ms=window.step_ms,
                window_steps=window.steps, kv_bytes_per_seq=cell["kv_bytes_per_seq"],
                kv_bytes_total=cache_bytes,
                # the window's peak, less the other model's weights resident beside it
                peak_gib=max(window.peak_bytes - facts["other_weights_bytes"], 0) / GIB,
                floor_ms=floor, floor_fraction=(floor / window.step_ms) if floor else None,
                fast_forward=FAST_FORWARD[cell["method"]])


def tiers(cells_by_model: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """Every (model, cell) in run order: first dense and the largest L under the budget for
    every model, then the equal-batch series, then the other budgets: a deadline cuts the
    least important cells."""
    def rank(cell: dict, largest: int) -> int:
        if cell["series"] == "equal_batch":
            return 1
        return 0 if cell["method"] == DENSE or cell["L"] == largest else 2
    ordered = []
    for tier in range(3):
        for shape, cells in cells_by_model.items():
            largest = max(c["L"] for c in cells if c["L"] is not None)
            ordered += [(shape, c) for c in cells if rank(c, largest) == tier]
    return ordered


class Models:
    """Each model built once (all fit together on an H200) and its dense runner."""

    def __init__(self, args, result: dict) -> None:
        self.args, self.result = args, result
        self.device = torch.device(args.device)
        self.models: dict = {}
        self.dense: dict[str, DenseRunner] = {}

    def model(self, shape: str):
        if shape not in self.models:
            torch.manual_seed(0)
            model = build_llama(shape, self.device)
            self.models[shape] = model
            self.result["models"][shape] = dict(weights_bytes=weight_bytes(model),
                                                kv_bytes_per_token=kv_bytes_per_token(model.config))
        return self.models[shape]

    def facts(self, shape: str) -> dict:
        self.model(shape)
        weights = {s: m["weights_bytes"] for s, m in self.result["models"].items()
                   if s in self.models}
        return dict(model=shape, weights_bytes=weights[shape],
                    other_weights_bytes=sum(weights.values()) - weights[shape],
                    bandwidth_bytes_per_s=self.result["bandwidth_bytes_per_s"])

    def static_dense(self, shape: str, error: Exception) -> DenseRunner:
        """Replace a dynamic-shape dense runner that failed by a static one (one graph per
        cell); the failure is recorded."""
        self.result["errors"].append(f"{shape} dense dynamic compile failed, static from "
                                     f"here on: {error!r}")
        self.dense.pop(shape).close()
        self.dense[shape] = DenseRunner(self.model(shape), True, self.device.type == "cuda",
                                        dynamic=False)
        return self.dense[shape]

    def dense_runner(self, shape: str) -> DenseRunner:
        if shape not in self.dense:
            compile_ = not self.args.no_compile
            self.dense[shape] = DenseRunner(
                self.model(shape), compile_, compile_ and self.device.type == "cuda",
                dynamic=compile_ and self.args.dense_compile == "dynamic")
        return self.dense[shape]

    def close(self) -> None:
        for runner in self.dense.values():
            runner.close()
        self.models.clear()


def run_cell(models: Models, shape: str, cell: dict, args) -> list[dict]:
    facts = models.facts(shape)
    if cell["method"] == DENSE:
        runner = models.dense_runner(shape)
        try:
            return run_dense(runner, cell, args, facts)
        except Exception as error:
            if not runner.dynamic:
                raise
            return run_dense(models.static_dense(shape, error), cell, args, facts)
    compile_ = not args.no_compile
    runner = RaaSRunner(models.model(shape), cell["L"], args.page_size, compile_,
                        compile_ and models.device.type == "cuda")
    try:
        return run_raas(runner, cell, args, facts)
    finally:
        runner.close()


def run_all(args, result: dict, out: str) -> None:
    from tqdm import tqdm
    order = tiers({shape: plan(args, llama_config(shape)) for shape in args.models})
    models = Models(args, result)
    total = sum(len(cell["lengths"]) for _, cell in order)
    try:
        with tqdm(total=total, unit="row", disable=args.no_progress, file=sys.stdout) as bar:
            for shape, cell in order:
                name = (f"{shape} {cell['method']} L={cell['L']} B={cell['batch']} "
                        f"N={cell['lengths']} [{cell['series']}]")
                bar.set_description(name[:60])
                if args.deadline_s is not None and time.time() - result["t0"] > args.deadline_s:
                    result["skipped"].append(name)
                    bar.update(len(cell["lengths"]))
                    continue
                t0 = time.time()
                try:
                    rows = run_cell(models, shape, cell, args)
                except Exception as error:  # recorded; the next cells still run
                    result["errors"].append(f"{name}: {error!r}")
                    bar.write(f"FAILED {name}: {error!r}")
                    rows = []
                for row in rows:
                    row["cell_s"] = round(time.time() - t0, 1)
                    bar.write(_line(row))
                result["rows"] += rows
                write_result(out, result)
                bar.update(len(cell["lengths"]))
                if models.device.type == "cuda":
                    torch.cuda.empty_cache()
    finally:
        models.close()


def _line(r: dict) -> str:
    return (f"{r['model']:>13} {r['method']:>15} L={str(r['L']):>4} N={r['decode_tokens']:>6} "
            f"B={r['batch']:>4} {r['tokens_per_s']:>9.0f} tok/s {r['step_ms']:7.2f} ms/step "
            f"floor {r['floor_ms'] or 0:6.2f} ms  KV/seq {r['kv_bytes_per_seq'] / 2**20:7.1f} "
            f"MiB peak {r['peak_gib']:6.1f} GiB [{r['series']}]")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    result = run_header(device, "python -m bench.e2e.serve", argv, args)
    name = result["device"]
    out = args.out or f"bench/results/e2e/serving_{name.split()[-1].lower()}.json"
    result.update(models={}, rows=[], skipped=[], errors=[], t0=time.time())
    with decode_settings():
        run_all(args, result, out)
    result["wall_s"] = round(time.time() - result.pop("t0"), 1)
    write_result(out, result)
    from bench.e2e.serve_report import plot, table
    plot(result["rows"], out.replace(".json", "_tps.png"), name, args.kv_budget_gib)
    print(table(result["rows"]))
    return result


def run_header(device: torch.device, program: str, argv, args) -> dict:
    """What a results file records about its run: device, versions, command line, options,
    how lengths are reached, and the copy bandwidth the floors are computed against."""
    import transformers
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    command = program + " " + " ".join(sys.argv[1:] if argv is None else argv)
    return dict(device=name, torch=torch.__version__, transformers=transformers.__version__,
                command=command, args=vars(args), prompt_tokens=PROMPT_TOKENS,
                fast_forward=FAST_FORWARD, bandwidth_bytes_per_s=copy_bandwidth(device))


def decode_settings() -> contextlib.ExitStack:
    """no_grad and Dynamo limits for a benchmark run, scoped (a caller's, a test's, settings
    are left alone). Every cell compiles the same forward's code (other shapes, RaaS's
    graphs): Dynamo's default limit of 8 entries per code object would silently fall back to
    eager, so the limit is raised and hitting it fails."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(torch._dynamo.config.patch(recompile_limit=64,
                                                   fail_on_recompile_limit_hit=True))
    return stack


def write_result(path: str, result: dict) -> None:
    """The results JSON (without the run's start time), folders made as needed."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({k: v for k, v in result.items() if k != "t0"}, f, indent=1)


if __name__ == "__main__":
    main()
