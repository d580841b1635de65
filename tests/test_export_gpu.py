"""`python -m export trt` and `python -m export triton` without a GPU: the typed error and exit
status 2 when TensorRT is missing, the engine's profiles, file name, sidecar and manifest entry,
and a Triton repository validated with Triton's own model-config protobuf."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from export.__main__ import main as export_main
from export.onnx_export import ExportError
from export.trt_engine import (TrtConfig, default_timing_cache, engine_artifact, engine_filename, plan_profiles, sidecar,
                               slug, source_onnx, with_shapes)
from export.triton import TritonConfig, config_pbtxt, write_repository
from sdk.backends import profiles
from sdk.backends._cuda import DeviceInfo
from sdk.backends.tensorrt import available, select_engine
from sdk.manifest import load_manifest, sha256_file, write_manifest

H100 = DeviceInfo("NVIDIA H100 80GB HBM3", "9.0")
REPO = Path(__file__).resolve().parents[1]


def fake_engine(model_dir: Path, precision: str = "fp32", max_batch: int = 8) -> tuple[Path, dict]:
    """An engine entry as `python -m export trt` writes it, around placeholder bytes (no TensorRT here)."""
    m = load_manifest(model_dir)
    cfg = TrtConfig(model_dir=str(model_dir), out=str(model_dir), max_batch=max_batch)
    plan = model_dir / engine_filename(precision, H100, "10.4.0")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(b"serialized engine bytes, as TensorRT wrote them")
    art = engine_artifact(m, plan, precision, H100, "10.4.0", plan_profiles(cfg, m), m.primary)
    car = sidecar(art, m.primary, cfg, Path("/cache/timing.cache"))
    plan.with_name(plan.name + ".json").write_text(json.dumps(car))
    write_manifest(m.with_artifact(art))
    return plan, car


# ------------------------------------------------------------------------------------ trt
@pytest.mark.skipif(available()[0], reason="TensorRT and a GPU are present here")
def test_trt_without_tensorrt_exits_2_with_the_extra(tiny_model_dir, tmp_path):
    """No traceback: one error line naming the pip extra, exit status 2, nothing written."""
    out = subprocess.run([sys.executable, "-m", "export", "trt", "--model-dir", str(tiny_model_dir), "--out", str(tmp_path / "e"), "--fp16"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "chromaforge[tensorrt]" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "e").exists()


def test_engine_profiles_cover_the_working_shapes(model_copy):
    m = load_manifest(model_copy)
    cfg = TrtConfig(model_dir=str(model_copy), out=str(model_copy))
    assert plan_profiles(cfg, m) == (profiles.dynamic_profile(m.work_size, m.size_multiple, 8),)
    five = with_shapes(cfg, "256x256,160x256,256x160,192x256,256x192")
    assert len(plan_profiles(five, m)) == 5
    with pytest.raises(ExportError, match=r"\(256, 256\).*uncovered"):
        plan_profiles(with_shapes(cfg, "192x256,256x192"), m)
    with pytest.raises(ExportError, match="multiples of the model's size_multiple 32"):
        plan_profiles(with_shapes(cfg, "250x256"), m)
    with pytest.raises(ExportError, match="HxW"):
        with_shapes(cfg, "big")
    assert with_shapes(five, "dynamic").shapes == ()


def test_engine_file_name_sidecar_and_manifest_entry(model_copy):
    """The engine lies in engines/ named by precision, GPU, compute capability and TensorRT version;
    its sidecar and manifest entry carry the facts the SDK matches; its bytes are untouched."""
    assert slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
    plan, car = fake_engine(model_copy)
    assert plan.name == "model.fp32.h100-80gb-hbm3.sm90.trt10.4.0.plan"
    assert plan.read_bytes() == b"serialized engine bytes, as TensorRT wrote them"
    m = load_manifest(model_copy)
    (art,) = m.find("tensorrt")
    assert (art.gpu, art.compute_capability, art.tensorrt, art.precision) == (H100.name, "9.0", "10.4.0", "fp32")
    assert art.sha256 == sha256_file(plan) == car["sha256"] and art.source_sha256 == m.sha256 == car["source"]["sha256"]
    assert car["profiles"] == [{"input": "luma", "min": [1, 1, 32, 32], "opt": [8, 1, 256, 256], "max": [8, 1, 256, 256]}]
    assert car["build"]["strongly_typed"] is True and car["compute_capability"] == "9.0"
    assert select_engine(m, H100, "10.4.0") == art  # what the tensorrt backend would load on that GPU


def test_fp16_engine_needs_the_fp16_onnx(model_copy, tmp_path, monkeypatch):
    m = load_manifest(model_copy)
    with pytest.raises(ExportError, match="python -m export fp16"):
        source_onnx(m, fp16=True)
    assert source_onnx(m, fp16=False) == m.primary
    monkeypatch.setenv("CHROMAFORGE_CACHE", str(tmp_path))
    assert default_timing_cache() == tmp_path / "trt" / "timing.cache"


# ------------------------------------------------------------------------------------ triton
def parse_text(text: str):
    """config.pbtxt text through Triton's own ModelConfig protobuf (tritonclient)."""
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (pip install 'chromaforge[triton]')")
    from google.protobuf import text_format

    return pb, text_format.Parse(text, pb.ModelConfig())


def parse(path: Path):
    return parse_text(path.read_text())


def test_triton_repository_validates(model_copy, tmp_path):
    plan, car = fake_engine(model_copy)
    repo = tmp_path / "repo"
    assert export_main(["triton", "--model-dir", str(model_copy), "--out", str(repo), "--max-batch", "4", "--instances", "2",
                        "--engine", str(plan)]) == 0
    pb, onnx_cfg = parse(repo / "chromaforge_onnx" / "config.pbtxt")
    assert onnx_cfg.name == "chromaforge_onnx" and onnx_cfg.platform == "onnxruntime_onnx" and onnx_cfg.max_batch_size == 4
    assert [(i.name, i.data_type, list(i.dims)) for i in onnx_cfg.input] == [
        ("luma", pb.TYPE_FP32, [1, -1, -1]), ("style", pb.TYPE_FP32, [5])]
    assert [(o.name, list(o.dims)) for o in onnx_cfg.output] == [("ycbcr", [3, -1, -1])]
    assert onnx_cfg.HasField("dynamic_batching") and onnx_cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in onnx_cfg.instance_group] == [(2, pb.ModelInstanceGroup.KIND_GPU)]
    assert sha256_file(repo / "chromaforge_onnx" / "1" / "model.onnx") == load_manifest(model_copy).sha256
    assert (repo / "chromaforge_onnx" / "NOTICE.txt").is_file()
    _, trt_cfg = parse(repo / "chromaforge_trt" / "config.pbtxt")
    assert trt_cfg.platform == "tensorrt_plan" and trt_cfg.default_model_filename == "model.plan"
    assert (repo / "chromaforge_trt" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    # existing model folders need --force
    assert export_main(["triton", "--model-dir", str(model_copy), "--out", str(repo)]) == 1
    assert export_main(["triton", "--model-dir", str(model_copy), "--out", str(repo), "--force", "--kind", "cpu"]) == 0
    assert parse(repo / "chromaforge_onnx" / "config.pbtxt")[1].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_triton_refuses_an_engine_that_does_not_fit(model_copy, tmp_path):
    plan, _ = fake_engine(model_copy, max_batch=2)
    cfg = TritonConfig(model_dir=str(model_copy), out=str(tmp_path / "r"), engine=str(plan), max_batch=8)
    with pytest.raises(ExportError, match="batch up to 2"):
        write_repository(cfg)
    plan.write_bytes(b"other bytes")
    with pytest.raises(ExportError, match="does not match the sha256"):
        write_repository(TritonConfig(model_dir=str(model_copy), out=str(tmp_path / "r"), engine=str(plan), max_batch=2))
    plan.with_name(plan.name + ".json").unlink()
    with pytest.raises(ExportError, match="no sidecar"):
        write_repository(TritonConfig(model_dir=str(model_copy), out=str(tmp_path / "r"), engine=str(plan), max_batch=2))
    with pytest.raises(ExportError, match="no fp16 ONNX"):
        write_repository(TritonConfig(model_dir=str(model_copy), out=str(tmp_path / "r"), precision="fp16"))


def test_config_text_without_a_model(tiny_pipeline):
    text = config_pbtxt("m", "onnxruntime_onnx", tiny_pipeline.manifest, 8, 1, "gpu")
    _, cfg = parse_text(text)
    assert cfg.max_batch_size == 8 and not cfg.default_model_filename

