"""kernel_options and kv block width for the decode flex_attention call, chosen once per
pool on the host.

A compiled step never queries the device: new_layer_cache stores the resolved options and
block width on the pool (LayerCache.kernel_options, LayerCache.every_slot) and the step
reads them from there (Dynamo guards on the dict). RaaSConfig.kernel_options and
RaaSConfig.kernel_block_pages override the defaults (bench/NOTES.md item 10, lever 23).
"""

from __future__ import annotations

import torch

# On the H100, three pipeline stages in the split-KV decode kernel made the whole RaaS step
# 1.5x faster at batch 32 (290 -> 193 us, bench/NOTES.md item 10). Measured on sm90 only,
# so other GPUs keep torch's defaults.
HOPPER_DECODE_OPTIONS = {"num_stages": 3}


def device_kernel_options(device: torch.device | str,
                          chosen: dict | None = None) -> dict | None:
    """`chosen` (a copy) if given, else the measured default for `device`: sm90 gets
    HOPPER_DECODE_OPTIONS, everything else torch's defaults (None)."""
    if chosen is not None:
        return dict(chosen)  # flex may fill in defaults; the caller's dict stays as it was
    return dict(HOPPER_DECODE_OPTIONS) if _is_hopper(device) else None


# On the H200, flex alone over raas's 2k pool with 128-token kv blocks instead of 16-token
# pages: 145.7 -> 96.1 us at batch 32, 49.4 -> 38.4 at batch 8, 17.4 -> 17.5 at batch 1
# (bench/results/latency/flex_sweep_h200.json, lever 23). Measured on sm90 only.
HOPPER_BLOCK_TOKENS = 128


def device_block_pages(device: torch.device | str, page_size: int,
                       chosen: int | None = None) -> int:
    """Pages per kv block when an evicting step lists its whole pool: `chosen` if given,
    else the measured default for `device`: blocks of HOPPER_BLOCK_TOKENS on sm90, one page
    elsewhere."""
    if chosen is not None:
        return chosen
    return max(1, HOPPER_BLOCK_TOKENS // page_size) if _is_hopper(device) else 1


def _is_hopper(device: torch.device | str) -> bool:
    """Whether `device` is an sm90 GPU, the only kind these defaults were measured on."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9
