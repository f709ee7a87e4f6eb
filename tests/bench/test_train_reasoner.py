"""The training script's loop on the CPU: it runs, the loss falls, the checkpoint reloads."""

from __future__ import annotations

import pytest
import contextlib
import json
from types import SimpleNamespace

import torch
from transformers import LlamaForCausalLM

from bench.accuracy import train_reasoner as tr
from bench.accuracy.reasoner import PRESETS, count_parameters, load_checkpoint, model_config
from bench.accuracy.tasks import DEFAULT_SPEC, FAMILY_NAMES, VOCAB_SIZE, WordTokenizer, make_problems

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range


def test_tiny_training_lowers_loss_and_saves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tiny"
    log = tr.train(tr.parse_args(["--tiny", "--steps", "24", "--out", str(out)]))
    losses = [e["loss"] for e in log["events"]]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3
    files = sorted(f.name for f in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16e6 for f in files), files
    saved = json.loads((out / "train_log.json").read_text())
    assert saved["steps"] == 24 and set(saved["final_dense_greedy"]) == set(FAMILY_NAMES)
    fields = saved["final_field_accuracy"]
    assert {"regular/res", "phoenix/val", "regular/counter"} <= set(fields["registers"])
    assert {"lemma_read/res", "lemma_def/res"} <= set(fields["lemmas"])
    assert {"note_read/carry", "note_def/res", "regular/old"} <= set(fields["recall"])
    for f in FAMILY_NAMES:  # the greedy text of every family went through its checker
        greedy = saved["final_dense_greedy"][f]
        assert greedy["n"] == 4 and 0.0 <= greedy["accuracy"] <= 1.0
    model, tok, spec = load_checkpoint(out)
    assert count_parameters(model) == log["parameters"] and spec.registers == 8
    assert model.generation_config.eos_token_id == tok.eos_id


def test_base_preset_is_within_the_parameter_range():
    with torch.device("meta"):
        model = LlamaForCausalLM(model_config("base", WordTokenizer(), max_positions=2304))
    assert 10e6 <= count_parameters(model) <= 50e6
    # bf16 weights fit two 16 MB shards: the folder comes back from the device in <= 8 files
    assert 2 * count_parameters(model) <= 0.95 * 2 * 16e6
    assert set(PRESETS) >= {"base", "tiny"}


def test_curriculum_and_schedule_shapes():
    lengths = [tr.chain_steps(p / 10, 8, 188, 0.5) for p in range(11)]
    assert lengths[0] == 8 and lengths[5:] == [188] * 6 and lengths == sorted(lengths)
    assert tr.lr_factor(0, 0.0, 10, 0.1) == 0.1 and tr.lr_factor(9, 0.0, 10, 0.1) == 1.0
    assert tr.lr_factor(50, 1.0, 10, 0.1) == 0.1
    assert tr.seq_len_for(188) % tr.SEQ_MULTIPLE == 0 and tr.seq_len_for(188) >= 27 + 188 * 12 + 3


class Oracle(torch.nn.Module):
    """Predicts every next token right, except at positions listed in `wrong`."""

    def __init__(self, ids: torch.Tensor, wrong: torch.Tensor) -> None:
        super().__init__()
        self.ids, self.wrong = ids, wrong

    def forward(self, input_ids):
        rows = [int((self.ids[:, :-1] == r).all(-1).nonzero()[0]) for r in input_ids]
        target = self.ids[rows, 1:].clone()
        target[self.wrong[rows]] = (target[self.wrong[rows]] + 1) % 40
        return SimpleNamespace(logits=torch.nn.functional.one_hot(target, VOCAB_SIZE).float())


def test_field_accuracy_points_at_the_wrong_field():
    tok = WordTokenizer()
    problems = make_problems("test", 3, 400, seed=2)
    ids = torch.tensor([tok.encode(p.text) for p in problems])
    n, width = problems[0].n_steps, DEFAULT_SPEC.step_tokens
    wrong = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    phoenix = [k for k in range(n) if (n - 1 - k) % DEFAULT_SPEC.fact_every == 0]
    for k in phoenix:  # break the value read from the prompt on every phoenix step
        val_token = DEFAULT_SPEC.prompt_tokens + k * width + DEFAULT_SPEC.counter_digits + 4
        wrong[:, val_token - 1] = True
    acc = tr.field_accuracy(Oracle(ids, wrong), ids, n, contextlib.nullcontext)
    assert acc["phoenix/val"] == 0.0
    assert all(v == 1.0 for k, v in acc.items() if k != "phoenix/val")


def test_training_continues_from_a_checkpoint(tmp_path):
    first = tr.train(tr.parse_args(["--tiny", "--steps", "12", "--out", str(tmp_path / "a")]))
    second = tr.train(tr.parse_args(["--tiny", "--steps", "4", "--ramp", "0", "--init-from",
                                     str(tmp_path / "a"), "--out", str(tmp_path / "b")]))
    # the continued run starts where the first left off, not from a fresh model's ~ln(64)
    assert second["events"][0]["loss"] < first["events"][0]["loss"] - 0.3
    assert second["events"][0]["chain_steps"] == second["final_chain_steps"]
