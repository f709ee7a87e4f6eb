"""CUDA C++ kernels compiled at first use by NVRTC and launched on torch's current stream.

Why not torch.cuda._compile_kernel: it asks torch.utils.cpp_extension for the CUDA
toolkit's include folder and fails without a toolkit (CUDA_HOME), which a pip install of
torch does not have; NVRTC itself ships with torch's CUDA wheels, and the library's kernels
include no headers. Launches go through the driver's cuLaunchKernelEx on the current
stream, so they are captured by CUDA graphs like any other kernel. Imported on first CUDA use only.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from dataclasses import dataclass
from functools import cache

import torch


def _load(names: list[str], patterns: list[str], what: str) -> ctypes.CDLL:
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    for root in sys.path:  # torch's CUDA wheels keep NVRTC in the nvidia packages
        for pattern in patterns:
            for path in sorted(glob.glob(os.path.join(root, pattern))):
                try:
                    return ctypes.CDLL(path)
                except OSError:
                    continue
    raise OSError(f"raas_flex: {what} not found ({', '.join(names)}). Install torch's CUDA "
                  "build (its wheels bring NVRTC) or put the CUDA toolkit's lib64 on "
                  "LD_LIBRARY_PATH.")


@cache  # found once: the driver is looked up at every launch
def _nvrtc() -> ctypes.CDLL:
    major = str(torch.version.cuda).split(".")[0]
    return _load([f"libnvrtc.so.{major}", "libnvrtc.so"],
                 [f"nvidia/cu{major}/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"],
                 "NVRTC")


@cache
def _driver() -> ctypes.CDLL:
    return _load(["libcuda.so.1"], [], "the CUDA driver (libcuda.so.1)")


def _check_driver(lib: ctypes.CDLL, result: int, doing: str) -> None:
    if result != 0:
        text = ctypes.c_char_p()
        lib.cuGetErrorString(result, ctypes.byref(text))
        raise RuntimeError(f"raas_flex: {doing} failed: CUDA error {result} "
                           f"({(text.value or b'?').decode()})")


def compile_cubin(source: str, name: str, arch: str, defines: dict[str, int]) -> bytes:
    """NVRTC: `source` (no #include) -> a cubin for sm_`arch`, with -D`defines`."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(),
                                    0, None, None)
    if status != 0:
        raise RuntimeError(f"raas_flex: nvrtcCreateProgram failed ({status})")
    options = [f"--gpu-architecture=sm_{arch}", "-std=c++17", "-default-device"]
    options += [f"-D{key}={value}" for key, value in defines.items()]
    array = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
    try:
        status = lib.nvrtcCompileProgram(prog, len(options), array)
        if status != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"raas_flex: compiling {name}.cu failed:\n{log.value.decode()}")
        size = ctypes.c_size_t()
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, cubin)
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


class _LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute: an id, padding to 8 bytes, a 64-byte value union (here as 16
    unsigned ints: PDL's flag is the first, a cluster's x, y, z the first three)."""

    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4),
                ("value", ctypes.c_uint * 16)]


class _LaunchConfig(ctypes.Structure):
    """CUlaunchConfig of cuLaunchKernelEx."""

    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared_bytes", ctypes.c_uint), ("stream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttribute)), ("num_attrs", ctypes.c_uint)]


_CLUSTER_DIMENSION = 4  # CU_LAUNCH_ATTRIBUTE_..., a thread block cluster's shape
_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_..., the PDL launch attribute


@dataclass
class Kernel:
    """One loaded kernel (`function` is a CUfunction) and the module that owns it."""

    module: ctypes.c_void_p
    function: ctypes.c_void_p
    name: str

    def __call__(self, grid: int, block: int, *args: torch.Tensor | int | ctypes._SimpleCData,
                 pdl: bool = False, cluster: int = 1) -> None:
        """Launch on torch's current stream: tensors pass their data pointers, ints as C int,
        ctypes scalars (c_float, c_longlong) as themselves.
        pdl: as a programmatic dependent launch (triton_pdl.py), for a kernel whose first
        statement waits for the previous one (griddepcontrol.wait). cluster: blocks per
        thread block cluster (a divisor of grid; Hopper+)."""
        keep = [ctypes.c_void_p(a.data_ptr()) if isinstance(a, torch.Tensor)
                else a if isinstance(a, ctypes._SimpleCData) else ctypes.c_int(a) for a in args]
        pointers = (ctypes.c_void_p * len(keep))(*(ctypes.addressof(a) for a in keep))
        config = _LaunchConfig(grid=(ctypes.c_uint * 3)(grid, 1, 1),
                               block=(ctypes.c_uint * 3)(block, 1, 1), shared_bytes=0,
                               stream=torch.cuda.current_stream().cuda_stream)
        attributes = []
        if pdl:
            attributes.append(_LaunchAttribute(id=_PROGRAMMATIC_STREAM_SERIALIZATION,
                                               value=(ctypes.c_uint * 16)(1)))
        if cluster > 1:
            attributes.append(_LaunchAttribute(id=_CLUSTER_DIMENSION,
                                               value=(ctypes.c_uint * 16)(cluster, 1, 1)))
        if attributes:
            array = (_LaunchAttribute * len(attributes))(*attributes)
            config.attrs, config.num_attrs = array, len(attributes)
        lib = _driver()
        _check_driver(lib, lib.cuLaunchKernelEx(ctypes.byref(config), self.function, pointers,
                                                None), f"launching {self.name}")


def check_flat(op: str, tensors: dict[str, tuple[torch.Tensor, torch.dtype]]) -> None:
    """Raise ValueError naming the fix unless every tensor is contiguous in its dtype: the
    kernels index the pool's tensors as the flat arrays allocate_layer_cache makes."""
    for name, (tensor, dtype) in tensors.items():
        if tensor.dtype != dtype or not tensor.is_contiguous():
            raise ValueError(f"{op}: {name} must be contiguous {dtype} (got {tensor.dtype}, "
                             f"strides {tensor.stride()}); pass the pool's tensors as "
                             "allocate_layer_cache made them.")


def load_kernel(source: str, name: str, device: torch.device, defines: dict[str, int]) -> Kernel:
    """Compile `source` for `device`'s architecture and load its extern "C" kernel `name`
    into the current context (torch's, made current by torch.cuda.device)."""
    major, minor = torch.cuda.get_device_capability(device)
    cubin = compile_cubin(source, name, f"{major}{minor}", defines)
    lib = _driver()
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    with torch.cuda.device(device):
        torch.zeros(1, device=device)  # torch's context exists and is current
        _check_driver(lib, lib.cuModuleLoadData(ctypes.byref(module), cubin), f"loading {name}")
        _check_driver(lib, lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()),
                      f"finding {name}")
    return Kernel(module, function, name)
