"""Benchmark fixtures: the bundled model on each available backend, real photo content at each size.

Run: ``python -m pytest benchmarks --benchmark-warmup=on --benchmark-columns=median,iqr,ops``.
Not part of the default ``pytest`` run (``testpaths = tests``).
"""

from __future__ import annotations

import os
import platform

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import sdk
from sdk import backends

SIZES = {"256": (256, 256), "512": (512, 512), "1024": (1024, 1024), "4096x3072": (3072, 4096)}


def available_backends() -> list[str]:
    return [n for n, (ok, _) in backends.availability().items() if ok]


@pytest.fixture(scope="session", params=available_backends())
def pipeline(request):
    threads = int(os.environ.get("CHROMAFORGE_THREADS", "0")) or None
    return sdk.load(backend=request.param, threads=threads)


def photo(size: str, grey: bool) -> np.ndarray:
    """The example photo resized to ``size`` (real content, not zeros or noise)."""
    h, w = SIZES[size]
    im = Image.open(sdk.example_image()).convert("L" if grey else "RGB").resize((w, h), Image.BICUBIC)
    return np.asarray(im)


def info(benchmark, pipe, size: str, batch: int = 1, **extra) -> None:
    benchmark.extra_info.update(
        backend=pipe.backend, precision=pipe.manifest.precision, threads=getattr(pipe.runner, "threads", None),
        size=size, batch=batch, onnxruntime=ort.__version__, numpy=np.__version__, chromaforge=sdk.__version__,
        cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), **extra,
    )
