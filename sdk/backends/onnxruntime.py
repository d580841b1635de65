"""ONNX Runtime backends: CPU, CUDA and TensorRT execution providers.

One :class:`ORTBackend` class, registered under three names. A GPU provider is checked after
the session is created: ONNX Runtime silently falls back to CPU when a provider fails to load, so
the backend raises instead of pretending.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sdk.backends import BackendSpec, register
from sdk.errors import BackendUnavailableError, ModelCorruptError
from sdk.manifest import Manifest

PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


class ORTBackend:
    """Runs the model with one ONNX Runtime session, created once and reused.

    Args:
        manifest: the model's manifest.
        provider: ONNX Runtime execution provider name.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
        provider_options: options for the provider (e.g. TensorRT's ``trt_fp16_enable``).
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
            self.session = ort.InferenceSession(str(manifest.model_path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelCorruptError(f"ONNX Runtime could not load {manifest.model_path}: {e}") from e
        got = self.session.get_providers()
        if got[0] != provider:
            raise BackendUnavailableError(
                f"asked ONNX Runtime for {provider} but the session runs on {got}; "
                "check the CUDA/TensorRT libraries and that onnxruntime-gpu replaced onnxruntime (pip install 'chromaforge[gpu]')"
            )
        self.threads = so.intra_op_num_threads or os.cpu_count() or 1
        self.input_names = manifest.input_names
        self.output_names = list(manifest.output_names)

    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        feeds = {self.input_names[0]: luma, self.input_names[1]: style}
        return self.session.run(self.output_names, feeds)[0]


def _available(provider: str) -> tuple[bool, str]:
    have = ort.get_available_providers()
    if provider in have:
        return True, f"onnxruntime {ort.__version__} offers {provider}"
    extra = "" if provider == "CPUExecutionProvider" else " (pip install 'chromaforge[gpu]', which replaces onnxruntime with onnxruntime-gpu, and a CUDA GPU)"
    return False, f"onnxruntime {ort.__version__} offers only {have}{extra}"


def _factory(provider: str):
    def create(manifest: Manifest, threads: int | None = None, **options) -> ORTBackend:
        opts = dict(options)
        if provider == "TensorrtExecutionProvider":
            # Engines are cached per model checksum outside the (possibly read-only) package.
            root = Path(os.environ.get("CHROMAFORGE_CACHE", Path.home() / ".cache" / "chromaforge"))
            cache = root / "trt" / manifest.sha256[:16]
            cache.mkdir(parents=True, exist_ok=True)
            opts = {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True, **opts}
        return ORTBackend(manifest, provider, threads=threads, provider_options=opts)

    return create


for _priority, (_name, _provider) in enumerate(reversed(list(PROVIDERS.items()))):
    register(BackendSpec(_name, _priority, lambda p=_provider: _available(p), _factory(_provider)))
