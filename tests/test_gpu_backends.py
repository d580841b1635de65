"""The GPU half without a GPU: shape profiles and what they declare, the native TensorRT backend's
engine choice, compatibility checks and buffer plan, its typed errors when TensorRT or a GPU is
missing, ONNX Runtime's I/O-binding path (run on the CPU provider) and TensorRT-provider options.

What needs real TensorRT or a GPU (deserialising and running an engine, CUDA buffers) is not run
here; README "GPU" lists it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sdk
from sdk import backends, resample, stages
from sdk.backends import Capabilities, profiles
from sdk.backends._cuda import DeviceInfo
from sdk.backends.onnxruntime import ORTBackend, provider_options
from sdk.backends.tensorrt import TensorRTBackend, available, engine_mismatch, plan_buffers, select_engine
from sdk.errors import BackendUnavailableError, EngineMismatchError, InvalidArgumentError
from sdk.manifest import ShapeProfile

from test_manifest import make_manifest

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", "9.0")
HAVE_TRT = available()[0]


# ------------------------------------------------------------------------------------ profiles
def test_working_shapes_cover_what_the_pipeline_makes():
    """Every work_shape of any input size is one of working_shapes(256, 32): 15 shapes."""
    shapes = profiles.working_shapes(256, 32)
    assert len(shapes) == 15 and shapes[0] == (256, 256)
    rng = np.random.default_rng(0)
    for h, w in rng.integers(1, 5000, size=(300, 2)):
        assert resample.work_shape(int(h), int(w), 256, 32) in shapes


def test_dynamic_profile_declares_a_range():
    p = profiles.dynamic_profile(256, 32, 8)
    assert p == ShapeProfile((1, 1, 32, 32), (8, 1, 256, 256), (8, 1, 256, 256))
    caps = profiles.capabilities([p], "float16", "fp16", multiple=32)
    assert (caps.max_batch, caps.min_shape, caps.max_shape, caps.multiple, caps.buckets) == (8, (32, 32), (256, 256), 32, ())
    assert caps.input_dtype == "float16" and caps.precision == "fp16"
    assert profiles.check_coverage([p], 256, 32) == []


def test_buckets_declare_buckets_and_must_cover():
    five = profiles.bucket_profiles([(256, 256), (160, 256), (256, 160), (192, 256), (256, 192)], 4)
    caps = profiles.capabilities(five, multiple=32)
    assert caps.max_batch == 4 and caps.run_shape((96, 256)) == (160, 256) and len(caps.buckets) == 5
    assert profiles.check_coverage(five, 256, 32) == []
    assert profiles.check_coverage(profiles.bucket_profiles([(192, 256)]), 256, 32)[:2] == [(256, 256), (224, 256)]
    assert profiles.profile_index(five, 3, (256, 160)) == 2
    with pytest.raises(InvalidArgumentError, match="no engine profile"):
        profiles.profile_index(five, 5, (256, 160))


def test_mixed_or_bad_profiles_are_refused():
    with pytest.raises(InvalidArgumentError, match="one dynamic profile"):
        profiles.capabilities([profiles.dynamic_profile(256, 32), *profiles.bucket_profiles([(256, 256)])])
    with pytest.raises(InvalidArgumentError, match="batch 2"):
        profiles.capabilities([ShapeProfile((2, 1, 32, 32), (8, 1, 256, 256), (8, 1, 256, 256))])
    with pytest.raises(InvalidArgumentError, match="HxW"):
        profiles.parse_shapes("256by256")
    assert profiles.parse_shapes(" 256x256, 160X256 ") == ((256, 256), (160, 256))


def test_padding_overhead_of_buckets():
    """The figure behind the dynamic default: three buckets pad 4:3/3:2 shapes, a range pads nothing."""
    shapes = [(160, 256)] * 2 + [(192, 256)]
    three = Capabilities(buckets=((256, 256), (192, 256), (256, 192)))
    assert profiles.padding_overhead(shapes, three) == pytest.approx((2 * 192 + 192) / (2 * 160 + 192) - 1)
    assert profiles.padding_overhead(shapes, profiles.capabilities([profiles.dynamic_profile(256, 32)], multiple=32)) == 0


def test_ort_tensorrt_profile_options(tiny_pipeline, tmp_path, monkeypatch):
    """The TensorRT provider gets one explicit profile for every dynamic input, caches under the
    user's cache dir, and the backend would declare that profile's limits."""
    monkeypatch.setenv("CHROMAFORGE_CACHE", str(tmp_path))
    m = tiny_pipeline.manifest
    opts = provider_options("TensorrtExecutionProvider", m)
    assert opts["trt_profile_min_shapes"] == "luma:1x1x32x32,style:1x5"
    assert opts["trt_profile_max_shapes"] == "luma:8x1x256x256,style:8x5"
    assert Path(opts["trt_engine_cache_path"]).parent.parent == tmp_path and Path(opts["trt_timing_cache_path"]).is_dir()
    assert opts["trt_fp16_enable"] is True and opts["trt_timing_cache_enable"] is True
    assert profiles.parse_ort_profile(opts["trt_profile_max_shapes"], "luma") == (8, 1, 256, 256)
    assert provider_options("CUDAExecutionProvider", m) == {}


# ------------------------------------------------------------------------------------ ONNX Runtime
def test_io_binding_path_equals_plain_run(tiny_model_dir, tiny_pipeline):
    """The I/O-binding path GPU providers use (buffers per shape, reused), run on the CPU provider:
    same outputs as session.run, and results of earlier calls are not overwritten."""
    m = tiny_pipeline.manifest
    with ORTBackend(m, "CPUExecutionProvider", threads=1, io_binding=True) as bound:
        rng = np.random.default_rng(1)
        x1, x2 = rng.random((2, 2, 1, 64, 96), dtype=np.float32)
        s = np.eye(5, dtype=np.float32)[[0, 3]]
        y1, y2, y1b = bound.run(x1, s), bound.run(x2, s), bound.run(x1, s)
        assert len(bound._bound) == 1  # one buffer set for the one shape
        np.testing.assert_array_equal(y1, tiny_pipeline.runner.run(x1, s))
        np.testing.assert_array_equal(y2, tiny_pipeline.runner.run(x2, s))
        np.testing.assert_array_equal(y1, y1b)
        bound.run(rng.random((1, 1, 32, 32), dtype=np.float32), s[:1])
        assert len(bound._bound) == 2


def test_precision_picks_the_onnx_file(tiny_model_dir):
    """precision='fp16' without an FP16 file is refused with the command that makes one; bad values are refused."""
    with pytest.raises(BackendUnavailableError, match="python -m export fp16"):
        sdk.load(tiny_model_dir, backend="onnxruntime-cpu", precision="fp16")
    with pytest.raises(InvalidArgumentError, match="precision"):
        sdk.load(tiny_model_dir, backend="onnxruntime-cpu", precision="int8")
    with sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1, precision="fp32") as p:
        assert p.precision == "fp32"


# ------------------------------------------------------------------------------------ native TensorRT
def test_engine_selection_and_mismatch_messages(tmp_path):
    """The engine built for this GPU and TensorRT version is chosen; anything else is refused with
    a typed error that says what it was built for and how to rebuild."""
    m = make_manifest(tmp_path)
    engine = dataclasses.replace(m.artifacts[2], compute_capability="9.0", tensorrt="10.4.0")
    m = m.with_artifact(engine)
    assert select_engine(m, H100, "10.4.0") == engine
    assert select_engine(m, H100, "10.4.0", precision="fp16") == engine
    assert engine_mismatch(engine, H100, "10.4.0") is None
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.4\.0, this is 10\.8\.0.*python -m export trt"):
        select_engine(m, H100, "10.8.0")
    with pytest.raises(EngineMismatchError, match="compute capability 9.0.*this GPU is 8.9"):
        select_engine(m, DeviceInfo("NVIDIA L4", "8.9"), "10.4.0")
    with pytest.raises(EngineMismatchError, match="built on NVIDIA H100 80GB HBM3, this GPU is NVIDIA H100 PCIe"):
        select_engine(m, DeviceInfo("NVIDIA H100 PCIe", "9.0"), "10.4.0")
    assert issubclass(EngineMismatchError, BackendUnavailableError)  # auto moves on to the next backend
    with pytest.raises(BackendUnavailableError, match="no fp32 TensorRT engine"):
        select_engine(m, H100, "10.4.0", precision="fp32")


def test_buffer_plan_fits_the_largest_profile_shape():
    dyn = profiles.dynamic_profile(256, 32, 8)
    dtypes = {"luma": np.dtype(np.float16), "style": np.dtype(np.float16), "ycbcr": np.dtype(np.float32)}
    plan = plan_buffers([dyn], 5, dtypes, ("luma", "style", "ycbcr"))
    assert plan == {"luma": 8 * 256 * 256 * 2, "style": 8 * 5 * 2, "ycbcr": 8 * 3 * 256 * 256 * 4}
    buckets = profiles.bucket_profiles([(256, 160), (192, 256)], 4)
    plan = plan_buffers(buckets, 5, {k: np.dtype(np.float32) for k in dtypes}, ("luma", "style", "ycbcr"))
    assert plan["luma"] == 4 * 192 * 256 * 4 and plan["ycbcr"] == 3 * plan["luma"]


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT and a GPU are present: the backend can be created")
def test_tensorrt_backend_unavailable_here(tiny_model_dir):
    """Without tensorrt / cuda-python / a GPU: reported unavailable with the pip extra, refused when
    requested, skipped by auto; creating the class directly raises the same typed error."""
    ok, why = backends.availability()["tensorrt"]
    assert ok is False and "chromaforge[tensorrt]" in why
    with pytest.raises(BackendUnavailableError, match=r"chromaforge\[tensorrt\]"):
        sdk.load(tiny_model_dir, backend="tensorrt")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        TensorRTBackend(sdk.manifest.load_manifest(tiny_model_dir))
    with sdk.load(tiny_model_dir, threads=1) as p:
        assert "skipped tensorrt" in p.backend_reason


def test_stages_adapt_to_engine_capabilities(tiny_pipeline):
    """A backend declaring an engine's bucket capabilities gets only bucket shapes and batches <= max;
    the results equal the unconstrained CPU backend's (the contract a TensorRT backend relies on)."""

    class Declared(backends.Backend):
        name = "declared"

        def __init__(self, inner, caps):
            self.inner, self.capabilities, self.seen = inner, caps, []

        def run(self, luma, style):
            self.seen.append(luma.shape)
            return self.inner.run(luma, style)

    caps = profiles.capabilities(profiles.bucket_profiles([(256, 256), (160, 256), (256, 160)], 2), multiple=32)
    b = Declared(tiny_pipeline.runner, caps)
    imgs = [np.full((100, 160), 90, np.uint8), np.full((160, 100), 30, np.uint8), np.full((40, 40), 200, np.uint8)] * 2
    options = stages.check_options("colorize", stages.Params(), tiny_pipeline.manifest)
    jobs = [stages.prepare(i, options) for i in imgs]
    got = stages.infer(b, jobs)
    ref = stages.infer(tiny_pipeline.runner, jobs)
    assert {s[2:] for s in b.seen} <= {(256, 256), (160, 256), (256, 160)} and max(s[0] for s in b.seen) <= 2
    for g, r in zip(got, ref):
        assert g.shape == r.shape


def test_sdk_import_still_has_no_torch_nor_tensorrt(tmp_path):
    """import sdk + the backend registry load no torch, tensorrt or cuda-python."""
    code = ("import sys, sdk; from sdk import backends; backends.names(); backends.availability(); "
            "bad = [m for m in ('torch', 'tensorrt', 'cuda', 'tritonclient', 'onnxconverter_common') if m in sys.modules]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
