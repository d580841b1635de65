"""Native TensorRT backend: runs a serialized engine listed in the manifest, no ONNX Runtime, no torch.

The engine is chosen for this GPU (:func:`select_engine`: the manifest's ``tensorrt`` artifacts
whose GPU name, compute capability and TensorRT version match), checked against its sha256,
deserialised once, and run through TensorRT's named-tensor API (TensorRT 10/11:
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with device buffers from
``cuda-python`` (:mod:`sdk.backends._cuda`). Buffers are sized once for the largest shape of the
engine's profiles (:func:`plan_buffers`) and reused by every call; one execution context per
profile, calls serialised by a lock (the GPU runs one call at a time anyway). Its
:class:`~sdk.backends.Capabilities` come from the engine's own profiles
(:func:`sdk.backends.profiles.capabilities`): a range, or buckets; the input dtype is what the
engine declares.

API followed (TensorRT Python API reference, docs.nvidia.com/deeplearning/tensorrt/latest/_static/
python-api: ``Runtime.deserialize_cuda_engine``, ``ICudaEngine.num_io_tensors / get_tensor_name /
get_tensor_mode / get_tensor_dtype / get_tensor_profile_shape / num_optimization_profiles /
create_execution_context``, ``IExecutionContext.set_optimization_profile_async / set_input_shape /
get_tensor_shape / set_tensor_address / execute_async_v3``; TensorRT's
``samples/python/common_runtime.py`` for the buffer and stream pattern). **None of this has run
on real TensorRT**: no GPU was available (README, "GPU"). What is tested: the engine choice and
compatibility checks, the buffer plan, the capabilities, and the typed errors without TensorRT.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from sdk.backends import Backend, BackendSpec, Capabilities, register
from sdk.backends import _cuda, profiles as _profiles
from sdk.errors import BackendUnavailableError, EngineMismatchError
from sdk.manifest import Artifact, Manifest, ShapeProfile, verify_artifact

log = logging.getLogger("sdk")

NAME = "tensorrt"


def rebuild_hint(manifest: Manifest) -> str:
    """The command that builds an engine for this GPU into the model folder."""
    d = manifest.directory
    return f"python -m export trt --model-dir {d} --out {d} --fp16"


def select_engine(manifest: Manifest, device: _cuda.DeviceInfo, trt_version: str, precision: str | None = None) -> Artifact:
    """The manifest's engine for this GPU and TensorRT version.

    A plan runs only on the TensorRT version and the GPU it was built for (TensorRT developer
    guide, "Engine compatibility"); this refuses any other instead of failing in deserialisation.

    Args:
        manifest: the model's manifest.
        device: the GPU (:func:`sdk.backends._cuda.device_info`).
        trt_version: ``tensorrt.__version__`` here.
        precision: ``"fp16"`` / ``"fp32"`` to require one; None takes the first match.

    Raises:
        BackendUnavailableError: the manifest lists no TensorRT engine (of that precision).
        EngineMismatchError: engines exist, none for this GPU and TensorRT version; the message
            lists them and the command that rebuilds one.

    Example:
        >>> select_engine(m, DeviceInfo("NVIDIA H100 80GB HBM3", "9.0"), "10.4.0").file
        'engines/model.fp16.h100-80gb-hbm3.sm90.trt10.4.0.plan'
    """
    engines = manifest.find("tensorrt", precision)
    what = f"{precision} TensorRT engine" if precision else "TensorRT engine"
    if not engines:
        raise BackendUnavailableError(f"the model in {manifest.directory} lists no {what}; build one with `{rebuild_hint(manifest)}`")
    reasons = []
    for art in engines:
        why = engine_mismatch(art, device, trt_version)
        if why is None:
            return art
        reasons.append(f"{art.file}: {why}")
    raise EngineMismatchError(
        f"no {what} in {manifest.directory} fits this machine ({device.name}, compute capability {device.compute_capability}, "
        f"TensorRT {trt_version}): {'; '.join(reasons)}. Rebuild it here with `{rebuild_hint(manifest)}`"
    )


def engine_mismatch(art: Artifact, device: _cuda.DeviceInfo, trt_version: str) -> str | None:
    """Why an engine cannot run on ``device`` with ``trt_version`` (None when it can)."""
    if art.tensorrt != trt_version:
        return f"built with TensorRT {art.tensorrt}, this is {trt_version}"
    if art.compute_capability != device.compute_capability:
        return f"built for compute capability {art.compute_capability} ({art.gpu}), this GPU is {device.compute_capability}"
    if art.gpu != device.name:
        return f"built on {art.gpu}, this GPU is {device.name}"
    return None


def plan_buffers(profiles: Sequence[ShapeProfile], n_styles: int, dtypes: dict[str, np.dtype], names: tuple[str, str, str]) -> dict[str, int]:
    """Bytes of device memory per I/O tensor: enough for the largest shape any profile accepts.

    Allocated once when the backend is created; every call reuses them.

    Args:
        profiles: the engine's ``luma`` profiles [N,1,H,W].
        n_styles: width of the ``style`` input.
        dtypes: numpy dtype per tensor name.
        names: (luma, style, output) tensor names.

    Example:
        >>> plan_buffers([dynamic_profile(256, 32, 8)], 5, {"luma": np.float16, "style": np.float16, "ycbcr": np.float32},
        ...              ("luma", "style", "ycbcr"))
        {'luma': 1048576, 'style': 80, 'ycbcr': 6291456}
    """
    luma, style, out = names
    pixels = max(p.max[0] * p.max[2] * p.max[3] for p in profiles)
    batch = max(p.max[0] for p in profiles)
    return {luma: pixels * np.dtype(dtypes[luma]).itemsize,
            style: batch * n_styles * np.dtype(dtypes[style]).itemsize,
            out: 3 * pixels * np.dtype(dtypes[out]).itemsize}


def _import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as e:
        raise BackendUnavailableError(f"the tensorrt package is not installed ({e}); {_cuda.EXTRA}") from None


def _dtype_name(dtype: np.dtype) -> str:
    name = np.dtype(dtype).name
    if name not in ("float32", "float16"):
        raise BackendUnavailableError(f"the engine's inputs are {name}; the pipeline sends float32 or float16: rebuild the engine from the FP32 or FP16 ONNX")
    return name


class TensorRTBackend(Backend):
    """Runs a TensorRT engine from the manifest on the first CUDA device.

    Args:
        manifest: the model's manifest (lists the engine as a ``tensorrt`` artifact).
        threads: unused (the GPU does the work); accepted for the registry's signature.
        precision: ``"fp16"`` / ``"fp32"`` to require an engine of that precision.

    Raises:
        BackendUnavailableError: tensorrt or cuda-python is missing, there is no GPU, or the
            manifest lists no engine.
        EngineMismatchError: the engines were built for another GPU or TensorRT version.
        ModelCorruptError, ModelNotFoundError: the engine file is damaged or missing.

    Example:
        >>> with TensorRTBackend(load_manifest("models/mine")) as backend:
        ...     ycbcr = backend.run(luma, style)
    """

    name = NAME

    def __init__(self, manifest: Manifest, threads: int | None = None, precision: str | None = None) -> None:
        trt = _import_tensorrt()
        device = _cuda.device_info(0)
        self.artifact = select_engine(manifest, device, trt.__version__, precision)
        path = verify_artifact(manifest, self.artifact)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise EngineMismatchError(f"TensorRT {trt.__version__} could not deserialise {path} on {device.name}; rebuild it with `{rebuild_hint(manifest)}`")
        luma, style = manifest.input_names[:2]
        out = manifest.output_names[0]
        self._names = (luma, style, out)
        tensors = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        if tensors != set(self._names):
            raise EngineMismatchError(f"engine {path} has tensors {sorted(tensors)}, the manifest {list(self._names)}; rebuild it with `{rebuild_hint(manifest)}`")
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self._names}
        self._profiles = tuple(
            ShapeProfile(*(tuple(int(d) for d in dims) for dims in self._engine.get_tensor_profile_shape(luma, i)))
            for i in range(self._engine.num_optimization_profiles)
        )
        self.capabilities: Capabilities = _profiles.capabilities(
            self._profiles, input_dtype=_dtype_name(self._dtypes[luma]), precision=self.artifact.precision, multiple=manifest.size_multiple)
        if self._dtypes[style] != self._dtypes[luma]:
            raise EngineMismatchError(f"engine {path} takes luma as {self._dtypes[luma]} but style as {self._dtypes[style]}; rebuild it with `{rebuild_hint(manifest)}`")
        self._stream = _cuda.Stream()
        plan = plan_buffers(self._profiles, len(manifest.styles), self._dtypes, self._names)
        self._buffers = {n: _cuda.DeviceBuffer(b) for n, b in plan.items()}
        self._contexts: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.device = device
        self.threads = 1

    def _context(self, index: int) -> Any:
        ctx = self._contexts.get(index)
        if ctx is None:
            ctx = self._engine.create_execution_context()
            if ctx is None:
                raise BackendUnavailableError("TensorRT could not create an execution context (out of GPU memory?)")
            if index:
                ctx.set_optimization_profile_async(index, self._stream.handle)
            for name, buf in self._buffers.items():
                ctx.set_tensor_address(name, buf.ptr)
            self._contexts[index] = ctx
        return ctx

    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        """See :meth:`sdk.backends.Backend.run`.

        Raises:
            BackendUnavailableError: the backend was closed, or TensorRT refused the shapes or the call.
        """
        lname, sname, oname = self._names
        with self._lock:
            if self.closed:
                raise BackendUnavailableError(f"the {self.name} backend was closed; create a new one (sdk.load) to run again")
            n, _, h, w = luma.shape
            ctx = self._context(_profiles.profile_index(self._profiles, n, (h, w)))
            x = np.ascontiguousarray(luma, dtype=self._dtypes[lname])
            s = np.ascontiguousarray(style, dtype=self._dtypes[sname])
            if not (ctx.set_input_shape(lname, x.shape) and ctx.set_input_shape(sname, s.shape)):
                raise BackendUnavailableError(f"TensorRT refused input shapes {x.shape} / {s.shape}; its profiles are {list(self._profiles)}")
            out = np.empty(tuple(ctx.get_tensor_shape(oname)), self._dtypes[oname])
            self._stream.to_device(self._buffers[lname], x)
            self._stream.to_device(self._buffers[sname], s)
            if not ctx.execute_async_v3(self._stream.handle):
                raise BackendUnavailableError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            self._stream.to_host(out, self._buffers[oname])
            self._stream.sync()
        return out

    def close(self) -> None:
        """Free the contexts, the engine, the device buffers and the stream."""
        with getattr(self, "_lock", threading.Lock()):
            if self.closed:
                return
            self._contexts = {}
            for buf in getattr(self, "_buffers", {}).values():
                buf.free()
            if getattr(self, "_stream", None) is not None:
                self._stream.destroy()
            self._engine = None
            super().close()


def available() -> tuple[bool, str]:
    """Whether the native backend can run here: tensorrt and cuda-python installed, and a GPU.

    Whether the model has an engine for this GPU is known only with a manifest: ``create`` raises
    then, and ``auto`` moves on to the next backend.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False, f"the tensorrt package is not installed ({_cuda.EXTRA})"
    if importlib.util.find_spec("cuda") is None:
        return False, f"cuda-python is not installed ({_cuda.EXTRA})"
    n = _cuda.device_count()
    if n == 0:
        return False, "no CUDA GPU is visible (nvidia-smi; CUDA_VISIBLE_DEVICES)"
    return True, f"TensorRT with {n} CUDA GPU(s); runs the manifest's engine built for this GPU"


def _create(manifest: Manifest, threads: int | None = None, precision: str | None = None) -> TensorRTBackend:
    return TensorRTBackend(manifest, threads=threads, precision=precision)


register(BackendSpec(NAME, -1, available, _create))
