"""cuda_rtc's ctypes mirrors of the driver's launch structs match the CUDA headers' layout
(cuda.h: CUlaunchAttribute is an id padded to 8 bytes and a 64-byte value union whose
first words are PDL's flag or a cluster's x, y, z; CUlaunchConfig six grid and block
dims, the shared bytes, the stream, the attribute array and its count): a wrong offset
would hand cuLaunchKernelEx garbage only on the GPU, where CI does not run. And check_flat,
the launchers' one check of the pool's tensors, names the tensor and the fix."""

from __future__ import annotations

import ctypes

import pytest
import torch

from raas_flex.cuda_rtc import _LaunchAttribute, _LaunchConfig, check_flat


def test_launch_attribute_layout():
    assert ctypes.sizeof(_LaunchAttribute) == 72
    assert _LaunchAttribute.id.offset == 0
    assert _LaunchAttribute.value.offset == 8
    cluster = _LaunchAttribute(id=4, value=(ctypes.c_uint * 16)(4, 1, 1))
    raw = bytes(cluster)
    assert raw[8:20] == (4).to_bytes(4, "little") + (1).to_bytes(4, "little") * 2


def test_launch_config_layout():
    assert ctypes.sizeof(_LaunchConfig) == 56
    offsets = {name: getattr(_LaunchConfig, name).offset
               for name in ("grid", "block", "shared_bytes", "stream", "attrs", "num_attrs")}
    assert offsets == dict(grid=0, block=12, shared_bytes=24, stream=32, attrs=40,
                           num_attrs=48)


def test_check_flat_names_the_tensor_and_the_fix():
    flat = torch.zeros(3, 4, dtype=torch.int32)
    check_flat("op", dict(fill=(flat, torch.int32)))
    with pytest.raises(ValueError, match=r"op: fill must be contiguous torch.int32 .*strides"
                                         r" \(1, 3\).*allocate_layer_cache"):
        check_flat("op", dict(fill=(flat.view(4, 3).t(), torch.int32)))
    with pytest.raises(ValueError, match="page_id must be contiguous torch.int64 .got torch.int32"):
        check_flat("op", dict(fill=(flat, torch.int32), page_id=(flat, torch.int64)))
