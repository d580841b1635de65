"""Inference backends: the contract a backend implements, and a registry of names.

A backend runs the generator, ``run(luma [N,1,h,w], style [N,S]) -> ycbcr [N,3,h,w]``, and
declares in :class:`Capabilities` what it accepts: the input dtype (float32 or float16), the
largest batch, the working shapes (a range, or fixed buckets) and the precision it really computes
in. :func:`sdk.stages.infer` adapts the jobs to those declarations (groups by shape, pads to a
bucket with replicate padding and crops after, splits by the maximum batch, casts the dtype), so a
new backend never changes the pipeline. Everything else (decoding, resizing, colour, fusion) is the
pipeline's. :meth:`Backend.close` frees the session and device memory; backends are context
managers.

How other engines fit:
    The native TensorRT backend (:mod:`sdk.backends.tensorrt`) loads the manifest's engine for this
    GPU and declares the engine's input dtype, its precision, and its optimisation profiles
    (:mod:`sdk.backends.profiles`) as ``min_shape``/``max_shape`` or ``buckets`` with ``max_batch``;
    ``close`` frees the execution contexts, engine and CUDA buffers. A remote (Triton) backend
    would read the server's model config (``max_batch_size``, dims, ``TYPE_FP16``/``TYPE_FP32``)
    into :class:`Capabilities`, send ``run``'s arrays over HTTP/gRPC and close its client in
    ``close`` (``python -m export triton`` writes such a server's repository; no Triton backend
    ships yet).

Names:
    ``tensorrt`` (native TensorRT, :mod:`sdk.backends.tensorrt`: the ``tensorrt`` extra, a GPU and
    an engine for it in the manifest), ``onnxruntime-tensorrt``, ``onnxruntime-cuda`` (the ``gpu``
    extra, onnxruntime-gpu, and a GPU), ``onnxruntime-cpu``. ``auto`` picks the first that is
    available and can be created for the model, in that order, and records why in
    :attr:`Backend.reason`. A new backend is one module that subclasses :class:`Backend` and calls
    :func:`register`.

Precision:
    :func:`create` takes ``precision`` (``"fp32"``, ``"fp16"`` or None for the backend's default):
    the ONNX Runtime backends then run the manifest's ONNX file of that precision (the FP16 one
    from ``python -m export fp16``), the TensorRT provider switches its FP16 mode, the native
    backend picks an engine of that precision. A backend that cannot honour it raises
    :class:`~sdk.errors.BackendUnavailableError` (and ``auto`` moves on).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sdk.errors import BackendUnavailableError, InvalidArgumentError
from sdk.manifest import Manifest

INPUT_DTYPES = ("float32", "float16")
Shape = tuple[int, int]


@dataclass(frozen=True)
class Capabilities:
    """What a backend accepts and how it computes; the pipeline adapts its batches to it.

    Attributes:
        input_dtype: dtype of the ``luma`` and ``style`` arrays ``run`` takes, ``"float32"`` or
            ``"float16"`` (the pipeline casts; outputs may be either and are read as float32).
        precision: what the backend really computes in (``"fp32"``, ``"fp16"``...), reported by
            ``Pipeline.precision``, ``chromaforge info`` and the benchmarks. TensorRT with FP16
            enabled is ``"fp16"`` even when it runs an FP32 ONNX file.
        max_batch: the largest N of one ``run`` call; None for no limit.
        min_shape: smallest (h, w) accepted; smaller working shapes are padded up to it.
        max_shape: largest (h, w) accepted; None for no limit.
        multiple: accepted sides are multiples of this; working shapes are padded up to one.
        buckets: fixed (h, w) shapes. When given, ``run`` only ever sees these: each working shape
            is padded (replicate, bottom and right) to the smallest bucket that holds it, and the
            output is cropped back. ``min_shape``, ``max_shape`` and ``multiple`` are then unused.

    Raises:
        InvalidArgumentError: an unknown dtype, a batch below 1, or a non-positive shape.

    Example:
        >>> Capabilities(buckets=((256, 256), (192, 256))).run_shape((160, 256))
        (192, 256)
    """

    input_dtype: str = "float32"
    precision: str = "fp32"
    max_batch: int | None = None
    min_shape: Shape = (1, 1)
    max_shape: Shape | None = None
    multiple: int = 1
    buckets: tuple[Shape, ...] = ()

    def __post_init__(self) -> None:
        if self.input_dtype not in INPUT_DTYPES:
            raise InvalidArgumentError(f"input_dtype is {self.input_dtype!r}; expected one of {INPUT_DTYPES}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch < 1):
            raise InvalidArgumentError(f"max_batch is {self.max_batch!r}; expected an integer >= 1, or None for no limit")
        if not isinstance(self.multiple, int) or self.multiple < 1:
            raise InvalidArgumentError(f"multiple is {self.multiple!r}; expected an integer >= 1")
        shapes = [self.min_shape, *([self.max_shape] if self.max_shape else []), *self.buckets]
        for s in shapes:
            if len(s) != 2 or min(s) < 1:
                raise InvalidArgumentError(f"shape {s!r}: expected (height, width), both >= 1")
        # Smallest first, so run_shape's first fit is the cheapest.
        object.__setattr__(self, "buckets", tuple(sorted((tuple(b) for b in self.buckets), key=lambda b: (b[0] * b[1], b))))

    def run_shape(self, shape: Shape) -> Shape:
        """The (h, w) a working shape runs at: itself, or padded up to a bucket / the range.

        Raises:
            BackendUnavailableError: no bucket holds ``shape``, or it exceeds ``max_shape``.
        """
        h, w = shape
        if self.buckets:
            for bh, bw in self.buckets:
                if bh >= h and bw >= w:
                    return bh, bw
            raise BackendUnavailableError(
                f"working shape {shape} fits none of the backend's shape buckets {list(self.buckets)}; "
                "add a bucket that holds it (e.g. rebuild the engine with that profile) or use a backend that accepts any shape"
            )
        m = self.multiple
        h = max(math.ceil(h / m) * m, self.min_shape[0])
        w = max(math.ceil(w / m) * m, self.min_shape[1])
        if self.max_shape is not None and (h > self.max_shape[0] or w > self.max_shape[1]):
            raise BackendUnavailableError(
                f"working shape {shape} exceeds the backend's largest {self.max_shape}; "
                "use a model with a smaller work_size or a backend (engine profile) that accepts larger shapes"
            )
        return h, w

    def batches(self, n: int) -> list[slice]:
        """Slices that split ``n`` items into runs of at most ``max_batch``."""
        step = self.max_batch or max(n, 1)
        return [slice(s, min(s + step, n)) for s in range(0, n, step)]


class Backend(abc.ABC):
    """The contract between the pipeline and an inference engine.

    Subclasses set :attr:`name` and :attr:`capabilities`, implement :meth:`run`, and override
    :meth:`close` to free what they hold (calling ``super().close()``). The registry sets
    :attr:`reason`. A backend is used by one pipeline but may be called from several threads.

    Example:
        >>> with sdk.backends.create("onnxruntime-cpu", manifest) as backend:
        ...     ycbcr = backend.run(luma, style)
    """

    name: str = ""
    reason: str = ""
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        """Generator on one batch: luma [N,1,h,w] and style [N,S] in ``capabilities.input_dtype``,
        (h, w) and N within the declared capabilities -> ycbcr [N,3,h,w]."""

    def close(self) -> None:
        """Free sessions and device memory; the backend cannot run afterwards. Idempotent."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return getattr(self, "_closed", False)

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend.

    Attributes:
        name: registry name.
        priority: lower is tried first by ``auto``.
        available: returns (True, why) or (False, why not, including the pip extra to install).
        create: builds the backend for a manifest.
    """

    name: str
    priority: int
    available: Callable[[], tuple[bool, str]]
    create: Callable[..., Backend]


_REGISTRY: dict[str, BackendSpec] = {}


def register(spec: BackendSpec) -> None:
    """Add a backend to the registry (replacing one of the same name)."""
    _REGISTRY[spec.name] = spec


def names() -> list[str]:
    """Registered backend names, in ``auto``'s order."""
    _load_builtin()
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: s.priority)]


def availability() -> dict[str, tuple[bool, str]]:
    """For each registered backend: whether it can run here, and why (not)."""
    _load_builtin()
    return {n: _REGISTRY[n].available() for n in names()}


def create(name: str, manifest: Manifest, threads: int | None = None, precision: str | None = None) -> Backend:
    """Create the backend ``name`` (or the best available for ``"auto"``) for a model.

    Args:
        name: a registered name or ``"auto"``.
        manifest: the model's manifest.
        threads: intra-op threads for CPU backends.
        precision: ``"fp32"`` or ``"fp16"`` to ask for that precision; None for the backend's default.

    Raises:
        BackendUnavailableError: the name is unknown, or the backend cannot run here; the
            message names what is missing and the pip extra that provides it.
    """
    _load_builtin()
    if name == "auto":
        tried = []
        for n in names():
            ok, why = _REGISTRY[n].available()
            if not ok:
                tried.append(f"{n}: {why}")
                continue
            try:
                backend = _REGISTRY[n].create(manifest, threads=threads, **_precision(precision))
            except BackendUnavailableError as e:
                tried.append(f"{n}: {e}")
                continue
            skipped = f" (skipped {'; '.join(tried)})" if tried else ""
            backend.reason = f"auto picked {n}: {why}{skipped}"
            return backend
        raise BackendUnavailableError("no backend can run here: " + "; ".join(tried))
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"unknown backend {name!r}; expected 'auto' or one of {names()}")
    ok, why = _REGISTRY[name].available()
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {why}")
    backend = _REGISTRY[name].create(manifest, threads=threads, **_precision(precision))
    backend.reason = f"{name} requested explicitly: {why}"
    return backend


PRECISIONS = ("fp32", "fp16")


def _precision(precision: str | None) -> dict[str, str | None]:
    """``precision`` checked, as the keyword every backend factory takes (None: the backend's default)."""
    if precision is not None and precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision is {precision!r}; expected one of {PRECISIONS} or None for the backend's default")
    return {"precision": precision}


def _load_builtin() -> None:
    """Import the built-in backend modules (each registers itself once, on first import; a
    backend registered under the same name before that is replaced, one registered after stays)."""
    from sdk.backends import onnxruntime as _ort  # noqa: F401
    from sdk.backends import tensorrt as _trt  # noqa: F401  (imports tensorrt itself only when a backend is created)
