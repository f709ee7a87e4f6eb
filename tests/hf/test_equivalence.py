"""budget >= total tokens: greedy tokens identical to the unpatched model (SDPA)."""

import pytest
import torch

from tests._hf_common import fast_cpu, greedy, prompts  # noqa: F401  (fast_cpu: autouse fixture)
from raas_flex import apply_raas, remove_raas
from raas_flex.hf.tiny import FAMILIES, tiny_model

pytestmark = pytest.mark.hf  # CI runs these on both ends of the transformers range

NEW_TOKENS = 256
BATCHES = {1: (11,), 3: (11, 6, 3)}
BUDGET = 288  # 18 pages >= 11 prompt + 256 new tokens: nothing is ever evicted


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_greedy_matches_unpatched(family, batch):
    model = tiny_model(family)  # SDPA, or eager where the family has no SDPA path
    ids, mask = prompts(BATCHES[batch])
    expected = greedy(model, ids, mask, NEW_TOKENS)
    apply_raas(model, budget=BUDGET, page_size=16)
    try:
        got = greedy(model, ids, mask, NEW_TOKENS)
    finally:
        remove_raas(model)
    assert got.shape == (batch, ids.shape[1] + NEW_TOKENS)
    assert torch.equal(got, expected)
