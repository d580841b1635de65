"""ONNX Runtime backends: CPU, CUDA and TensorRT execution providers.

One :class:`ORTBackend` class, registered under three names. A GPU provider is checked after
the session is created: ONNX Runtime silently falls back to CPU when a provider fails to load, so
the backend raises instead of pretending. Its :class:`~sdk.backends.Capabilities`: the model
file's input dtype, no batch limit, any shape that is a multiple of the manifest's
``size_multiple``, and the precision really run: the file's (the FP32 ONNX, or the FP16 one with
``precision="fp16"``), except on the TensorRT provider with ``trt_fp16_enable`` (the default
here), which runs FP16.

GPU providers run through I/O binding (ONNX Runtime's ``IOBinding``, onnxruntime.ai/docs/api/
python/api_summary.html#iobinding): device input and output buffers (``OrtValue``) are allocated
once per shape and reused, inputs are copied in place, and the output comes back in one copy. The
TensorRT provider gets an explicit shape profile covering the pipeline's working shapes
(:mod:`sdk.backends.profiles`, from the manifest's ``work_size`` and ``size_multiple``) and keeps
its engine and timing caches under the user's cache directory, keyed by the model's checksum.
The CUDA and TensorRT paths have never run on a GPU (README, "GPU").
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sdk import contract
from sdk.backends import Backend, BackendSpec, Capabilities, register
from sdk.backends import profiles as _profiles
from sdk.errors import BackendUnavailableError, ModelCorruptError, install_hint
from sdk.manifest import Artifact, Manifest, verify_artifact

PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


class ORTBackend(Backend):
    """Runs the model with one ONNX Runtime session, created once and reused until :meth:`close`.

    Args:
        manifest: the model's manifest.
        provider: ONNX Runtime execution provider name.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
        provider_options: options for the provider (e.g. TensorRT's ``trt_fp16_enable``).
        artifact: the ONNX file to run (an entry of ``manifest.artifacts``, checked against its
            sha256); None for the primary (FP32) model.
        io_binding: run through I/O binding with reused buffers; None: on for GPU providers.

    Raises:
        ModelCorruptError: ONNX Runtime cannot load the model file, it fails its checksum, or the
            graph does not match the manifest (:func:`check_graph`).
        BackendUnavailableError: the session does not run on the requested provider.

    Example:
        >>> with ORTBackend(manifest, "CPUExecutionProvider", threads=2) as backend:
        ...     ycbcr = backend.run(luma, style)
    """

    def __init__(self, manifest: Manifest, provider: str, threads: int | None = None, provider_options: dict | None = None,
                 artifact: Artifact | None = None, io_binding: bool | None = None) -> None:
        self.name = next(k for k, v in PROVIDERS.items() if v == provider)
        self.artifact = artifact or manifest.primary
        if self.artifact.format != "onnx":
            raise BackendUnavailableError(f"{self.artifact.file} is a {self.artifact.format} file; ONNX Runtime runs the manifest's ONNX artifacts")
        model_path = manifest.model_path if self.artifact == manifest.primary else verify_artifact(manifest, self.artifact)
        self.reason = ""
        self.provider = provider
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if provider == "CPUExecutionProvider":
            # ORT's worker threads spin after each run by default, taking the cores the tiled
            # full-resolution post-processing needs next: measured 24.5 -> 21.2 ms (colorize
            # 1024^2) and 100 -> 83 ms (4096x3072) on 2 cores with spinning off.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = [(provider, provider_options or {})] if provider != "CPUExecutionProvider" else []
        providers.append("CPUExecutionProvider")
        try:
            self.session: ort.InferenceSession | None = ort.InferenceSession(str(model_path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelCorruptError(f"ONNX Runtime could not load {model_path}: {e}") from e
        got = self.session.get_providers()
        if got[0] != provider:
            raise BackendUnavailableError(
                f"asked ONNX Runtime for {provider} but the session runs on {got}; "
                f"check the CUDA/TensorRT libraries and that onnxruntime-gpu replaced onnxruntime: {install_hint('gpu')}"
            )
        check_graph(self.session, manifest)
        self.threads = so.intra_op_num_threads or os.cpu_count() or 1
        self.input_names = manifest.input_names
        self.output_names = list(manifest.output_names)
        options = provider_options or {}
        limits: dict = {}
        if provider == "TensorrtExecutionProvider" and "trt_profile_max_shapes" in options:
            # The engine's explicit profile bounds what the provider accepts: declare it.
            max_dims = _profiles.parse_ort_profile(options["trt_profile_max_shapes"], manifest.input_names[0])
            limits = {"max_batch": max_dims[0], "max_shape": (max_dims[2], max_dims[3])}
        self.capabilities = Capabilities(
            input_dtype=_ORT_DTYPES.get(self.session.get_inputs()[0].type, "float32"),
            precision=provider_precision(provider, options, self.artifact.precision),
            multiple=manifest.size_multiple,
            min_shape=(manifest.size_multiple, manifest.size_multiple),
            **limits,
        )
        self.io_binding = provider != "CPUExecutionProvider" if io_binding is None else bool(io_binding)
        self._device = "cpu" if provider == "CPUExecutionProvider" else "cuda"
        self._bound: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        """See :meth:`sdk.backends.Backend.run`.

        Raises:
            BackendUnavailableError: the backend was closed.
        """
        session = self.session
        if session is None:
            raise BackendUnavailableError(f"the {self.name} backend was closed; create a new one (sdk.load) to run again")
        if self.io_binding:
            return self._run_bound(session, luma, style)
        feeds = {self.input_names[0]: luma, self.input_names[1]: style}
        return session.run(self.output_names, feeds)[0]

    def _run_bound(self, session: ort.InferenceSession, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        """One run through I/O binding: device buffers for this shape, allocated on first use and
        reused; inputs copied in place (``OrtValue.update_inplace``), the output copied back once.
        Serialised by a lock (the buffers are shared); the device runs one call at a time anyway."""
        (lname, sname), oname = self.input_names[:2], self.output_names[0]
        key = (luma.shape, style.shape, luma.dtype.str)
        with self._lock:
            bound = self._bound.get(key)
            if bound is None:
                n, _, h, w = luma.shape
                x = ort.OrtValue.ortvalue_from_shape_and_type(list(luma.shape), luma.dtype.type, self._device, 0)
                s = ort.OrtValue.ortvalue_from_shape_and_type(list(style.shape), style.dtype.type, self._device, 0)
                out_type = np.float16 if session.get_outputs()[0].type == "tensor(float16)" else np.float32
                y = ort.OrtValue.ortvalue_from_shape_and_type([n, 3, h, w], out_type, self._device, 0)
                binding = session.io_binding()
                binding.bind_ortvalue_input(lname, x)
                binding.bind_ortvalue_input(sname, s)
                binding.bind_ortvalue_output(oname, y)
                bound = self._bound[key] = (binding, x, s, y)
            binding, x, s, y = bound
            x.update_inplace(np.ascontiguousarray(luma))
            s.update_inplace(np.ascontiguousarray(style))
            session.run_with_iobinding(binding)
            out = y.numpy()  # a device-to-host copy on a GPU; on the CPU a view of the reused buffer, so copy
            return out.copy() if self._device == "cpu" else out

    def close(self) -> None:
        """Drop the ONNX Runtime session and bound buffers, freeing their memory (device memory on a GPU provider)."""
        with self._lock:
            self._bound = {}
        self.session = None
        super().close()


def check_graph(session: ort.InferenceSession, manifest: Manifest) -> None:
    """Check the manifest against the model graph itself: input and output names, ranks, the
    channel and style-vector sizes where the graph fixes them, and the input dtypes.

    Nothing here is specific to one model file: any generator with inputs luma [N, 1, H, W] and
    style [N, S] (S = the manifest's number of styles) and an output [N, 3, H, W] passes.

    Raises:
        ModelCorruptError: naming each mismatch (manifest value vs graph value).
    """
    ins = {i.name: i for i in session.get_inputs()}
    outs = {o.name: o for o in session.get_outputs()}
    problems = []
    if sorted(ins) != sorted(manifest.input_names):
        problems.append(f"inputs are {sorted(ins)} in the graph, {list(manifest.input_names)} in the manifest (expected the same names)")
    missing = [n for n in manifest.output_names if n not in outs]
    if missing:
        problems.append(f"outputs {missing} of the manifest are not in the graph (expected names from {sorted(outs)})")
    luma, style = manifest.input_names
    expected = [(ins.get(luma), "input", luma, 4, 1, 1, "luma channels"),
                (ins.get(style), "input", style, 2, 1, len(manifest.styles), f"style-vector length (= the manifest's {len(manifest.styles)} styles)"),
                (outs.get(manifest.output_names[0]), "output", manifest.output_names[0], 4, 1, 3, "YCbCr channels")]
    for arg, kind, name, rank, axis, size, what in expected:
        if arg is None:
            continue
        shape = arg.shape
        if len(shape) != rank:
            problems.append(f"{kind} {name!r} has rank {len(shape)} {shape}, expected {rank}")
        elif isinstance(shape[axis], int) and shape[axis] != size:
            problems.append(f"{kind} {name!r} has {shape[axis]} on axis {axis}, expected {size} ({what})")
        if kind == "input" and arg.type not in _ORT_DTYPES:
            problems.append(f"input {name!r} is {arg.type}, expected tensor(float) or tensor(float16)")
    if problems:
        raise ModelCorruptError(f"{manifest.model_path} does not match {manifest.directory / contract.MANIFEST_NAME}: "
                                + "; ".join(problems) + ". Re-export the model with `python -m export onnx`, or correct the manifest")


def provider_precision(provider: str, options: dict, model_precision: str) -> str:
    """The precision a provider really runs a model in: ``"fp16"`` for TensorRT with
    ``trt_fp16_enable``, otherwise the model file's.

    Example:
        >>> provider_precision("TensorrtExecutionProvider", {"trt_fp16_enable": True}, "fp32")
        'fp16'
    """
    fp16 = str(options.get("trt_fp16_enable", False)).lower() in ("true", "1")
    return "fp16" if provider == "TensorrtExecutionProvider" and fp16 else model_precision


def cache_dir() -> Path:
    """The user's cache folder for engines and timing caches: ``$CHROMAFORGE_CACHE``, default ``~/.cache/chromaforge``."""
    return Path(os.environ.get("CHROMAFORGE_CACHE", Path.home() / ".cache" / "chromaforge"))


def provider_options(provider: str, manifest: Manifest, max_batch: int = _profiles.DEFAULT_MAX_BATCH, **overrides) -> dict:
    """Options the registry passes to a provider; ``overrides`` win.

    For TensorRT (options as documented in onnxruntime.ai/docs/execution-providers/
    TensorRT-ExecutionProvider.html): FP16 on; an engine cache per model checksum and a timing
    cache, both outside the (possibly read-only) package under :func:`cache_dir`; one explicit
    profile (``trt_profile_min/opt/max_shapes``) covering the pipeline's working shapes, batch
    1..``max_batch`` (:func:`sdk.backends.profiles.dynamic_profile`), so the provider builds one
    engine up front instead of rebuilding whenever a new shape arrives. The same options must be
    passed again for the cache to be reused; they are, since they derive from the manifest.
    """
    if provider != "TensorrtExecutionProvider":
        return dict(overrides)
    cache = cache_dir() / "trt" / manifest.sha256[:16]
    cache.mkdir(parents=True, exist_ok=True)
    (cache_dir() / "trt" / "timing").mkdir(parents=True, exist_ok=True)
    profile = _profiles.dynamic_profile(_profiles.run_side(manifest), manifest.size_multiple, max_batch)
    return {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir() / "trt" / "timing"),
            **_profiles.ort_trt_profile_options(profile, manifest.input_names, len(manifest.styles)), **overrides}


def _available(provider: str) -> tuple[bool, str]:
    have = ort.get_available_providers()
    if provider in have:
        return True, f"onnxruntime {ort.__version__} offers {provider}"
    extra = "" if provider == "CPUExecutionProvider" else f"; {provider} needs a CUDA GPU and onnxruntime-gpu in place of onnxruntime: {install_hint('gpu')}"
    return False, f"onnxruntime {ort.__version__} offers only {', '.join(have)}{extra}"


def onnx_artifact(manifest: Manifest, precision: str | None) -> Artifact:
    """The ONNX file to run for ``precision`` (None: the primary): :meth:`Manifest.onnx_artifact`.

    Raises:
        BackendUnavailableError: the manifest lists no ONNX file of that precision.
    """
    return manifest.onnx_artifact(precision, error=BackendUnavailableError)


def _factory(provider: str):
    def create(manifest: Manifest, threads: int | None = None, precision: str | None = None, **options) -> ORTBackend:
        if provider == "TensorrtExecutionProvider":
            # TensorRT builds its own FP16 engine from the FP32 file; precision picks the mode.
            if precision is not None:
                options = {"trt_fp16_enable": precision == "fp16", **options}
            artifact = None
        else:
            artifact = onnx_artifact(manifest, precision)
        return ORTBackend(manifest, provider, threads=threads, provider_options=provider_options(provider, manifest, **options), artifact=artifact)

    return create


for _priority, (_name, _provider) in enumerate(reversed(list(PROVIDERS.items()))):
    register(BackendSpec(_name, _priority, lambda p=_provider: _available(p), _factory(_provider)))
