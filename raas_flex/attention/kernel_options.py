"""kernel_options for the decode flex_attention call, chosen once per pool on the host.

A compiled step never queries the device: new_layer_cache stores the resolved options on
the pool (LayerCache.kernel_options) and the step reads them from there (Dynamo guards on
the dict). RaaSConfig.kernel_options overrides the default (bench/NOTES.md item 10).
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
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9:
        return dict(HOPPER_DECODE_OPTIONS)
    return None
