"""ONNX Runtime backends: CPU, CUDA and TensorRT execution providers.

One :class:`ORTBackend` class, registered under three names. A GPU provider is checked after
the session is created: ONNX Runtime silently falls back to CPU when a provider fails to load, so
the backend raises instead of pretending. Its :class:`~sdk.backends.Capabilities`: the model
file's input dtype, no batch limit, any shape that is a multiple of the manifest's
``size_multiple``, and the precision really run: the manifest's, except on the TensorRT
provider with ``trt_fp16_enable`` (the default here), which runs FP16.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sdk import contract
from sdk.backends import Backend, BackendSpec, Capabilities, register
from sdk.errors import BackendUnavailableError, ModelCorruptError
from sdk.manifest import Manifest

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

    Raises:
        ModelCorruptError: ONNX Runtime cannot load the model file, or the graph does not match
            the manifest (:func:`check_graph`).
        BackendUnavailableError: the session does not run on the requested provider.

    Example:
        >>> with ORTBackend(manifest, "CPUExecutionProvider", threads=2) as backend:
        ...     ycbcr = backend.run(luma, style)
    """

    def __init__(self, manifest: Manifest, provider: str, threads: int | None = None, provider_options: dict | None = None) -> None:
        self.name = next(k for k, v in PROVIDERS.items() if v == provider)
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
            self.session: ort.InferenceSession | None = ort.InferenceSession(str(manifest.model_path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelCorruptError(f"ONNX Runtime could not load {manifest.model_path}: {e}") from e
        got = self.session.get_providers()
        if got[0] != provider:
            raise BackendUnavailableError(
                f"asked ONNX Runtime for {provider} but the session runs on {got}; "
                "check the CUDA/TensorRT libraries and that onnxruntime-gpu replaced onnxruntime (pip install 'chromaforge[gpu]')"
            )
        check_graph(self.session, manifest)
        self.threads = so.intra_op_num_threads or os.cpu_count() or 1
        self.input_names = manifest.input_names
        self.output_names = list(manifest.output_names)
        self.capabilities = Capabilities(
            input_dtype=_ORT_DTYPES.get(self.session.get_inputs()[0].type, "float32"),
            precision=provider_precision(provider, provider_options or {}, manifest.precision),
            multiple=manifest.size_multiple,
            min_shape=(manifest.size_multiple, manifest.size_multiple),
        )

    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        """See :meth:`sdk.backends.Backend.run`.

        Raises:
            BackendUnavailableError: the backend was closed.
        """
        session = self.session
        if session is None:
            raise BackendUnavailableError(f"the {self.name} backend was closed; create a new one (sdk.load) to run again")
        feeds = {self.input_names[0]: luma, self.input_names[1]: style}
        return session.run(self.output_names, feeds)[0]

    def close(self) -> None:
        """Drop the ONNX Runtime session, freeing its memory (and device memory on a GPU provider)."""
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


def provider_options(provider: str, manifest: Manifest, **overrides) -> dict:
    """Options the registry passes to a provider: for TensorRT, FP16 and an engine cache per model
    checksum outside the (possibly read-only) package, under ``$CHROMAFORGE_CACHE`` (default
    ``~/.cache/chromaforge``); ``overrides`` win."""
    if provider != "TensorrtExecutionProvider":
        return dict(overrides)
    root = Path(os.environ.get("CHROMAFORGE_CACHE", Path.home() / ".cache" / "chromaforge"))
    cache = root / "trt" / manifest.sha256[:16]
    cache.mkdir(parents=True, exist_ok=True)
    return {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True, **overrides}


def _available(provider: str) -> tuple[bool, str]:
    have = ort.get_available_providers()
    if provider in have:
        return True, f"onnxruntime {ort.__version__} offers {provider}"
    extra = "" if provider == "CPUExecutionProvider" else " (pip install 'chromaforge[gpu]', which replaces onnxruntime with onnxruntime-gpu, and a CUDA GPU)"
    return False, f"onnxruntime {ort.__version__} offers only {have}{extra}"


def _factory(provider: str):
    def create(manifest: Manifest, threads: int | None = None, **options) -> ORTBackend:
        return ORTBackend(manifest, provider, threads=threads, provider_options=provider_options(provider, manifest, **options))

    return create


for _priority, (_name, _provider) in enumerate(reversed(list(PROVIDERS.items()))):
    register(BackendSpec(_name, _priority, lambda p=_provider: _available(p), _factory(_provider)))
