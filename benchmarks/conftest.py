"""Benchmark fixtures: the bundled model on each available backend, real photo content at each size.

Run everything (about 3 minutes on 2 cores)::

    python -m pytest benchmarks --benchmark-warmup=on --benchmark-json=.benchmarks/all.json

The CI pass runs only the gated cases (``-m gate``) and checks them with ``benchmarks/gate.py``.
Benchmarks are not part of the default ``pytest`` run (``testpaths = tests``).
Threads: ``CHROMAFORGE_THREADS`` (default: ONNX Runtime's, one per physical core).
"""

from __future__ import annotations

import os
import platform

import numpy as np
import onnxruntime as ort
import PIL
import pytest
from PIL import Image

import sdk
from sdk import backends, tiling

SIZES = {"256": (256, 256), "512": (512, 512), "1024": (1024, 1024), "4096x3072": (3072, 4096)}


def pytest_configure(config):
    config.addinivalue_line("markers", "gate: measured by the CI regression gate (benchmarks/gate.py)")
    config.addinivalue_line("markers", "memory: peak-memory cases that allocate GBs; run only with -m memory")


def pytest_collection_modifyitems(config, items):
    """Peak-memory cases are opt-in: skipped unless the -m expression names ``memory``."""
    if "memory" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="allocates GBs; opt in with -m memory")
    for item in items:
        if "memory" in item.keywords:
            item.add_marker(skip)


def available_backends() -> list[str]:
    return [n for n, (ok, _) in backends.availability().items() if ok]


def threads() -> int | None:
    return int(os.environ.get("CHROMAFORGE_THREADS", "0")) or None


_PIPELINES: dict[str, sdk.Pipeline] = {}


@pytest.fixture(scope="session", params=available_backends())
def pipeline(request) -> sdk.Pipeline:
    """One Pipeline per backend, created once for the whole session."""
    return _pipeline(request.param)


@pytest.fixture(scope="session")
def cpu_pipeline() -> sdk.Pipeline:
    """The ONNX Runtime CPU pipeline (for backend-independent cases: fusion, processing stages)."""
    return _pipeline("onnxruntime-cpu")


def _pipeline(backend: str) -> sdk.Pipeline:
    if backend not in _PIPELINES:
        _PIPELINES[backend] = sdk.load(backend=backend, threads=threads())
    return _PIPELINES[backend]


def photo(size: str, grey: bool) -> np.ndarray:
    """The example photo resized to ``size`` (real content, not zeros or noise)."""
    h, w = SIZES[size]
    im = Image.open(sdk.example_image()).convert("L" if grey else "RGB").resize((w, h), Image.BICUBIC)
    return np.asarray(im)


def info(benchmark, pipe: sdk.Pipeline | None, size: str, batch: int = 1, **extra) -> None:
    """Record what was measured, on what, in the result's ``extra_info``."""
    if pipe is not None:
        extra = dict(backend=pipe.backend_name, precision=pipe.precision, model_precision=pipe.manifest.precision,
                     threads=getattr(pipe.runner, "threads", None), **extra)
    benchmark.extra_info.update(
        size=size, batch=batch, onnxruntime=ort.__version__, numpy=np.__version__, pillow=PIL.__version__,
        chromaforge=sdk.__version__, python=platform.python_version(),
        fast_path=tiling.fast_path_enabled(),
        cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), **extra,
    )
