"""The accuracy harness's plumbing on a tiny random model, with stand-in appliers where
raas_flex.apply_raas is not merged yet (and the real one where it is)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import LlamaForCausalLM

import raas_flex
from bench.accuracy import cli
from bench.accuracy.harness.fidelity import FidelitySettings, load_sequences, run_fidelity
from bench.accuracy.harness.policies import Applier, budget_problem, budget_tokens, raas_applier
from bench.accuracy.harness.stats import wilson
from bench.accuracy.harness.sweep import SweepSettings, run_accuracy
from bench.accuracy.harness.variants import parse_variant, variant_label
from bench.accuracy.reasoner import model_config, save_checkpoint
from bench.accuracy.tasks import DEFAULT_SPEC, WordTokenizer

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

TOK = WordTokenizer()
HAS_APPLY = hasattr(raas_flex, "apply_raas")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return LlamaForCausalLM(model_config("tiny", TOK, max_positions=512)).eval()


class Recorder:
    """An applier that records its calls; `make` turns the model into the 'policy' model."""

    def __init__(self, make=lambda m: m):
        self.calls, self.removed, self.make = [], 0, make

    def apply(self, model, budget, page_size, policy, **config):
        self.calls.append((policy, budget, page_size, config))
        return self.make(model)

    def remove(self, model):
        self.removed += 1

    @property
    def applier(self) -> Applier:
        return Applier(self.apply, self.remove)


def test_wilson_interval_known_values():
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    with pytest.raises(ValueError):
        wilson(3, 0)


def test_scores_locate_the_first_error_and_its_kind():
    from bench.accuracy.reasoner import score_outputs
    from bench.accuracy.tasks import make_problem

    p = make_problem("test", 0, 30)  # phoenix steps: counters 25, 20, .., 0 = steps 4, 9, .., 29
    width = DEFAULT_SPEC.step_tokens
    words = p.chain.split()
    at_phoenix, at_regular = list(words), list(words)
    at_phoenix[9 * width + 8] = "7" if words[9 * width + 8] != "7" else "3"  # step 9's fact value
    at_regular[3 * width + 11] = "7" if words[3 * width + 11] != "7" else "3"  # step 3's result
    outs = [TOK.encode(" ".join(w)) for w in (words, at_phoenix, at_regular)]
    recs = score_outputs([p] * 3, outs, TOK, DEFAULT_SPEC)
    assert [r["chain_ok"] for r in recs] == [True, False, False]
    assert [r["first_error_step"] for r in recs] == [None, 9, 3]
    assert [r["first_error_phoenix"] for r in recs] == [None, True, False]
    assert recs[0]["correct"] and recs[0]["generated_tokens"] == len(words)


def test_budget_arithmetic():
    assert [budget_tokens(f, 2048, 16) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2)] == [128, 256, 512, 1024]
    assert budget_tokens(1 / 16, 100, 16) == 16
    assert DEFAULT_SPEC.prompt_tokens == 16  # one page
    assert budget_problem(48, DEFAULT_SPEC.prompt_tokens, 16) is None
    assert "decode pages" in budget_problem(32, DEFAULT_SPEC.prompt_tokens, 16)
    assert "decode pages" in budget_problem(64, 40, 16)
    # a policy's own options may need more: R-KV frees a 128-token buffer per checkpoint
    assert "raise budget to >= 160" in budget_problem(128, 16, 16, "rkv")
    assert budget_problem(256, 16, 16, "rkv") is None
    # a named variant's own settings count (they once did not: lazy_window=32 was refused
    # for the default window's 175 tokens)
    assert budget_problem(128, 16, 16, "rkv", {"rkv_buffer": 32, "compile": True}) is None
    assert "lazy_window=32" in budget_problem(64, 16, 16, "lazy_eviction", {"lazy_window": 32})


def test_sweep_rows_and_apply_remove_pairing(tiny_model):
    rec = Recorder()
    s = SweepSettings(decode_tokens=255, n=3, batch_size=2, policies=("dense", "raas"),
                      fractions=(1 / 16, 1 / 2), slack=1.0, policy_config={"top_ratio": 0.5})
    out = run_accuracy(tiny_model, TOK, DEFAULT_SPEC, s, rec.applier, progress=False)
    rows = {(r["policy"], r["budget_fraction"]): r for r in out["rows"]}
    assert set(rows) == {("hf", 1.0), ("dense", 1.0), ("raas", 0.5)}
    assert [(r["policy"], r["budget_fraction"]) for r in out["skipped"]] == [("raas", 1 / 16)]
    # one apply and one remove per (policy, budget), around both batches, with the right budget
    assert rec.removed == len(rec.calls) == 2
    assert {c[1] for c in rec.calls if c[0] == "raas"} == {128}
    assert {c[1] for c in rec.calls if c[0] == "dense"} == {272}  # prompt + max_new, paged
    assert all(c[2] == 16 and c[3] == {"top_ratio": 0.5} for c in rec.calls)
    for r in rows.values():
        assert r["n"] == 3 and 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0
        # an identity 'policy' decodes exactly like plain HF
        assert r["mean_generated_tokens"] == rows[("hf", 1.0)]["mean_generated_tokens"]
        assert r["accuracy"] == rows[("hf", 1.0)]["accuracy"]


def test_cli_writes_json_table_plot_and_merges(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    ckpt = save_checkpoint(tiny_model, TOK, DEFAULT_SPEC, tmp_path / "tiny", log={})
    rec = Recorder()
    monkeypatch.setattr(cli, "raas_applier", lambda: rec.applier)
    res = tmp_path / "res"
    common = ["--model", str(ckpt), "--decode-tokens", "255", "--n", "2", "--fractions", "0.25",
              "--slack", "1", "--out-dir", str(res), "--no-progress"]
    cli.main(["accuracy", *common, "--policies", "raas", "--tag", "a"])
    cli.main(["accuracy", *common, "--policies", "streaming", "--no-reference", "--tag", "b"])
    cli.main(["merge", str(res / "accuracy_a.json"), str(res / "accuracy_b.json"),
              "--out-dir", str(res), "--tag", "all"])
    data = json.loads((res / "accuracy_all.json").read_text())
    assert [r["policy"] for r in data["rows"]] == ["hf", "raas", "streaming"]
    for r in data["rows"]:
        assert {"policy", "budget_fraction", "accuracy", "ci_low", "ci_high", "n",
                "mean_generated_tokens"} <= set(r)
    assert "| raas | 0.250 | 64 |" in (res / "accuracy_all.md").read_text()
    assert (res / "accuracy_all.png").stat().st_size > 1000
    assert [c[0] for c in rec.calls] == ["raas", "streaming"]


def _perturbed(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return other


def test_fidelity_zero_for_identity_positive_for_other_model(tiny_model, tmp_path):
    lines = [json.dumps({"text": "<bos> " + " ".join("a 1 b 2 s 3 ;".split() * 12)}),
             json.dumps({"prompt": "<bos> a 1 b 2 <think>", "completion": "s 3 + t 4 = 7 ; " * 6})]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines))
    s = FidelitySettings(prompt_tokens=16, decode_tokens=48, n=4, policies=("raas",),
                         fractions=(1.0,))
    pairs = load_sequences(data, TOK.encode, s)
    assert [len(t) for _, t in pairs] == [48, 48] and len(pairs[0][0]) == 16
    same = run_fidelity(tiny_model, pairs, s, Recorder().applier, progress=False)["rows"][0]
    assert same["mean_kl"] < 1e-6 and same["top1_agreement"] == 1.0 and same["n_steps"] == 96
    torch.manual_seed(1)
    diff = run_fidelity(tiny_model, pairs, s, Recorder(_perturbed).applier, progress=False)
    assert diff["rows"][0]["mean_kl"] > 1e-3
    assert len(diff["curves"]["raas@1"]) == 1


def test_missing_apply_raas_is_a_clear_error():
    if HAS_APPLY:
        assert isinstance(raas_applier(), Applier)
    else:
        with pytest.raises(RuntimeError, match="apply_raas"):
            raas_applier()


@pytest.mark.skipif(not HAS_APPLY, reason="raas_flex.apply_raas is not merged in this checkout")
def test_real_apply_raas_end_to_end(tiny_model):
    """After the merge: the real policies run through the harness on the tiny model."""
    s = SweepSettings(decode_tokens=255, n=2, batch_size=2, policies=("dense", "raas"),
                      fractions=(1 / 2,))
    out = run_accuracy(tiny_model, TOK, DEFAULT_SPEC, s, raas_applier(), progress=False)
    rows = {r["policy"]: r for r in out["rows"]}
    assert set(rows) == {"hf", "dense", "raas"}
    assert rows["dense"]["accuracy"] == rows["hf"]["accuracy"]


def test_cli_fidelity_on_task_text(tiny_model, tmp_path, monkeypatch):
    ckpt = save_checkpoint(tiny_model, TOK, DEFAULT_SPEC, tmp_path / "tiny", log={})
    rec = Recorder()
    monkeypatch.setattr(cli, "raas_applier", lambda: rec.applier)
    cli.main(["fidelity", "--model", str(ckpt), "--data", "task", "--n", "2",
              "--decode-tokens", "120", "--policies", "dense", "raas", "--fractions", "0.5",
              "--out-dir", str(tmp_path), "--tag", "f", "--no-progress"])
    data = json.loads((tmp_path / "fidelity_f.json").read_text())
    assert [(r["policy"], r["budget_fraction"]) for r in data["rows"]] == [("dense", 1.0), ("raas", 0.5)]
    assert all(r["mean_kl"] < 1e-6 and r["top1_agreement"] == 1.0 for r in data["rows"])
    # the two problems have equal lengths: one batch, one apply per (policy, budget)
    assert [c[:2] for c in rec.calls] == [("dense", 144), ("raas", 64)]


def test_a_merge_of_merges_names_every_source_call_and_note(tmp_path):
    def run(policy: str, commit: str, merged_from: list[str] | None = None) -> dict:
        row = {"policy": policy, "budget_fraction": 0.5, "family": "registers",
               "dtype": "bfloat16", "accuracy": 1.0}
        out = {"rows": [row], "skipped": [], "settings": {"decode_tokens": 8, "n": 1, "seed": 0},
               "meta": {"git_commit": commit, "device": "gpu", "torch": "t", "transformers": "h",
                        "model": "m"}}
        return out | ({"merged_from": merged_from} if merged_from else {})
    paths = []
    for name, payload in (("accuracy_a.json", run("raas", "c1", ["u1.json", "u2.json"])
                           | {"notes": ["rows of c1 re-run"]}),
                          ("accuracy_b.json", run("h2o", "c2"))):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(payload))
    merged = cli.merge_results(paths, tmp_path, "m", plot=False)
    assert merged["merged_from"] == ["u1.json", "u2.json", str(paths[1])]
    assert [c["git_commit"] for c in merged["calls"]] == ["c1", "c2"]
    again = cli.merge_results([tmp_path / "accuracy_m.json", paths[1]], tmp_path, "m2", plot=False)
    assert [c["git_commit"] for c in again["calls"]] == ["c1", "c2"]
    assert {r["policy"] for r in again["rows"]} == {"raas", "h2o"}
    assert again["notes"] == ["rows of c1 re-run"]


def test_variant_names_keep_settings_apart_and_read_back():
    flex = {"attention_kernel": "flex", "compile": True, "cuda_graph": True}
    assert variant_label("raas", flex) == "raas"  # how it decodes is not part of the name
    assert variant_label("raas", {"kv_dtype": None}) == "raas"
    assert variant_label("raas", {**flex, "kv_dtype": "int8"}) == "raas@int8"
    assert variant_label("hf", {"kv_dtype": "int8"}) == "hf"  # the reference never uses a pool
    name = variant_label("h2o_decay", {**flex, "h2o_decay_gamma": 0.999})
    assert name == "h2o_decay@h2o_decay_gamma=0.999"
    assert parse_variant(name) == ("h2o_decay", {"h2o_decay_gamma": 0.999})
    assert parse_variant("raas@importance=alpha,int8") == ("raas", {"importance": "alpha",
                                                                    "kv_dtype": "int8"})
    assert parse_variant("raas") == ("raas", {})
    with pytest.raises(ValueError, match="canonical"):
        parse_variant("raas@top_ratio=0.5,importance=alpha")


@pytest.mark.parametrize("choice, device, expected", [
    ("auto", "cuda", {"compile": True, "cuda_graph": True}),
    ("auto", "cuda:1", {"compile": True, "cuda_graph": True}),
    ("auto", "cpu", {"compile": False, "cuda_graph": False}),
    ("yes", "cpu", {"compile": True, "cuda_graph": False}),
    ("no", "cuda", {"compile": False, "cuda_graph": False}),
])
def test_gpu_runs_compile_and_replay_by_default(choice, device, expected):
    assert cli.decode_options(choice, device) == expected


def test_cli_passes_the_decode_options_to_apply_raas(tiny_model, tmp_path, monkeypatch):
    ckpt = save_checkpoint(tiny_model, TOK, DEFAULT_SPEC, tmp_path / "tiny", log={})
    rec = Recorder()
    monkeypatch.setattr(cli, "raas_applier", lambda: rec.applier)
    cli.main(["accuracy", "--model", str(ckpt), "--decode-tokens", "255", "--n", "1",
              "--fractions", "0.25", "--slack", "1", "--out-dir", str(tmp_path), "--no-plot",
              "--no-progress", "--no-reference", "--policies", "raas", "--compile", "no"])
    assert rec.calls[0][3]["compile"] is False and rec.calls[0][3]["cuda_graph"] is False


def test_one_pass_dense_reference_equals_the_stepwise_decode(tiny_model):
    """fidelity's dense reference is one causal forward; a forced step-by-step generate()
    gives the same log-probabilities (fp32, up to kernel rounding)."""
    from bench.accuracy.harness.fidelity import dense_logprobs, forced_decode

    def stepwise_dense_logprobs(model, prompts, targets) -> torch.Tensor:
        steps = []
        forced_decode(model, prompts, targets, lambda t, s: steps.append(torch.log_softmax(s, -1)))
        return torch.stack(steps, dim=1)

    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(5, 137, (3, 9), generator=gen).tolist()
    targets = torch.randint(5, 137, (3, 20), generator=gen).tolist()
    one_pass = dense_logprobs(tiny_model, prompts, targets)
    stepwise = stepwise_dense_logprobs(tiny_model, prompts, targets)
    assert one_pass.shape == stepwise.shape == (3, 20, tiny_model.config.vocab_size)
    assert torch.allclose(one_pass, stepwise, atol=1e-4)
    shifted = dense_logprobs(tiny_model, [p[1:] for p in prompts], targets)  # another text
    assert not torch.allclose(shifted, stepwise, atol=1e-2)
