"""The one-command table runner on the CPU: units as processes (one per policy and L, over
every family, so one compiled step serves them all), capped, merged into at most 8 files, and
resumable cell by cell (a second call with the first's results runs nothing; a missing cell
runs alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from bench.accuracy import table
from bench.accuracy.reasoner import model_config, save_checkpoint
from bench.accuracy.tasks import DEFAULT_SPEC, WordTokenizer

pytestmark = pytest.mark.hf

FAMILIES = ("recall", "registers")
# a policy with a changed setting: its rows, units and resume go by this one name
GUARD = "raas_guard@top_ratio=0.25"


def _units(out: str) -> dict[str, list[str]]:
    """unit name -> its families, from the JSON lines a run prints per finished unit."""
    lines = [json.loads(x) for x in out.splitlines() if x.startswith('{"unit"')]
    return {x["unit"]: x["families"] for x in lines if x["rc"] == 0}


def test_table_runs_merges_and_resumes(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    tok = WordTokenizer()
    ckpt = save_checkpoint(LlamaForCausalLM(model_config("tiny", tok, max_positions=512)).eval(),
                           tok, DEFAULT_SPEC, tmp_path / "tiny", log={})
    out = tmp_path / "out"
    common = ["--model", str(ckpt), "--out-dir", str(out), "--families", *FAMILIES,
              "--policies", "dense", GUARD, "--fp32-policies", "dense",
              "--decode-tokens", "160", "--n", "2", "--fractions", "0.5", "--fidelity-n", "1",
              "--fidelity-fractions", "0.5", "--minutes", "5", "--unit-seconds", "1", "--procs", "3"]
    table.main(common)
    # one process per (mode, policy, dtype, L) over both families: 5, not 10 (one per family)
    assert _units(capsys.readouterr().out) == {
        name: list(FAMILIES) for name in (
            "accuracy_dense_bfloat16_1", f"accuracy_{GUARD}_bfloat16_0.5",
            "fidelity_dense_bfloat16_1", f"fidelity_{GUARD}_bfloat16_0.5",
            "accuracy_dense_float32_1")}
    files = sorted(p.name for p in out.iterdir())
    assert files == ["accuracy_v2.json", "accuracy_v2.md", "accuracy_v2_recall.png",
                     "accuracy_v2_registers.png", "fidelity_v2.json", "fidelity_v2.md"]
    acc = json.loads((out / "accuracy_v2.json").read_text())
    assert {(r["family"], r["policy"], r["budget_fraction"], r["dtype"]) for r in acc["rows"]} == {
        (f, p, x, d) for f in FAMILIES for p, x, d in
        (("dense", 1.0, "bfloat16"), (GUARD, 0.5, "bfloat16"), ("dense", 1.0, "float32"))}
    fid = json.loads((out / "fidelity_v2.json").read_text())["rows"]
    assert {(r["family"], r["policy"]) for r in fid} == {
        (f, p) for f in FAMILIES for p in ("dense", GUARD)}
    assert all(r["mean_kl"] < 1e-4 and r["top1_agreement"] == 1.0 for r in fid if r["policy"] == "dense")
    resume = ["--resume", str(out / "accuracy_v2.json"), str(out / "fidelity_v2.json")]
    table.main([*common, "--dry-run", *resume])
    assert '"to_run": 0' in capsys.readouterr().out

    # a call cut off before the guard variant's bf16 cell on registers: only that cell runs again
    acc["rows"] = [r for r in acc["rows"] if (r["family"], r["policy"], r["dtype"])
                   != ("registers", GUARD, "bfloat16")]
    partial = tmp_path / "accuracy_partial.json"
    partial.write_text(json.dumps(acc))
    table.main([*common, "--dry-run", "--resume", str(partial), str(out / "fidelity_v2.json")])
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0])["to_run"] == 1
    assert lines[1:] == [f"accuracy_{GUARD}_bfloat16_0.5: registers"]


def test_units_group_cells_by_policy_and_budget():
    """Accuracy: a unit per (policy, dtype, L); fidelity: a unit per policy over its Ls (one
    dense reference per family); dense only at L = 1; priority bf16, fidelity, fp32."""
    args = table.parse_args(["--model", "m", "--out-dir", "o", "--families", "lemmas", "mixture",
                             "--policies", "dense", "h2o", "--fp32-policies", "h2o",
                             "--fractions", "0.25", "0.5", "--fidelity-fractions", "0.125", "0.25"])
    names = [(table.unit_name(u), u[4]) for u in table.group_units(table.all_cells(args))]
    both = ("lemmas", "mixture")
    assert names == [("accuracy_dense_bfloat16_1", both), ("accuracy_h2o_bfloat16_0.25", both),
                     ("accuracy_h2o_bfloat16_0.5", both), ("fidelity_dense_bfloat16_1", both),
                     ("fidelity_h2o_bfloat16_0.125_0.25", both),
                     ("accuracy_h2o_float32_0.25", both), ("accuracy_h2o_float32_0.5", both)]


def test_a_variant_unit_passes_its_settings_and_a_misspelt_one_is_refused():
    args = table.parse_args(["--model", "m", "--out-dir", "o", "--families", "lemmas",
                             "--policies", "h2o_decay@h2o_decay_gamma=0.999", "--fp32-policies",
                             "--fractions", "0.25", "--fidelity-n", "0", "--seed", "1"])
    (unit,) = table.group_units(table.all_cells(args))
    cmd = table.unit_command(args, unit, Path("w"))
    assert cmd[cmd.index("--policies") + 1] == "h2o_decay"
    assert cmd[cmd.index("--seed") + 1] == "1"  # a held-out table draws other test problems
    assert json.loads(cmd[cmd.index("--policy-config") + 1]) == {"h2o_decay_gamma": 0.999}
    with pytest.raises(SystemExit, match="unknown RaaS option"):
        table.parse_args(["--model", "m", "--out-dir", "o", "--policies", "h2o_decay@gamma=0.9"])
