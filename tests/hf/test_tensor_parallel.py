"""RaaS under transformers' tensor parallelism, 2 CPU processes over gloo: the tokens equal
one process's, each rank's pools hold only its local kv heads, and the compiled decode is
one graph per rank. tests/policies/test_head_sharding.py holds the per-head property."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import raas_flex as rf
from raas_flex.hf.tensor_parallel import check_tensor_parallel
from raas_flex.hf.tiny import tiny_model
from raas_flex.policies import policy_class
from tests._hf_common import WORDS, greedy, save_word_tokenizer
from tests.distributed import torchrun

pytestmark = pytest.mark.hf

KV_HEADS, RANKS, BUDGET, NEW = 4, 2, 80, 60
PROMPT = [(7 * i + 3) % 120 + 2 for i in range(40)]  # 40 tokens: 3 pages, pages get evicted


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_model(num_attention_heads=8, num_key_value_heads=KV_HEADS)
    path = tmp_path_factory.mktemp("tp") / "model"
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def ranks(saved, tmp_path_factory) -> list[dict]:
    _, path = saved
    out = tmp_path_factory.mktemp("tp_out")
    done = torchrun(RANKS, ["tests/hf/tp_worker.py", str(path), str(out), str(BUDGET), str(NEW)],
                    env={"TP_TEST_PROMPT": json.dumps(PROMPT)})
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(RANKS)]


def test_sharded_tokens_equal_one_process(saved, ranks) -> None:
    model, _ = saved
    rf.apply_raas(model, budget=BUDGET, page_size=16)
    ids = torch.tensor([PROMPT])
    one = greedy(model, ids, torch.ones_like(ids), NEW)[0].tolist()
    rf.remove_raas(model)
    assert len(PROMPT) + NEW > BUDGET  # pages were evicted on the way
    for rank in ranks:
        assert rank["tp_size"] == RANKS
        assert rank["eager"] == one
        assert rank["compiled"] == one


def test_each_rank_holds_only_its_heads(ranks) -> None:
    for rank in ranks:
        assert rank["pool_heads"] == [KV_HEADS // RANKS] * 2  # one entry per layer


def test_compiled_decode_is_one_graph_per_rank(ranks) -> None:
    assert [rank["graphs"] for rank in ranks] == [1] * RANKS


class _Sharded(torch.nn.Module):
    def __init__(self, kv_heads: int, tp_size: int) -> None:
        super().__init__()
        self.config = tiny_model().config
        self.config.num_key_value_heads = kv_heads
        self.tp_size = tp_size


def test_uneven_head_split_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be split evenly"):
        check_tensor_parallel(_Sharded(kv_heads=2, tp_size=4), rf.RaaSConfig())


def test_policy_pooling_heads_is_refused(monkeypatch) -> None:
    options = policy_class("raas").Options
    monkeypatch.setattr(options, "per_kv_head", False)
    with pytest.raises(ValueError, match="pools its scores across kv heads"):
        check_tensor_parallel(_Sharded(kv_heads=2, tp_size=2), rf.RaaSConfig())


def test_cli_generate_under_torchrun(tmp_path) -> None:
    """README's N-GPU command, on 2 CPU processes: rank 0 alone prints, each rank's pools
    hold half the kv heads, and the text equals one process's."""
    path = tmp_path / "checkpoint"
    save_word_tokenizer(path)
    tiny_model(num_attention_heads=8, num_key_value_heads=KV_HEADS,
               vocab_size=len(WORDS)).save_pretrained(path)
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    argv = ["generate", "--model", str(path), "--device", "cpu", "--prompt", " ".join(WORDS[:9]),
            "--max-new-tokens", "40", "--budget", "48", "--no-progress"]
    sharded = torchrun(RANKS, ["-m", "raas_flex.cli", *argv])
    assert sharded.returncode == 0, sharded.stderr[-4000:]
    one = subprocess.run([sys.executable, "-m", "raas_flex.cli", *argv], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-4000:]
    lines, alone = sharded.stdout.splitlines(), one.stdout.splitlines()
    assert lines[0] == alone[0]  # the decoded text
    summaries = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(summaries) == 1  # rank 0 only
    single = json.loads(alone[-1])
    assert summaries[0]["tensor_parallel"] == RANKS and single["tensor_parallel"] == 1
    assert summaries[0]["kv_bytes"] * RANKS == single["kv_bytes"]
