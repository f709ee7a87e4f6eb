"""The small reasoning model: its config presets, checkpoint files, and dense greedy scoring.

Shared by train_reasoner.py (training, final check) and accuracy.py (the policy sweep).
A checkpoint folder holds transformers' save_pretrained files (config.json,
generation_config.json, bf16 weights in safetensors shards of <= 16 MB + their index),
reasoner.json (the word vocabulary and the task spec) and train_log.json: 7 files, each small
enough to come back from the device machine (at most 8 files of 16 MiB there).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.accuracy.tasks import VOCAB_SIZE, Problem, TaskSpec, WordTokenizer, check, family
from bench.accuracy.tasks.families import step_kind

META = "reasoner.json"  # vocabulary and task spec, beside transformers' files

PRESETS = {
    # 14.6M parameters: 6 layers, d=512, GQA 8 query / 2 kv heads of 64 (a real GQA model, so
    # the policies' per-kv-head paths are exercised), SwiGLU 1152; 29 MB in bf16 = 2 shards.
    "base": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                 num_key_value_heads=2, intermediate_size=1152),
    # CPU learnability checks (~0.8M parameters).
    "small": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=384),
    # CPU smoke tests only.
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=64),
}


def model_config(preset: str, tok: WordTokenizer, max_positions: int,
                 rope_theta: float = 10000.0) -> LlamaConfig:
    """A LlamaConfig over the task vocabulary. rope_theta 1e4 suffices: the model is trained at
    (and evaluated within) the lengths it sees; raise it with the training length."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}; choose one of {sorted(PRESETS)}.")
    return LlamaConfig(
        vocab_size=VOCAB_SIZE, max_position_embeddings=max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False,
        **PRESETS[preset],
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: LlamaForCausalLM, tok: WordTokenizer, spec: TaskSpec,
                    out: Path, log: dict, max_mb: float = 100.0, shard: str = "16MB") -> Path:
    """Write the checkpoint folder (weights in the model's dtype); refuse weights > max_mb."""
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = tok.pad_id
    model.generation_config.eos_token_id = tok.eos_id
    model.save_pretrained(out, safe_serialization=True, max_shard_size=shard)
    (out / META).write_text(json.dumps({"words": list(tok.words), "task_spec": asdict(spec)}))
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    size_mb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20
    if size_mb > max_mb:
        raise ValueError(f"weights are {size_mb:.1f} MB > {max_mb} MB; save in bf16 or shrink.")
    return out


def load_checkpoint(path: str | Path, device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[LlamaForCausalLM, WordTokenizer, TaskSpec]:
    path = Path(path)
    if not is_checkpoint(path):
        raise FileNotFoundError(f"{path} is not a reasoner checkpoint (no {META}); "
                                f"train one with bench/accuracy/train_reasoner.py.")
    model = LlamaForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    meta = json.loads((path / META).read_text())
    return model, WordTokenizer(tuple(meta["words"])), TaskSpec(**meta["task_spec"])


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / META).exists()


def prompt_ids(problems: list[Problem], tok: WordTokenizer, device) -> torch.Tensor:
    """[B, P] prompt ids; every task prompt has the same length, so no padding."""
    rows = [tok.encode(p.prompt) for p in problems]
    if len({len(r) for r in rows}) != 1:
        raise ValueError("prompts differ in length; batch problems of one spec.")
    return torch.tensor(rows, device=device)


@torch.no_grad()
def greedy_outputs(model, tok: WordTokenizer, problems: list[Problem],
                   max_new_tokens: int) -> list[list[int]]:
    """Greedy-decode a batch with model.generate(); returns each row's new ids up to <eos>."""
    ids = prompt_ids(problems, tok, model.device)
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
        do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
    )[:, ids.shape[1]:]
    rows = []
    for row in out.tolist():
        rows.append(row[: row.index(tok.eos_id) + 1] if tok.eos_id in row else row)
    return rows


def score_outputs(problems: list[Problem], outputs: list[list[int]], tok: WordTokenizer,
                  spec: TaskSpec) -> list[dict]:
    """Per problem: exact answer right?, whole chain right?, generated length."""
    records = []
    for p, ids in zip(problems, outputs):
        v = check(p.prompt, tok.decode(ids), spec.registers, spec.fact_every, spec.lemma_every,
                  spec.notes)
        k = v.first_error_step
        kind = None if k is None or k >= p.n_steps else step_kind(family(p.family), k, p.n_steps, spec)[0]
        records.append({"correct": v.answer == p.answer, "chain_ok": v.ok,
                        "first_error_step": k, "first_error_phoenix": None if kind is None else kind == "fact",
                        "first_error_kind": kind,
                        "generated_tokens": len(ids)})
    return records


def dense_accuracy(model, tok: WordTokenizer, spec: TaskSpec, problems: list[Problem],
                   batch_size: int = 64, slack: float = 1.25) -> dict:
    """Exact-answer accuracy of plain greedy decoding (no raas_flex) on `problems`."""
    max_new = int(slack * len(problems[0].chain.split()))
    records = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i: i + batch_size]
        records += score_outputs(chunk, greedy_outputs(model, tok, chunk, max_new), tok, spec)
    n = len(records)
    return {"n": n, "accuracy": sum(r["correct"] for r in records) / n,
            "chain_accuracy": sum(r["chain_ok"] for r in records) / n,
            "mean_generated_tokens": sum(r["generated_tokens"] for r in records) / n}
