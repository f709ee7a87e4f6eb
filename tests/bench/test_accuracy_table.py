"""The one-command table runner on the CPU: units as processes, capped, merged into at most 8
files, and resumable (a second call with the first's results runs nothing)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from bench.accuracy import table
from bench.accuracy.reasoner import model_config, save_checkpoint
from bench.accuracy.tasks import DEFAULT_SPEC, WordTokenizer

pytestmark = pytest.mark.hf


def test_table_runs_merges_and_resumes(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    tok = WordTokenizer()
    ckpt = save_checkpoint(LlamaForCausalLM(model_config("tiny", tok, max_positions=512)).eval(),
                           tok, DEFAULT_SPEC, tmp_path / "tiny", log={})
    out = tmp_path / "out"
    common = ["--model", str(ckpt), "--out-dir", str(out), "--families", "recall",
              "--policies", "dense", "raas_guard", "--fp32-policies", "dense",
              "--decode-tokens", "160", "--n", "2", "--fractions", "0.5", "--fidelity-n", "1",
              "--fidelity-fractions", "0.5", "--minutes", "5", "--unit-seconds", "1", "--procs", "3"]
    table.main(common)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["accuracy_v2.json", "accuracy_v2.md", "accuracy_v2.png",
                     "fidelity_v2.json", "fidelity_v2.md"]  # several families: a png each
    rows = json.loads((out / "accuracy_v2.json").read_text())["rows"]
    assert {(r["family"], r["policy"], r["dtype"]) for r in rows} == {
        (f, p, d) for f in ("recall",) for p, d in
        (("dense", "bfloat16"), ("raas_guard", "bfloat16"), ("dense", "float32"))}
    fid = json.loads((out / "fidelity_v2.json").read_text())["rows"]
    assert {(r["family"], r["policy"]) for r in fid} == {
        ("recall", p) for p in ("dense", "raas_guard")}
    assert all(r["mean_kl"] < 1e-4 and r["top1_agreement"] == 1.0 for r in fid if r["policy"] == "dense")
    capsys.readouterr()
    table.main([*common, "--dry-run", "--resume", str(out / "accuracy_v2.json"),
                str(out / "fidelity_v2.json")])
    assert '"to_run": 0' in capsys.readouterr().out
