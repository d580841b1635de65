"""Latency suites: end to end (decoded uint8 array in, array out, through the Pipeline), batches,
the three stages of colorize separately, and the same generator in PyTorch eager for reference.

Cases marked ``gate`` form the short CI pass that ``benchmarks/gate.py`` checks against
``benchmarks/baseline.json``, normalised by the calibration workload timed in the same run.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import calibration
from conftest import SIZES, info, photo, threads
from sdk import colour, contract, resample
from sdk.fusion import FUSE_METHODS
from sdk.images import decode

GATED = {("colorize", "1024"), ("colorize", "4096x3072"), ("stylize", "512"), ("fuse-laplacian", "512")}


def sized(op: str, sizes=SIZES):
    """Size parameters, with the gated ones marked."""
    return [pytest.param(s, marks=pytest.mark.gate) if (op, s) in GATED else s for s in sizes]


@pytest.mark.gate
def test_calibration(benchmark):
    """The machine-speed yardstick the gate normalises by (see calibration.py)."""
    info(benchmark, None, "-", workload="calibration")
    benchmark(calibration.workload)


# ---------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("size", sized("colorize"))
def test_colorize(benchmark, pipeline, size):
    img = photo(size, grey=True)
    info(benchmark, pipeline, size)
    out = benchmark(pipeline.colorize, img)
    assert out.shape == img.shape + (3,)


@pytest.mark.parametrize("size", sized("stylize"))
def test_stylize(benchmark, pipeline, size):
    img = photo(size, grey=False)
    info(benchmark, pipeline, size, style="ukiyoe")
    out = benchmark(pipeline.stylize, img, "ukiyoe")
    assert out.shape == img.shape


FUSE_CASES = [
    pytest.param(m, s, marks=pytest.mark.gate) if ("fuse-" + m, s) in GATED else (m, s)
    for m in FUSE_METHODS for s in SIZES
]


@pytest.mark.parametrize("method,size", FUSE_CASES)
def test_fuse(benchmark, cpu_pipeline, method, size):
    img = photo(size, grey=False)
    sty = np.ascontiguousarray(img[:, ::-1])  # any second image of the same size; fusion needs no model
    info(benchmark, None, size, method=method, workers=cpu_pipeline.workers)
    out = benchmark(cpu_pipeline.fuse, img, sty, method=method)
    assert out.shape == img.shape


# ---------------------------------------------------------------------------- batches
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("op", ["colorize", "stylize"])
def test_batch_256(benchmark, pipeline, op, batch):
    """A list of equal-sized images shares one generator call; time per call, not per image."""
    imgs = [photo("256", grey=op == "colorize")] * batch
    info(benchmark, pipeline, "256", batch=batch, op=op)
    outs = benchmark(getattr(pipeline, op), imgs)
    assert len(outs) == batch


# ---------------------------------------------------------------------------- colorize stages
@pytest.mark.parametrize("size", list(SIZES))
def test_stage_pre(benchmark, cpu_pipeline, size):
    """Decode + antialiased resize of the luminance to the working shape."""
    img = photo(size, grey=True)
    shape = resample.work_shape(*img.shape, contract.WORK_SIZE, contract.SIZE_MULTIPLE)
    info(benchmark, cpu_pipeline, size, stage="pre", work_shape=list(shape))
    benchmark(lambda: resample.resize_luma(decode(img).luma, shape))


@pytest.mark.parametrize("size", list(SIZES))
def test_stage_infer(benchmark, pipeline, size):
    """The generator alone at the working shape this input size maps to."""
    h, w = resample.work_shape(*SIZES[size], contract.WORK_SIZE, contract.SIZE_MULTIPLE)
    luma = np.random.default_rng(0).random((1, 1, h, w), dtype=np.float32)
    style = pipeline.style_vector(contract.NATURAL)[None]
    info(benchmark, pipeline, size, stage="infer", work_shape=[h, w])
    benchmark(pipeline.runner.run, luma, style)


@pytest.mark.parametrize("size", list(SIZES))
def test_stage_post(benchmark, cpu_pipeline, size):
    """Chroma upsampling + gamut-preserving YCbCr -> RGB at full resolution."""
    img = photo(size, grey=True)
    h, w = resample.work_shape(*img.shape, contract.WORK_SIZE, contract.SIZE_MULTIPLE)
    cbcr = (np.random.default_rng(0).random((2, h, w), dtype=np.float32) - 0.5) * 0.4
    info(benchmark, cpu_pipeline, size, stage="post", workers=cpu_pipeline.workers)
    benchmark(colour.colour_onto_luma, img, cbcr, cpu_pipeline.workers)


# ---------------------------------------------------------------------------- PyTorch eager reference
@pytest.fixture(scope="session")
def torch_generator(cpu_pipeline):
    """The bundled model's architecture (from its manifest) in PyTorch eager, eval mode.

    Weights are freshly initialised: the ONNX file does not carry PyTorch names, and latency does
    not depend on the values. Needs the ``train`` extra.
    """
    torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (pip install 'chromaforge[train]')")
    from training.model import Generator, GeneratorConfig

    cfg = GeneratorConfig.from_dict(cpu_pipeline.manifest.raw["generator"])
    torch.set_num_threads(threads() or getattr(cpu_pipeline.runner, "threads", 2))
    return torch, Generator(cfg).eval()


def _torch_devices() -> list:
    """cpu, plus cuda (fp32 and fp16) when PyTorch sees a GPU."""
    try:
        import torch
    except ImportError:
        return ["cpu-fp32"]
    return ["cpu-fp32"] + (["cuda-fp32", "cuda-fp16"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _torch_devices())
@pytest.mark.parametrize("batch", [1, 8])
def test_generator_torch_eager_256(benchmark, torch_generator, batch, device):
    torch, gen = torch_generator
    dev, precision = device.split("-")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = gen.to(dev, dtype)
    luma = torch.rand(batch, 1, 256, 256, device=dev, dtype=dtype)
    style = torch.zeros(batch, len(contract.STYLES), device=dev, dtype=dtype)
    style[:, 0] = 1
    info(benchmark, None, "256", batch=batch, backend=f"torch-eager-{dev}", precision=precision,
         threads=torch.get_num_threads(), torch=torch.__version__)

    def run():
        with torch.inference_mode():
            out = model(luma, style)
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark(run)
    gen.to("cpu", torch.float32)


@pytest.mark.parametrize("batch", [1, 8])
def test_generator_onnx_256(benchmark, pipeline, batch):
    luma = np.random.default_rng(0).random((batch, 1, 256, 256), dtype=np.float32)
    style = np.repeat(pipeline.style_vector(contract.NATURAL)[None], batch, axis=0)
    info(benchmark, pipeline, "256", batch=batch)
    benchmark(pipeline.runner.run, luma, style)


# ---------------------------------------------------------------------------- cold start and memory
COLD = """
import time
t0 = time.perf_counter()
import numpy as np
import sdk
img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(sdk.example_image()).convert("L").resize((512, 512)))
t1 = time.perf_counter()
sdk.colorize(img)
t2 = time.perf_counter()
print(t2 - t0, t1 - t0)
"""


def test_cold_start_512(benchmark):
    """Fresh interpreter: ``import sdk`` + first colorize of 512x512 (model load and session
    creation included). Timed as the whole subprocess, interpreter start-up included."""
    import subprocess
    import sys

    inner = []

    def run():
        out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True)
        inner.append([float(v) for v in out.stdout.split()])

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    totals = sorted(v[0] for v in inner)
    info(benchmark, None, "512", case="cold start", in_process_median_s=totals[len(totals) // 2],
         import_and_decode_median_s=sorted(v[1] for v in inner)[len(inner) // 2])


def _vm(field: str) -> float:
    """A /proc/self/status memory field in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak-RSS reset (/proc/self/clear_refs) is Linux only")
def test_colorize_peak_memory_4096x3072(benchmark, cpu_pipeline):
    """Peak resident memory above the idle process while colorizing 12.6 MP (recorded in extra_info)."""
    img = photo("4096x3072", grey=True)
    cpu_pipeline.colorize(img)
    peaks = []

    def run():
        idle = _vm("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
        out = cpu_pipeline.colorize(img)
        peaks.append(_vm("VmHWM") - idle)
        return out

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=0)
    info(benchmark, cpu_pipeline, "4096x3072", peak_mb_above_idle=max(peaks), peak_mb_above_idle_median=sorted(peaks)[2])
