"""The model contract: manifest.json written and read by sdk.manifest only (round trip, artifacts,
older manifests), and sdk.contract (one definition of the colour matrices, standard library only)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdk import contract
from sdk.errors import ModelCorruptError
from sdk.manifest import Artifact, Manifest, ShapeProfile, default_model_dir, load_manifest, sha256_file, write_manifest


def make_manifest(directory: Path) -> Manifest:
    """A manifest with the three kinds of artifact: FP32 ONNX (primary), FP16 ONNX, TensorRT engine."""
    files = {"model.onnx": b"fp32 graph", "model.fp16.onnx": b"fp16 graph", "engines/h100.plan": b"engine"}
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    art = {n: dict(file=n, sha256=sha256_file(directory / n), bytes=len(d)) for n, d in files.items()}
    return Manifest(
        styles=contract.STYLES, work_size=256, size_multiple=32,
        input_names=contract.INPUT_NAMES, output_names=contract.OUTPUT_NAMES,
        artifacts=(
            Artifact(format="onnx", precision="fp32", opset=17, **art["model.onnx"]),
            Artifact(format="onnx", precision="fp16", opset=17, **art["model.fp16.onnx"]),
            Artifact(format="tensorrt", precision="fp16", gpu="NVIDIA H100 80GB HBM3", tensorrt="10.4.0",
                     profiles=(ShapeProfile((1, 1, 32, 32), (8, 1, 256, 256), (16, 1, 256, 256)),),
                     **art["engines/h100.plan"]),
        ),
        directory=directory, name="round-trip",
        extra={"licence": {"encoder": "Apache-2.0"}, "parity": {"max_abs": 1e-7}, "generator": {"widths": (8, 8)}},
    )


def test_manifest_round_trip_with_artifacts(tmp_path):
    """write_manifest -> load_manifest gives an equal Manifest, artifacts and extra fields included."""
    m = make_manifest(tmp_path)
    write_manifest(m)
    back = load_manifest(tmp_path)
    assert back == m
    assert back.artifacts[2].profiles[0].max == (16, 1, 256, 256) and back.artifacts[2].gpu.startswith("NVIDIA")
    assert (back.model_file, back.precision, back.sha256) == ("model.onnx", "fp32", m.artifacts[0].sha256)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["licence"] == {"encoder": "Apache-2.0"} and raw["generator"] == {"widths": [8, 8]}
    assert raw["model_file"] == "model.onnx" and raw["precision"] == "fp32"  # what older SDKs read
    assert not list(tmp_path.glob(".*.tmp"))


def test_exported_manifest_round_trips(tiny_model_dir, tmp_path):
    """The export's manifest, read and written again elsewhere, reads back equal and byte-identical."""
    m = load_manifest(tiny_model_dir)
    assert [a.file for a in m.artifacts] == ["model.onnx"] and m.artifacts[0].opset == 17
    assert "licence" in m.extra and "parity" in m.extra
    shutil.copy(tiny_model_dir / "model.onnx", tmp_path / "model.onnx")
    write_manifest(dataclasses.replace(m, directory=tmp_path))
    assert load_manifest(tmp_path) == dataclasses.replace(m, directory=tmp_path)
    assert (tmp_path / "manifest.json").read_text() == (tiny_model_dir / "manifest.json").read_text()


def test_manifest_without_artifact_list_reads_as_one_artifact():
    """The bundled model's manifest (written before the artifact list) has one artifact from its top level."""
    m = load_manifest(default_model_dir())
    assert len(m.artifacts) == 1
    assert (m.primary.file, m.primary.format, m.primary.precision, m.primary.sha256) == (m.model_file, "onnx", "fp32", m.sha256)


def test_top_level_and_first_artifact_must_agree(tmp_path):
    m = make_manifest(tmp_path)
    write_manifest(m)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    raw["artifacts"][0]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelCorruptError, match="disagree"):
        load_manifest(tmp_path)


def test_manifest_needs_an_artifact_and_json_extras(tmp_path):
    m = make_manifest(tmp_path)
    with pytest.raises(ModelCorruptError, match="no model artifacts"):
        dataclasses.replace(m, artifacts=())
    with pytest.raises(ModelCorruptError, match="styles"):
        dataclasses.replace(m, extra={"styles": []})
    with pytest.raises(TypeError):
        dataclasses.replace(m, extra={"created": object()})


# ----------------------------------------------------------------------------------- contract
def test_colour_matrices_have_one_definition():
    """Both matrices derive from the BT.601 luma weights, equal the published values and invert each other."""
    assert contract.RGB_TO_YCBCR[0] == contract.LUMA_WEIGHTS
    assert contract.RGB_TO_YCBCR[1] == (-0.168735892, -0.331264108, 0.5)
    assert contract.YCBCR_TO_RGB == ((1.0, 0.0, 1.402), (1.0, -0.344136286, -0.714136286), (1.0, 1.772, 0.0))
    assert np.abs(np.asarray(contract.RGB_TO_YCBCR) @ np.asarray(contract.YCBCR_TO_RGB) - np.eye(3)).max() < 1e-8


def test_importing_the_contract_needs_only_the_standard_library(tmp_path):
    """`import sdk.contract` (what training does) loads no numpy, Pillow or onnxruntime."""
    code = ("import sys, json\nimport sdk.contract\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'PIL', 'onnxruntime'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


def test_artifact_lookup_replace_and_verify(tmp_path):
    """find() filters by format and precision; with_artifact() replaces by file or appends, never the
    primary; verify_artifact() checks existence and checksum; engine fields round-trip."""
    from sdk.errors import ModelNotFoundError
    from sdk.manifest import verify_artifact

    m = make_manifest(tmp_path)
    assert [a.file for a in m.find("onnx")] == ["model.onnx", "model.fp16.onnx"]
    assert [a.file for a in m.find("onnx", "fp16")] == ["model.fp16.onnx"] and m.find("tensorrt", "fp32") == ()
    engine = dataclasses.replace(m.artifacts[2], compute_capability="9.0", source_sha256=m.artifacts[1].sha256)
    m2 = m.with_artifact(engine)
    assert m2.artifacts[:2] == m.artifacts[:2] and m2.artifacts[2] == engine and len(m2.artifacts) == 3
    write_manifest(m2)
    assert load_manifest(tmp_path).artifacts[2].compute_capability == "9.0"
    with pytest.raises(ModelCorruptError, match="primary"):
        m.with_artifact(dataclasses.replace(m.primary, precision="fp16"))
    assert verify_artifact(m, m.artifacts[1]) == tmp_path / "model.fp16.onnx"
    (tmp_path / "model.fp16.onnx").write_bytes(b"tampered!!")  # the same size: the sha256 tells
    with pytest.raises(ModelCorruptError, match="sha256"):
        verify_artifact(m, m.artifacts[1])
    (tmp_path / "model.fp16.onnx").write_bytes(b"tampered")  # another size: refused before hashing
    with pytest.raises(ModelCorruptError, match="is 8 bytes, the manifest expects 10"):
        verify_artifact(m, m.artifacts[1])
    (tmp_path / "model.fp16.onnx").unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        verify_artifact(m, m.artifacts[1])


def test_onnx_artifact_is_the_one_lookup_of_an_onnx_file_by_precision(tmp_path):
    """Manifest.onnx_artifact (used by the ONNX Runtime backends, the TensorRT engine build and the
    Triton repository): the primary for None, the FP16 file for "fp16", else the caller's error
    naming the command that makes the file."""
    from sdk.errors import BackendUnavailableError, ModelNotFoundError

    m = make_manifest(tmp_path)
    assert m.onnx_artifact() == m.onnx_artifact("fp32") == m.primary
    assert m.onnx_artifact("fp16").file == "model.fp16.onnx"
    bare = dataclasses.replace(m, artifacts=m.artifacts[:1])
    with pytest.raises(ModelNotFoundError, match=r"has no fp16 ONNX file \(its ONNX files: \['fp32'\]\); make one with `python -m export fp16"):
        bare.onnx_artifact("fp16")
    with pytest.raises(BackendUnavailableError, match="python -m export fp16"):
        bare.onnx_artifact("fp16", error=BackendUnavailableError)
