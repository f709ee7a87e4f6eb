"""How raas_step.cu spreads a (sequence, kv head) row over a thread block or a cluster of
them, and which rows fit it at all: pure arithmetic on shapes, read when a step is traced
(raas_step_op.fuses) and at launch (raas_step_cuda)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

ELEM_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # raas_step.cu's ELEM
CHUNKS_PER_THREAD = 4  # 16-byte summary chunks a thread holds per tensor (registers)
CLUSTER_BLOCKS = 4  # blocks per row, a thread block cluster on Hopper+ (bench/: 1, 2, 4)
SHARED_BYTES = 48 * 1024  # static shared memory of one block


@dataclass(frozen=True)
class FusedLayout:
    """How raas_step.cu spreads a row: over `blocks` thread blocks (a cluster) of `threads`
    each, `lanes` per slot row (min(chunks, 32)), `chunks_per_lane` 16-byte chunks of a
    summary row each."""

    threads: int
    lanes: int
    chunks_per_lane: int
    blocks: int = 1


def row_blocks(device: torch.device, rows: int) -> int:
    """Blocks per row for `rows` (sequence, kv head) rows on `device`: CLUSTER_BLOCKS where
    thread block clusters exist (CUDA, Hopper on) and the rows' blocks fit on the GPU's
    multiprocessors at once, else 1. Why: on the H200 a cluster of 4 took 10.0 µs against
    10.8 for one block at batch 1 (8 rows), but 12.7 vs 12.3 at batch 8 and 26.5 vs 21.9 at
    batch 32 (bench/results/latency/raas_step_probe_h200_v5.json)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 9:
        return 1
    processors = torch.cuda.get_device_properties(device).multi_processor_count
    return CLUSTER_BLOCKS if rows * CLUSTER_BLOCKS <= processors else 1


def fused_layout(S: int, D: int, G: int, dtype: torch.dtype,
                 blocks: int = 1) -> FusedLayout | None:
    """The kernel's layout for rows of S slots, head dim D, G query heads per kv head in
    `dtype` spread over `blocks` thread blocks, or None where a block's share of the row
    does not fit its registers (more than CHUNKS_PER_THREAD chunks a thread, or more
    registers than the block may have) or shared memory, or a summary row is not a power of
    two of 16-byte chunks. With bf16, D = 128 and G = 4 a block holds up to 128 slots
    (L = 2048 at P = 16), a cluster of 4 up to 512."""
    if dtype not in ELEM_CODES or (D * dtype.itemsize) % 16 or not 1 <= G <= 32:
        return None
    chunks = D * dtype.itemsize // 16  # per summary row
    if chunks & (chunks - 1) or chunks > 64:
        return None
    lanes = min(chunks, 32)
    per_lane = chunks // lanes
    own = -(-S // blocks)  # slots a block bounds
    threads = 128
    while threads < 1024 and threads * CHUNKS_PER_THREAD < own * chunks:
        threads *= 2
    rounds = -(-own // (threads // lanes))
    shared = 4 * (G + 1) * D + S * (4 + 8 + 8 + 1 + 8) + 12 * 32 + 64
    # 32-bit registers a thread needs, roughly: its chunks of both summaries, partial sums
    # per (round, query head), query elements, ~40 more (nvcc -arch=sm_90: 127 at S = 128,
    # G = 4, 512 threads, no spills; S = 128, G = 8 spills); more than a block of `threads`
    # may have would spill
    registers = 8 * rounds * per_lane + 2 * rounds * G + 2 * G + 40
    if (rounds * per_lane > CHUNKS_PER_THREAD or shared > SHARED_BYTES
            or registers > min(255, 65536 // threads)):
        return None
    return FusedLayout(threads, lanes, per_lane, blocks)
