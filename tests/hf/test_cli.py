"""`raas-flex generate` in-process, with small settings."""

import json

import pytest

from tests._hf_common import fast_cpu  # noqa: F401
from raas_flex.cli import main

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range


def test_generate_prints_summary(capsys):
    code = main(["generate", "--model", "llama-tiny", "--budget", "64", "--max-new-tokens",
                 "100", "--batch", "2", "--prompt-len", "10"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["new_tokens"] == 2 * 100
    assert summary["tokens_per_s"] > 0
    assert summary["kv_bytes"] < summary["dense_kv_bytes"]
    assert "tokens/s" in lines[0] and "dense" in lines[1]


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="multiple of page_size"):
        main(["generate", "--model", "llama-tiny", "--budget", "70", "--no-progress"])
