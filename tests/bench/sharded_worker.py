"""One rank of tests/bench/test_sharded_llama.py (torch.distributed.run, gloo, CPU): build
the tiny shape in shards, greedy-decode dense and RaaS, write the tokens to <out>/rank<r>.json."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import raas_flex as rf
from bench.e2e.sharded_llama import build_sharded_llama
from raas_flex.hf.tensor_parallel import tensor_parallel_size


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = build_sharded_llama("tiny-tp", mesh, torch.device("cpu"), torch.float32)
    ids = torch.tensor([json.loads(os.environ["TP_TEST_PROMPT"])])
    dense = model.generate(ids, max_new_tokens=60, do_sample=False)[0].tolist()
    rf.apply_raas(model, budget=80, page_size=16)
    raas = model.generate(ids, max_new_tokens=60, do_sample=False)[0].tolist()
    result = {"tp": tensor_parallel_size(model), "dense": dense, "raas": raas}
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
