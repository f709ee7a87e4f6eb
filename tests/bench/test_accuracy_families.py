"""The harness over the task families, end to end on the CPU with the real apply_raas and a
random tiny model: numbers are meaningless, the schema, the plots per family and the
fidelity reference (dense: KL 0, agreement 1) are what is checked."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM

from bench.accuracy import cli
from bench.accuracy.harness.policies import PEER_POLICIES
from bench.accuracy.reasoner import model_config, save_checkpoint
from bench.accuracy.tasks import DEFAULT_SPEC, FAMILY_NAMES, WordTokenizer
from raas_flex.policies import available_policies

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

ROW_KEYS = {"family", "policy", "budget_fraction", "accuracy", "ci_low", "ci_high", "n",
            "mean_generated_tokens", "dtype"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tok = WordTokenizer()
    model = LlamaForCausalLM(model_config("tiny", tok, max_positions=512)).eval()
    return save_checkpoint(model, tok, DEFAULT_SPEC, tmp_path_factory.mktemp("ckpt") / "tiny",
                           log={})


def test_the_sweep_lists_every_registered_policy():
    """Policies added to the registry (another branch adds three) join the table unasked."""
    assert set(PEER_POLICIES) == set(available_policies()) - {"raas_hsr"}
    assert "raas_guard" in PEER_POLICIES


def test_accuracy_over_all_families_rows_and_plots(checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "res"
    cli.main(["accuracy", "--model", str(checkpoint), "--families", "all", "--decode-tokens",
              "160", "--n", "2", "--batch-size", "2", "--fractions", "0.5", "--slack", "1",
              "--policies", "dense", "streaming", "raas_guard", "--out-dir", str(out),
              "--tag", "fam", "--no-progress"])
    data = json.loads((out / "accuracy_fam.json").read_text())
    rows = data["rows"]
    assert {(r["family"], r["policy"]) for r in rows} == {
        (f, p) for f in FAMILY_NAMES for p in ("hf", "dense", "streaming", "raas_guard")}
    for r in rows:
        assert ROW_KEYS <= set(r) and r["dtype"] == "float32" and r["n"] == 2
        assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0
    for f in FAMILY_NAMES:  # dense through raas_flex decodes as plain HF does
        by = {r["policy"]: r for r in rows if r["family"] == f}
        assert by["dense"]["accuracy"] == by["hf"]["accuracy"]
        assert by["dense"]["mean_generated_tokens"] == by["hf"]["mean_generated_tokens"]
        assert (out / f"accuracy_fam_{f}.png").stat().st_size > 1000


def test_fidelity_per_family_dense_is_exact(checkpoint, tmp_path):
    cli.main(["fidelity", "--model", str(checkpoint), "--data", "task", "--families", "all",
              "--n", "1", "--decode-tokens", "160", "--policies", "dense", "raas_guard",
              "--fractions", "0.5", "--out-dir", str(tmp_path), "--tag", "f", "--no-progress"])
    data = json.loads((tmp_path / "fidelity_f.json").read_text())
    assert {(r["family"], r["policy"]) for r in data["rows"]} == {
        (f, p) for f in FAMILY_NAMES for p in ("dense", "raas_guard")}
    for r in data["rows"]:
        assert {"mean_kl", "top1_agreement", "budget_fraction", "n_steps"} <= set(r)
        assert r["mean_kl"] >= 0.0 and 0.0 <= r["top1_agreement"] <= 1.0
        if r["policy"] == "dense":
            assert r["mean_kl"] < 1e-5 and r["top1_agreement"] == 1.0
    assert set(data["curves"]) == {f"{f}/{p}" for f in FAMILY_NAMES
                                   for p in ("dense@1", "raas_guard@0.5")}
