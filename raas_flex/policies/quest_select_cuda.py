"""raas_flex::quest_blocks on CUDA in one launch: quest_select.cu, one thread block per
(sequence, kv head) row, compiled by NVRTC at first use (raas_flex/cuda_rtc.py).

Same contract and decisions as the two-stage Triton select (keep_all_triton.quest_blocks_cuda)
and the torch rule (keep_all_ops.quest_blocks_torch); the block list's chosen slots come in
slot order, as the Triton select writes them, so the attention reads the pages in the same
order and the step's output is the same bit for bit. Rows of more than
THREADS * MAX_ITEMS slots go to the Triton select (keep_all_ops). Imported on first CUDA
use only.
"""

from __future__ import annotations

from importlib import resources

import torch

from raas_flex.cuda_rtc import Kernel, check_flat, load_kernel
from raas_flex.triton_pdl import launches_with_pdl

THREADS = 1024  # a row's block: 10 keys a thread at quest's 9,217 slots (128k tokens)
MAX_ITEMS = 32  # keys a thread holds (bit masks of 32): rows of up to 32,768 slots
ENABLED = True  # module setting: False selects with the two Triton kernels (bench/)
DEFINES: dict[str, int] = {}  # more -D settings of quest_select.cu (bench/)

_KERNELS: dict[tuple, Kernel] = {}


def select_fits(S: int) -> bool:
    """Whether a row of S slots fits one block's registers."""
    return -(-S // THREADS) <= MAX_ITEMS


def _kernel(device: torch.device, S: int) -> Kernel:
    """The kernel built for rows of S slots (one build per keys-a-thread count)."""
    items = -(-S // THREADS)
    defines = {"THREADS": THREADS, "ITEMS": items, **DEFINES}
    key = (device.index if device.index is not None else torch.cuda.current_device(),
           *sorted(defines.items()))
    if key not in _KERNELS:
        source = resources.files("raas_flex.policies").joinpath("quest_select.cu").read_text()
        _KERNELS[key] = load_kernel(source, "quest_select", device, defines)
    return _KERNELS[key]


def quest_blocks_one_launch(scores: torch.Tensor, page_id: torch.Tensor, fill: torch.Tensor,
                            current: torch.Tensor, visible: torch.Tensor, k: int
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """keep_all_ops.quest_blocks where select_fits(S), 1 <= k <= S: writes visible [B, H, S]
    int32 and returns count [B, H, 1] int32 and index [B, H, 1, S] int32; no host sync."""
    B, H, S = scores.shape
    check_flat("quest_blocks", dict(
        scores=(scores, torch.float32), page_id=(page_id, torch.int64),
        fill=(fill, torch.int32), current=(current, torch.int64),
        visible=(visible, torch.int32)))
    count = torch.empty((B, H, 1), dtype=torch.int32, device=scores.device)
    index = torch.empty((B, H, 1, S), dtype=torch.int32, device=scores.device)
    with torch.cuda.device(scores.device):  # the launch goes to the current context
        _kernel(scores.device, S)(B * H, THREADS, scores, page_id, fill, current, visible,
                                  count, index, S, k, pdl=launches_with_pdl(scores.device))
    return count, index
