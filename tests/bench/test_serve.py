"""bench/e2e/serve.py on the CPU: the batch arithmetic from the KV budget (real model
shapes, no model built), the live-length dense baseline against a full recompute, and one
tiny eager run end to end (rows, JSON, plot). No compiled graphs."""

from __future__ import annotations

import json

import pytest
import torch

import raas_flex
from bench.e2e.dense_live import (KV_BLOCK, LiveDenseCache, install_live_dense,
                                  remove_live_dense)
from bench.e2e.models import build_llama, kv_bytes_per_token, llama_config
from bench.e2e.serve import DENSE, main, parse_args, plan, tiers
from bench.e2e.serve_sizing import (GIB, batch_that_fits, dense_bytes_per_seq, dense_capacity,
                                    raas_bytes_per_seq)
from raas_flex.hf.compat import CACHE_ARG

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

ROW_KEYS = {"method", "model", "decode_tokens", "kv_budget_gib", "batch", "tokens_per_s",
            "per_seq_tokens_per_s", "kv_bytes_per_seq", "peak_gib"}


def test_kv_bytes_of_the_real_shapes():
    one_b, eight_b = llama_config("llama-3.2-1b"), llama_config("llama-3-8b")
    assert kv_bytes_per_token(one_b) == 2 * 16 * 8 * 64 * 2 == 32 * 1024
    assert kv_bytes_per_token(eight_b) == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert dense_capacity(128, 32768) == 32896 and dense_capacity(100, 1) == KV_BLOCK
    # RaaS: the L-token bf16 pool per layer, plus metadata (bf16 min/max keys per page, ...)
    L = 2048
    pool = 16 * 2 * 8 * L * 64 * 2
    raas = raas_bytes_per_seq(one_b, raas_flex.RaaSConfig(budget=L, page_size=16))
    minmax = 16 * 2 * 8 * (L // 16) * 64 * 2
    assert pool + minmax < raas < pool * 1.2
    # the target: >= 10x less KV per sequence at a 32k decode, metadata counted
    assert dense_bytes_per_seq(one_b, dense_capacity(128, 32768)) / raas > 10


def test_plan_batches_follow_the_budget_and_cap():
    args = parse_args(["--kv-budget-gib", "40", "--max-batch", "256"])
    config = llama_config("llama-3.2-1b")
    cells = plan(args, config)
    dense = {c["lengths"][0]: c for c in cells if c["method"] == DENSE and c["series"] == "budget"}
    for n, cell in dense.items():
        per_seq = kv_bytes_per_token(config) * (128 + n)
        assert cell["kv_bytes_per_seq"] == per_seq
        assert cell["batch_fit"] == 40 * GIB // per_seq
        assert cell["batch_fit"] * per_seq <= 40 * GIB < (cell["batch_fit"] + 1) * per_seq
    assert [dense[n]["batch"] for n in (8192, 32768, 65536)] == [157, 39, 19]
    raas = {c["L"]: c for c in cells if c["method"] == "raas" and c["series"] == "budget"}
    assert raas[2048]["batch_fit"] == 40 * GIB // raas[2048]["kv_bytes_per_seq"] > 256
    assert raas[2048]["batch"] == raas[1024]["batch"] == 256  # capped, and says so
    assert raas[2048]["lengths"] == [8192, 32768, 65536]  # one pool serves every length
    equal = [c for c in cells if c["series"] == "equal_batch"]
    assert {c["batch"] for c in equal} == {19}  # the dense batch at the longest length
    assert {c["method"] for c in equal} == {"raas", DENSE}
    # run order: dense and the largest L of both models come before any other cell
    order = tiers({"a": cells, "b": cells})
    first = [(m, c["L"], c["series"]) for m, c in order[:8]]
    assert all(series == "budget" and L in (None, 2048) for _, L, series in first)
    assert order[-1][1]["L"] == 1024


def test_batch_that_fits_refuses_a_budget_below_one_sequence():
    assert batch_that_fits(10, 3) == 3
    with pytest.raises(ValueError, match="raise --kv-budget-gib"):
        batch_that_fits(2, 3)


def test_live_dense_decode_matches_a_full_recompute():
    torch.manual_seed(0)
    model = build_llama("tiny", "cpu")
    B, T, steps = 2, 9, 4
    ids = torch.randint(1, 500, (B, T + steps))
    with torch.no_grad():
        reference = model(input_ids=ids).logits.float()  # [B, T + steps, V], plain SDPA
        pos = torch.zeros((), dtype=torch.int64)
        previous = install_live_dense(model, pos)
        try:
            c = model.config
            cache = LiveDenseCache(c.num_hidden_layers, B, c.num_key_value_heads, 2 * KV_BLOCK,
                                   c.head_dim, pos)
            cache.fill_random()  # stand-in values beyond the live prefix must never be read
            out = model(input_ids=ids[:, :T], **{CACHE_ARG: cache}, use_cache=True)
            got = [out.logits[:, -1].float()]
            for i in range(steps):
                pos.fill_(T + i)
                out = model(input_ids=ids[:, T + i:T + i + 1], **{CACHE_ARG: cache},
                            position_ids=torch.full((B, 1), T + i), use_cache=True)
                got.append(out.logits[:, -1].float())
        finally:
            remove_live_dense(model, previous)
    assert model.config._attn_implementation == "sdpa"
    for i, logits in enumerate(got):
        torch.testing.assert_close(logits, reference[:, T - 1 + i], atol=0.05, rtol=0.05)


def test_serve_tiny_cpu_run(tmp_path):
    out = tmp_path / "serving_cpu.json"
    result = main(["--models", "tiny", "--device", "cpu", "--no-compile", "--no-progress",
                   "--lengths", "256", "--kv-budget-gib", "0.0005", "--budgets", "64",
                   "--max-batch", "4", "--window", "2", "--warmup", "1", "--fill-extra", "0",
                   "--out", str(out)])
    assert not result["errors"] and not result["skipped"]
    assert json.loads(out.read_text())["rows"] == result["rows"]
    assert (tmp_path / "serving_cpu_tps.png").exists()
    rows = {(r["method"], r["series"]): r for r in result["rows"]}
    assert set(rows) == {(DENSE, "budget"), ("raas", "budget"), ("raas", "equal_batch")}
    dense, raas = rows[(DENSE, "budget")], rows[("raas", "budget")]
    per_token = kv_bytes_per_token(llama_config("tiny"))
    assert dense["kv_bytes_per_seq"] == per_token * (128 + 256)
    assert dense["batch"] == min(int(0.0005 * GIB) // dense["kv_bytes_per_seq"], 4) == 4
    assert raas["batch"] == 4 and raas["capped"] and raas["batch_fit"] > 4
    assert rows[("raas", "equal_batch")]["batch"] == dense["batch"]
    # sizing (a one-sequence pool) == the real cache per sequence, up to the per-layer
    # scalars (step counters, overflow flag) that a batch shares
    assert 0 <= raas["kv_bytes_per_seq"] - raas["kv_bytes_measured_per_seq"] < 2 * 32
    for row in result["rows"]:
        assert ROW_KEYS <= set(row)
        assert row["window_steps"] == 2 and row["tokens_per_s"] > 0
        assert row["per_seq_tokens_per_s"] * row["batch"] == pytest.approx(row["tokens_per_s"])
        assert row["tokens_per_s"] == pytest.approx(row["batch"] * 2e3 / (2 * row["step_ms"]))


def test_report_compares_raas_with_the_fastest_dense_row(tmp_path, capsys):
    from bench.e2e.serve_report import best_dense, main as report
    base = dict(model="m", decode_tokens=32768, kv_budget_gib=40.0, series="budget",
                per_seq_tokens_per_s=1.0, step_ms=10.0, floor_ms=None, peak_gib=1.0)
    slow = dict(base, method=DENSE, L=None, batch=39, tokens_per_s=500.0,
                kv_bytes_per_seq=1000 * 2**20, dense_compile="dynamic")
    fast = dict(slow, tokens_per_s=2000.0, dense_compile="static")
    raas = dict(base, method="raas", L=2048, batch=256, tokens_per_s=15000.0,
                kv_bytes_per_seq=100 * 2**20)
    assert best_dense([slow, fast, raas], raas) is fast
    files = []
    for i, rows in enumerate(([slow, raas], [fast])):  # one run split over two files
        files.append(tmp_path / f"serving_{i}.json")
        files[-1].write_text(json.dumps(dict(device="cpu", rows=rows)))
    report([*map(str, files), "--out", str(tmp_path / "merged.png")])
    assert (tmp_path / "merged.png").exists()
    assert "7.5× tok/s, 10.0× less KV" in capsys.readouterr().out
