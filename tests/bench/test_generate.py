"""bench/e2e/generate.py's plumbing on the CPU (tiny model, eager): rows, KV bytes, time cap."""

import pytest
import json

from bench.e2e.generate import main

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range


def test_generate_bench_rows_and_cap(tmp_path):
    out = tmp_path / "generate_cpu.json"
    result = main(["--tiny", "--device", "cpu", "--no-compile", "--batch", "1",
                   "--max-new-tokens", "40", "--window", "16", "--budgets", "192",
                   "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    methods = {(r["method"], r["L"]) for r in result["rows"]}
    assert methods == {("dense", None), ("raas", 192)}
    for run in result["runs"]:
        assert run["decoded"] == 40 and not run["capped"] and run["kv_bytes"] > 0
    assert all(r["tokens_per_s"] > 0 and r["decode_len"] in (16, 32) for r in result["rows"])
    assert (tmp_path / "generate_cpu_tps.png").exists()

    capped = main(["--tiny", "--device", "cpu", "--no-compile", "--batch", "1",
                   "--max-new-tokens", "4000", "--window", "16", "--budgets", "192",
                   "--time-cap", "0", "--out", str(tmp_path / "capped.json")])
    assert all(run["capped"] and run["decoded"] == 16 for run in capped["runs"])
