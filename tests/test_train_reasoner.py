"""The training script's loop on the CPU: it runs, the loss falls, the checkpoint reloads."""

from __future__ import annotations

import json

import torch
from transformers import LlamaForCausalLM

from bench import train_reasoner as tr
from bench.reasoner import PRESETS, count_parameters, load_checkpoint, model_config
from bench.tasks import WordTokenizer


def test_tiny_training_lowers_loss_and_saves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tiny"
    log = tr.train(tr.parse_args(["--tiny", "--steps", "24", "--out", str(out)]))
    losses = [e["loss"] for e in log["events"]]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3
    assert (out / "model.safetensors").stat().st_size < 100 * 2**20
    saved = json.loads((out / "train_log.json").read_text())
    assert saved["steps"] == 24 and "final_dense_greedy" in saved
    model, tok, spec = load_checkpoint(out)
    assert count_parameters(model) == log["parameters"] and spec.registers == 8
    assert model.generation_config.eos_token_id == tok.eos_id


def test_base_preset_is_within_the_parameter_range():
    with torch.device("meta"):
        model = LlamaForCausalLM(model_config("base", WordTokenizer(), max_positions=2304))
    assert 10e6 <= count_parameters(model) <= 50e6
    assert set(PRESETS) >= {"base", "tiny"}


def test_curriculum_and_schedule_shapes():
    lengths = [tr.chain_steps(p / 10, 8, 188, 0.5) for p in range(11)]
    assert lengths[0] == 8 and lengths[5:] == [188] * 6 and lengths == sorted(lengths)
    assert tr.lr_factor(0, 0.0, 10, 0.1) == 0.1 and tr.lr_factor(9, 0.0, 10, 0.1) == 1.0
    assert tr.lr_factor(50, 1.0, 10, 0.1) == 0.1
    assert tr.seq_len_for(188) % tr.SEQ_MULTIPLE == 0 and tr.seq_len_for(188) >= 27 + 188 * 12 + 3
