"""The few CUDA runtime calls the native TensorRT backend and ``python -m export trt`` need, through
NVIDIA's ``cuda-python`` (no torch): device name and compute capability, device buffers, a stream,
asynchronous copies. Imported lazily; without ``cuda-python`` every call raises
:class:`~sdk.errors.BackendUnavailableError` naming the pip extra.

Calls follow cuda-python's runtime bindings (``cuda.bindings.runtime``, formerly ``cuda.cudart``):
every function returns a tuple whose first element is a ``cudaError_t``
(nvidia.github.io/cuda-python, "cuda.bindings.runtime"; the same pattern as TensorRT's own
``samples/python/common_runtime.py``: ``cudaMalloc``, ``cudaMemcpyAsync``, ``cudaStreamCreate``,
``cudaStreamSynchronize``, ``cudaFree``).

Never run on a real GPU here (README, "GPU": what has not run on real TensorRT).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdk.errors import BackendUnavailableError, install_hint

EXTRA = f"{install_hint('tensorrt')}: tensorrt and cuda-python, on a machine with an NVIDIA GPU and driver"


def runtime() -> Any:
    """The ``cuda-python`` runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6).

    Raises:
        BackendUnavailableError: cuda-python is not installed.
    """
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendUnavailableError(f"the CUDA runtime bindings (cuda-python) are not installed; {EXTRA}")


def call(result: Any) -> Any:
    """Unpack a cuda-python result tuple ``(err, *values)``; raise on an error.

    Returns:
        None, the single value, or the tuple of values.

    Raises:
        BackendUnavailableError: the call returned an error (named by the runtime).
    """
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise BackendUnavailableError(f"CUDA runtime error {name}; check the NVIDIA driver (nvidia-smi) and that a GPU is visible (CUDA_VISIBLE_DEVICES)")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class DeviceInfo:
    """A GPU as engines are matched to it.

    Attributes:
        name: the device name the driver reports (``"NVIDIA H100 80GB HBM3"``).
        compute_capability: ``"major.minor"`` (``"9.0"``).
        index: the CUDA device ordinal.
    """

    name: str
    compute_capability: str
    index: int = 0


def device_count() -> int:
    """Number of CUDA devices (0 without cuda-python, a driver or a GPU); never raises."""
    try:
        return int(call(runtime().cudaGetDeviceCount()))
    except Exception:  # no bindings, no driver, no device: all mean "no GPU here"
        return 0


def device_info(index: int = 0) -> DeviceInfo:
    """Name and compute capability of CUDA device ``index`` (``cudaGetDeviceProperties``).

    Raises:
        BackendUnavailableError: cuda-python is missing or there is no such device.
    """
    rt = runtime()
    prop = call(rt.cudaGetDeviceProperties(index))
    name = prop.name.decode(errors="replace") if isinstance(prop.name, (bytes, bytearray)) else str(prop.name)
    return DeviceInfo(name=name.rstrip("\x00").strip(), compute_capability=f"{prop.major}.{prop.minor}", index=index)


class DeviceBuffer:
    """``nbytes`` of device memory (``cudaMalloc``), freed by :meth:`free` (idempotent)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr: int = int(call(runtime().cudaMalloc(max(self.nbytes, 1))))

    def free(self) -> None:
        if self.ptr:
            call(runtime().cudaFree(self.ptr))
            self.ptr = 0


class Stream:
    """A CUDA stream (``cudaStreamCreate``) with host<->device copies on it."""

    def __init__(self) -> None:
        self.handle = call(runtime().cudaStreamCreate())

    def to_device(self, buffer: DeviceBuffer, array: np.ndarray) -> None:
        """Copy a C-contiguous host array into ``buffer`` (asynchronously; the array must live until :meth:`sync`)."""
        rt = runtime()
        if array.nbytes > buffer.nbytes:
            raise BackendUnavailableError(f"input of {array.nbytes} bytes exceeds its {buffer.nbytes}-byte device buffer (engine profile and buffer plan disagree)")
        call(rt.cudaMemcpyAsync(buffer.ptr, array.ctypes.data, array.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.handle))

    def to_host(self, array: np.ndarray, buffer: DeviceBuffer) -> None:
        """Copy the first ``array.nbytes`` of ``buffer`` into a C-contiguous host array (asynchronously)."""
        rt = runtime()
        call(rt.cudaMemcpyAsync(array.ctypes.data, buffer.ptr, array.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.handle))

    def sync(self) -> None:
        call(runtime().cudaStreamSynchronize(self.handle))

    def destroy(self) -> None:
        if self.handle is not None:
            call(runtime().cudaStreamDestroy(self.handle))
            self.handle = None
