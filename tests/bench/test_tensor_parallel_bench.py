"""bench/e2e/tensor_parallel.py on the CPU: one process (in this one) writes the reference
tokens, two gloo processes read them; eager, tiny lengths. Plus the per-GPU batch arithmetic
of the real shapes (no model built)."""

from __future__ import annotations

import json

import pytest

from bench.e2e.models import llama_config
from bench.e2e.serve import DENSE
from bench.e2e.serve_sizing import GIB
from bench.e2e.tensor_parallel import main, parse_args, plan
from bench.e2e.tp_check import first_difference, logit_agreement
from tests.distributed import torchrun

pytestmark = pytest.mark.hf

RUN = ["--model", "tiny-tp", "--device", "cpu", "--no-compile", "--decode-tokens", "256",
       "--batch", "2", "--budget", "64", "--window", "2", "--warmup", "1", "--fill-extra", "0",
       "--check-prompt", "16", "--check-new", "48", "--check-budget", "48"]
ROW_KEYS = {"gpus", "model", "method", "batch", "decode_tokens", "tokens_per_s",
            "kv_bytes_per_gpu", "peak_gib_per_gpu", "tokens_equal", "tokens_compared", "step_ms",
            "L", "device", "torch", "transformers", "command", "fast_forward", "deadline_s"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("tp_bench")
    one = main(RUN + ["--write-reference", str(out / "ref.json"), "--out", str(out / "one.json")])
    done = torchrun(2, ["-m", "bench.e2e.tensor_parallel", *RUN,
                        "--reference", str(out / "ref.json"), "--out", str(out / "two.json")])
    assert done.returncode == 0, done.stderr[-4000:]
    two = json.loads((out / "two.json").read_text())["runs"]
    assert len(two) == 1
    return one, two[0]


def test_two_processes_match_one(runs) -> None:
    one, two = runs
    assert not one["errors"] and not two["errors"] and not two["skipped"]
    assert one["check"]["tokens"]["raas"] != one["check"]["tokens"]["dense"]  # it evicted
    assert two["check"]["tokens"] == one["check"]["tokens"]
    for run in (one, two):  # fp32, RaaS above the length == dense: every step's logits agree
        logits = run["check"]["logits_raas_full_vs_dense"]
        assert [r["step"] for r in logits] == list(range(48))
        assert all(r["max_abs_diff"] < 1e-4 * r["dense_std"] for r in logits)
        assert all(r["dense_margin"] >= 0 for r in logits)
    rows_one = {r["method"]: r for r in one["rows"]}
    rows_two = {r["method"]: r for r in two["rows"]}
    assert set(rows_two) == {DENSE, "raas"}
    for method, row in rows_two.items():
        assert ROW_KEYS <= set(row)
        assert row["gpus"] == 2 and rows_one[method]["gpus"] == 1
        assert row["tokens_equal"] is True and "reference" in row["tokens_compared"]
        assert row["tokens_first_difference"] is None
        assert rows_one[method]["tokens_equal"] is True  # RaaS above the length == dense
        assert row["kv_heads_per_gpu"] == 2 and rows_one[method]["kv_heads_per_gpu"] == 4
        assert row["batch"] == rows_one[method]["batch"] == 2
        assert row["tokens_per_s"] > 0 and row["window_steps"] == 2
        assert len(row["kv_bytes_per_rank"]) == len(row["peak_gib_per_rank"]) == 2
    # each rank's cache holds half the heads: dense K/V exactly half, RaaS's pool exactly
    # half, its metadata about half (per-layer step counters are not per head)
    dense_one, dense_two = rows_one[DENSE], rows_two[DENSE]
    assert dense_two["kv_bytes_per_gpu"] * 2 == dense_one["kv_bytes_per_gpu"]
    raas_one, raas_two = rows_one["raas"], rows_two["raas"]
    pool_one = raas_one["kv_bytes_per_gpu"] - raas_one["metadata_bytes"]
    pool_two = raas_two["kv_bytes_per_gpu"] - raas_two["metadata_bytes"]
    assert pool_two * 2 == pool_one
    assert raas_two["kv_bytes_per_gpu"] <= 0.55 * raas_one["kv_bytes_per_gpu"]


def test_per_gpu_batches_of_the_70b_shape() -> None:
    """70B on 2 GPUs at a 40 GiB KV budget per GPU: a dense 32k sequence holds 4 kv heads x
    80 layers x 32896 slots per GPU; RaaS L = 2048 fits more than 8x the dense batch."""
    config = llama_config("llama-3-70b")
    args = parse_args(["--model", "llama-3-70b", "--kv-budget-gib", "40"])
    dense, raas = plan(args, config, 2)
    per_seq = 2 * 80 * 4 * 128 * 2 * (128 + 32768)
    assert dense["kv_bytes_per_seq"] == per_seq and dense["batch"] == 40 * GIB // per_seq == 7
    assert raas["batch"] == raas["batch_fit"] >= 8 * dense["batch"]
    assert plan(args, config, 1)[0]["kv_bytes_per_seq"] == 2 * per_seq
    with pytest.raises(ValueError, match="divides them"):
        plan(args, config, 3)


def test_first_difference_names_the_earliest_mismatch() -> None:
    assert first_difference(([1, 2, 3], [1, 2, 3])) is None
    assert first_difference(([1, 2, 3], [1, 2, 3]), ([4, 5, 6], [4, 5, 7])) == 2
    assert first_difference(([1, 9, 3], [1, 2, 3]), ([4, 5, 6], [4, 5, 7])) == 1
    assert first_difference(([1, 2], [1, 2, 3])) == 2  # one run stopped early


def test_logit_agreement_stops_at_the_first_difference() -> None:
    import torch
    dense = [torch.tensor([3.0, 1.0, 0.0]), torch.tensor([2.0, 1.9, 0.0]), torch.tensor([0.0] * 3)]
    other = [torch.tensor([3.0, 1.0, 0.5]), torch.tensor([1.8, 2.0, 0.0]), torch.tensor([9.0] * 3)]
    rows = logit_agreement(dense, other, upto=1)
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[0]["dense_margin"] == 2.0 and rows[0]["max_abs_diff"] == 0.5
    assert abs(rows[1]["dense_margin"] - 0.1) < 1e-6 and abs(rows[1]["max_abs_diff"] - 0.2) < 1e-6
    assert len(logit_agreement(dense, other, upto=None)) == 3
