"""GPU section: end-to-end colorize on each GPU path at 256² and 1024², batch 1 and 8, beside
PyTorch CUDA eager and the FLOPs/bytes floor of the GPU. On a machine without a GPU every case
skips and says why.

Paths: ``onnxruntime-cuda`` FP32 and FP16 (the FP16 ONNX from ``python -m export fp16``),
``onnxruntime-tensorrt`` (its own FP16 engine), native ``tensorrt`` (the manifest's engine for this
GPU, ``python -m export trt --fp16``), and PyTorch CUDA eager FP32/FP16 through the same stages.

Model: the bundled one, or ``CHROMAFORGE_GPU_MODEL=DIR`` for a folder that has the FP16 ONNX and an
engine (the bundled model ships neither: they are made per GPU)::

    python -m export fp16 --model-dir sdk/models/default --out /tmp/gpu-model
    python -m export trt --model-dir /tmp/gpu-model --out /tmp/gpu-model --fp16
    CHROMAFORGE_GPU_MODEL=/tmp/gpu-model python -m pytest benchmarks/test_gpu.py --benchmark-warmup=on \\
        --benchmark-json=.benchmarks/gpu.json

Never run: no GPU was available while this was written (README, "GPU").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import sdk
from conftest import info, photo
from sdk import backends, contract, stages
from sdk.backends import Backend, Capabilities
from sdk.backends import _cuda

GPU_SIZES = ["256", "1024"]
BATCHES = [1, 8]
PATHS = [("onnxruntime-cuda", "fp32"), ("onnxruntime-cuda", "fp16"), ("onnxruntime-tensorrt", None), ("tensorrt", None)]


def no_gpu_reason() -> str | None:
    """Why the GPU section cannot run here (None when a CUDA GPU is visible to some runtime)."""
    providers = ort.get_available_providers()
    driver = Path("/proc/driver/nvidia/gpus")  # Linux NVIDIA driver: one entry per GPU (no torch import at collection)
    driver_gpus = len(list(driver.iterdir())) if driver.is_dir() else 0
    if "CUDAExecutionProvider" in providers or driver_gpus or _cuda.device_count() > 0:
        return None
    return (f"no CUDA GPU here: onnxruntime offers {providers}, no NVIDIA driver GPU under {driver}, "
            "cuda-python sees no device (install chromaforge[gpu] / [tensorrt] on a GPU machine)")


NO_GPU = no_gpu_reason()
pytestmark = pytest.mark.skipif(NO_GPU is not None, reason=NO_GPU or "")


def model_dir() -> Path | None:
    env = os.environ.get("CHROMAFORGE_GPU_MODEL")
    return Path(env) if env else None


_PIPES: dict = {}


def gpu_pipeline(backend: str, precision: str | None) -> sdk.Pipeline:
    """One pipeline per (backend, precision), created once; skips with the reason when it cannot run."""
    key = (backend, precision)
    if key not in _PIPES:
        ok, why = backends.availability().get(backend, (False, "not registered"))
        if not ok:
            pytest.skip(f"{backend}: {why}")
        try:
            _PIPES[key] = sdk.load(model_dir(), backend=backend, precision=precision)
        except sdk.errors.ChromaforgeError as e:
            pytest.skip(f"{backend} {precision or ''}: {e}")
    return _PIPES[key]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("size", GPU_SIZES)
@pytest.mark.parametrize("backend,precision", PATHS, ids=[f"{b}-{p or 'default'}" for b, p in PATHS])
def test_gpu_colorize(benchmark, backend, precision, size, batch):
    """End to end: decoded uint8 in, uint8 out; one generator call per list of ``batch`` images."""
    pipe = gpu_pipeline(backend, precision)
    imgs = [photo(size, grey=True)] * batch
    info(benchmark, pipe, size, batch=batch, section="gpu", device=_device_name())
    outs = benchmark(pipe.colorize, imgs)
    assert len(outs) == batch


class TorchCudaBackend(Backend):
    """The generator in PyTorch CUDA eager behind the backend contract (benchmark reference only;
    fresh weights: latency does not depend on their values)."""

    def __init__(self, manifest, precision: str) -> None:
        import torch

        from training.model import Generator, GeneratorConfig

        self.torch = torch
        self.name = f"torch-eager-cuda-{precision}"
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = Generator(GeneratorConfig.from_dict(manifest.raw["generator"])).eval().to("cuda", self.dtype)
        self.capabilities = Capabilities(precision=precision, multiple=manifest.size_multiple)

    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        t = self.torch
        with t.inference_mode():
            out = self.model(t.from_numpy(luma).to("cuda", self.dtype), t.from_numpy(style).to("cuda", self.dtype))
        return out.float().cpu().numpy()  # .cpu() synchronises


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("size", GPU_SIZES)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_torch_eager(benchmark, precision, size, batch):
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch with CUDA")
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA GPU (a CPU build?)")
    manifest = sdk.manifest.load_manifest(model_dir() or sdk.manifest.default_model_dir())
    try:
        backend = TorchCudaBackend(manifest, precision)
    except ValueError as e:  # a manifest of an older generator design
        pytest.skip(f"the model's generator config does not build in this training code: {e}")
    imgs = [photo(size, grey=True)] * batch

    def run():
        options = stages.check_options("colorize", stages.Params(), manifest)
        jobs = [stages.prepare(i, options) for i in imgs]
        return [stages.finish(j, o) for j, o in zip(jobs, stages.infer(backend, jobs))]

    info(benchmark, None, size, batch=batch, section="gpu", backend=backend.name, precision=precision,
         torch=torch.__version__, device=_device_name())
    assert len(benchmark(run)) == batch


@pytest.mark.parametrize("batch", BATCHES)
def test_gpu_floor(benchmark, batch):
    """The generator's FLOPs/bytes floor on this GPU (benchmarks/flops.py), recorded in extra_info
    beside the measured cases; the timed call is a no-op. The generator runs at the working
    shape, so the floor is the same for 256² and 1024² inputs (256x256)."""
    pytest.importorskip("onnx", reason="the floor counts the ONNX graph: pip install 'chromaforge[export]'")
    import flops

    name = _device_name()
    manifest = sdk.manifest.load_manifest(model_dir() or sdk.manifest.default_model_dir())
    counts = flops.count(str(manifest.model_path), contract.WORK_SIZE, batch)
    floor = flops.gpu_floor(counts, name)
    if floor is None:
        pytest.skip(f"no datasheet peaks for {name!r} in benchmarks/flops.py GPU_PEAKS")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    info(benchmark, None, "256", batch=batch, section="gpu", case="floor", gflops=counts["gflops"],
         mbytes_fp16=counts["mbytes_fp16"], floor=floor)


def _device_name() -> str:
    try:
        return _cuda.device_info(0).name
    except sdk.errors.ChromaforgeError:
        try:
            import torch

            return torch.cuda.get_device_name(0)
        except Exception:  # no torch or no device: the case itself will say why
            return "unknown"
