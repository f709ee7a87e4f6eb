"""One rank of tests/hf/test_tensor_parallel.py, started by torch.distributed.run (gloo, CPU).

Loads the saved tiny model with transformers' tensor-parallel plan, greedy-decodes with RaaS
(eager and compiled) and writes, per rank, the tokens, each layer's pool head count and the
compiled graph count to <out>/rank<r>.json.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM

import raas_flex as rf
from raas_flex.hf.compat import returned_cache
from raas_flex.hf.state import raas_state
from raas_flex.hf.tensor_parallel import tensor_parallel_size


def decode(model, ids: torch.Tensor, new_tokens: int) -> tuple[list[int], list[int]]:
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                         return_dict_in_generate=True)
    heads = [int(layer.pool.k.shape[1]) for layer in returned_cache(out).layers]
    return out.sequences[0].tolist(), heads


def main(path: str, out_dir: str, budget: int, new_tokens: int) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    model = AutoModelForCausalLM.from_pretrained(path, tp_plan="auto", dtype=torch.float32)
    model.generation_config.eos_token_id = None
    ids = torch.tensor([json.loads(os.environ["TP_TEST_PROMPT"])])
    result = {"tp_size": tensor_parallel_size(model)}
    rf.apply_raas(model, budget=budget, page_size=16)
    result["eager"], result["pool_heads"] = decode(model, ids, new_tokens)
    rf.remove_raas(model)
    rf.apply_raas(model, budget=budget, page_size=16, compile=True)
    result["compiled"], _ = decode(model, ids, new_tokens)
    result["graphs"] = raas_state(model).compiled.graphs
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
