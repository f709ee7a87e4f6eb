"""bench/e2e/sharded_llama.py builds the same model on 1 and on 2 ranks: the tokens, dense
and RaaS with evictions, are equal (2 CPU processes over gloo)."""

from __future__ import annotations

import json

import pytest
import torch

import raas_flex as rf
from bench.e2e.sharded_llama import build_sharded_llama
from tests.distributed import torchrun

PROMPT = [(7 * i + 3) % 500 + 2 for i in range(40)]


def one_process() -> dict:
    model = build_sharded_llama("tiny-tp", None, torch.device("cpu"), torch.float32)
    ids = torch.tensor([PROMPT])
    dense = model.generate(ids, max_new_tokens=60, do_sample=False)[0].tolist()
    rf.apply_raas(model, budget=80, page_size=16)
    return {"dense": dense, "raas": model.generate(ids, max_new_tokens=60,
                                                   do_sample=False)[0].tolist()}


def ranks(world: int, out) -> list[dict]:
    done = torchrun(world, ["tests/bench/sharded_worker.py", str(out)],
                    env={"TP_TEST_PROMPT": json.dumps(PROMPT)})
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.mark.hf
def test_two_ranks_decode_as_one(tmp_path) -> None:
    one = one_process()
    two = ranks(2, tmp_path)
    assert [r["tp"] for r in two] == [2, 2]
    assert len(PROMPT) + 60 > 80  # RaaS evicted pages on the way
    assert len(set(one["dense"][len(PROMPT):])) > 5  # the weights give varied tokens
    for rank in two:
        assert rank["dense"] == one["dense"]
        assert rank["raas"] == one["raas"]
