"""bench/e2e/tp_report.py: the cross-file ratios of the tensor-parallel runs."""

from __future__ import annotations

import json

from bench.e2e.tp_report import main


def row(gpus: int, method: str, batch: int, tps: float, kv: int, model: str = "m") -> dict:
    return dict(gpus=gpus, model=model, method=method, batch=batch, tokens_per_s=tps,
                step_ms=1.0, floor_ms=0.5, kv_bytes_per_gpu=kv, peak_gib_per_gpu=1.0,
                compiled_graphs_per_rank=[1] * gpus, tokens_equal=True,
                tokens_first_difference=None, L=None if method == "dense" else 64)


def test_ratios_across_files(tmp_path) -> None:
    one = tmp_path / "one.json"
    two = tmp_path / "two.json"
    one.write_text(json.dumps({"runs": [{"rows": [row(1, "dense", 4, 100.0, 800),
                                                  row(1, "raas", 32, 400.0, 600)]}]}))
    two.write_text(json.dumps({"runs": [{"rows": [row(2, "dense", 4, 170.0, 400),
                                                  row(2, "raas", 32, 600.0, 300)]}]}))
    text = main([str(one), str(two)])
    assert "m dense B=4: 2 GPUs vs 1: tokens/s 1.70x, KV bytes/GPU 0.500x" in text
    assert "m raas B=32: 2 GPUs vs 1: tokens/s 1.50x, KV bytes/GPU 0.500x" in text
    assert "m on 2 GPU(s): RaaS L=64 batch 32 vs dense 4 (8.0x), tokens/s 600 vs 170 (3.53x)" \
        in text
    assert text.count("| m |") == 4
