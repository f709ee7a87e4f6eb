"""raas_flex::raas_bookkeeping on CUDA in one launch: raas_step.cu, one thread block per
(sequence, kv head) row, compiled by NVRTC at first use (raas_flex/cuda_rtc.py), one build
per (slots, head dim, group size, dtype). Imported on first CUDA use only."""

from __future__ import annotations

import ctypes
from importlib import resources

import torch

from raas_flex.cuda_rtc import Kernel, check_flat, load_kernel
from raas_flex.policies.raas_step_layout import ELEM_CODES, FusedLayout
from raas_flex.policies.scores import check_count_fits
from raas_flex.triton_pdl import launches_with_pdl

DEFINES: dict[str, int] = {}  # more -D settings of raas_step.cu (bench/: PROBE)
_KERNELS: dict[tuple, Kernel] = {}


def _kernel(device: torch.device, defines: dict[str, int]) -> Kernel:
    key = (device.index if device.index is not None else torch.cuda.current_device(),
           *sorted(defines.items()))
    if key not in _KERNELS:
        source = resources.files("raas_flex.policies").joinpath("raas_step.cu").read_text()
        _KERNELS[key] = load_kernel(source, "raas_step", device, defines)
    return _KERNELS[key]


def _rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x [B, H, ..., D] in the pool's dtype with unit stride along D (a copy only if not)."""
    x = x.to(dtype)
    return x if x.stride(-1) == 1 else x.contiguous()


def raas_bookkeeping_cuda(layout: FusedLayout, k_pool, v_pool, fill, visible, timestamp,
                          pinned, page_id, kmin, kmax, current, length, overflow, arrivals,
                          step, k, v, q, page_size: int, scale: float, ratio_num: int,
                          ratio_den: int) -> torch.Tensor:
    """raas_step_op.raas_bookkeeping with `layout`, raas_step_layout.fused_layout's answer
    for these shapes (the op's CUDA body computes it, and runs the torch rules where it is
    None); no host sync. The pool's tensors as allocate_layer_cache makes them
    (contiguous); k, v [B, H, 1, D] and q [B, H, G, D] any strides (cast to the pool's
    dtype, as the staged writes cast)."""
    B, H, S, D = kmin.shape
    G = q.shape[2]
    dtype = k_pool.dtype
    check_flat("raas_bookkeeping", dict(
        fill=(fill, torch.int32), visible=(visible, torch.int32),
        timestamp=(timestamp, torch.int64), pinned=(pinned, torch.bool),
        page_id=(page_id, torch.int64), current=(current, torch.int64),
        length=(length, torch.int64), overflow=(overflow, torch.bool),
        arrivals=(arrivals, torch.int32), step=(step, torch.int64),
        k_pool=(k_pool, dtype), v_pool=(v_pool, dtype), kmin=(kmin, dtype),
        kmax=(kmax, dtype)))
    check_count_fits(S, ratio_num)
    k, v, q = _rows(k[:, :, 0], dtype), _rows(v[:, :, 0], dtype), _rows(q, dtype)
    scores = torch.empty((B, H, S), dtype=torch.float32, device=kmin.device)
    blocks = layout.blocks
    defines = dict(S=S, D=D, G=G, ELEM=ELEM_CODES[dtype], THREADS=layout.threads,
                   LPS=layout.lanes, CPL=layout.chunks_per_lane, CLUSTER=blocks, **DEFINES)
    wide = ctypes.c_longlong
    with torch.cuda.device(kmin.device):  # the launch goes to the current context
        _kernel(kmin.device, defines)(
            B * H * blocks, layout.threads, k_pool, v_pool, fill, visible, timestamp, pinned,
            page_id, kmin, kmax, current, length, overflow, arrivals, step, k, v, q, scores,
            wide(k.stride(0)), wide(k.stride(1)), wide(v.stride(0)), wide(v.stride(1)),
            wide(q.stride(0)), wide(q.stride(1)), wide(q.stride(2)), H, page_size,
            ctypes.c_float(scale), wide(ratio_num), wide(ratio_den),
            pdl=launches_with_pdl(kmin.device), cluster=blocks)
    return scores

