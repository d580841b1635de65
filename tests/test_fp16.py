"""`python -m export fp16`: conversion with FP32 I/O, parity in 8-bit levels through the SDK's
stages (ONNX Runtime CPU and the FP16-storage emulation), the manifest artifact, the SDK running it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import sdk
from export.__main__ import main as export_main
from export.fp16 import FP16_NAME, Fp16Config, export_fp16, fp16_storage_emulation, readout_nodes
from export.onnx_export import ExportError, ParityError
from sdk.manifest import load_manifest, sha256_file

from conftest import DATASETS, REPO

pytest.importorskip("onnxconverter_common", reason="python -m export fp16 needs onnxconverter-common (pip install 'chromaforge[export]')")

PHOTOS = DATASETS / "photos" / "val"
DEFAULT_MODEL = REPO / "sdk" / "models" / "default"


@pytest.fixture(scope="module")
def fp16_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model copied to a new folder and given an FP16 ONNX through the CLI (real photos when ../shared has them)."""
    out = tmp_path_factory.mktemp("fp16") / "model"
    photos = ["--photos", str(PHOTOS), "--n-photos", "2"] if PHOTOS.is_dir() else []
    assert export_main(["fp16", "--model-dir", str(tiny_model_dir), "--out", str(out), "--threads", "1", *photos]) == 0
    return out


def test_fp16_artifact_in_manifest(fp16_dir: Path, tiny_model_dir: Path):
    """The FP16 file is listed after the FP32 primary, with its own checksum and its source's."""
    m = load_manifest(fp16_dir)
    assert m.primary.precision == "fp32" and m.sha256 == load_manifest(tiny_model_dir).sha256
    (art,) = m.find("onnx", "fp16")
    assert art.file == FP16_NAME and art.sha256 == sha256_file(fp16_dir / FP16_NAME)
    assert art.source_sha256 == m.sha256 and art.bytes == (fp16_dir / FP16_NAME).stat().st_size
    assert not load_manifest(tiny_model_dir).find("onnx", "fp16")  # the source folder is untouched


def test_fp16_file_has_fp32_io_and_fp16_weights(fp16_dir: Path):
    model = onnx.load(str(fp16_dir / FP16_NAME))
    onnx.checker.check_model(model)
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32, f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    kinds = [t.data_type for t in model.graph.initializer if t.data_type in (f32, onnx.TensorProto.FLOAT16)]
    assert kinds.count(onnx.TensorProto.FLOAT16) > 0.8 * len(kinds)
    nodes = list(_all_nodes(model.graph))  # the colour decoder sits in both branches of the task switch (export/switch.py)
    softmax = [n for n in nodes if n.op_type == "Softmax"]
    assert {n.name.split("_")[0] for n in softmax} == {"natural", "part"}
    types = _value_types(model)  # the read-out runs in FP32: softmax over the bins in and out, the last Conv in FP16
    assert all(types[s.input[0]] == types[s.output[0]] == f32 for s in softmax)
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert all(types[c.output[0]] == onnx.TensorProto.FLOAT16 for c in convs)


def test_readout_nodes_are_the_nodes_after_the_last_convolution(tiny_model_dir: Path):
    """readout_nodes: in every graph and If body, what leads to no Conv (softmax, annealed mean, the
    style path's sigmoid and colour conversion, clamps), never a Conv or what feeds one."""
    model = onnx.load(str(tiny_model_dir / "model.onnx"))
    names = set(readout_nodes(model))
    nodes = {n.name: n for n in _all_nodes(model.graph)}
    assert names and names <= set(nodes)
    assert {nodes[n].op_type for n in names} >= {"Softmax", "MatMul", "Clip", "Sigmoid"}
    assert not any(nodes[n].op_type in ("Conv", "If") for n in names)
    consumers = {}
    for n in nodes.values():
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for n in names:  # closed under consumers: nothing after a read-out node feeds a convolution
        assert all(c.name in names for o in nodes[n].output for c in consumers.get(o, []))


def _value_types(model) -> dict[str, int]:
    """Element type of every tensor of a model, its If bodies included (ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}

    def walk(g):
        types.update({v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]})
        types.update({t.name: t.data_type for t in g.initializer})
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(inferred.graph)
    return types


def _all_nodes(graph):
    """Every node of a graph and of its If/Loop bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def test_fp16_parity_within_tolerance(fp16_dir: Path):
    """Both evaluators report < 0.5 level mean and >= 40 dB in every case, on photos and random images."""
    record = load_manifest(fp16_dir).extra["fp16"]
    assert set(record["parity_levels"]) == {"onnxruntime_cpu", "fp16_storage_emulation"}
    for report in record["parity_levels"].values():
        assert set(report) == {"photos", "random"}
        for r in report.values():
            assert r["mean_levels"] < 0.5 and r["min_psnr_db"] >= 40 and r["cases"] >= 5
            assert 0 <= r["over_4_levels_pct"] < 1 and r["max_levels"] >= 0
    assert record["keep_fp32_ops"] == ["Softmax"] and record["readout_fp32"] is True
    assert record["tolerance"] == {"mean_levels": 0.5, "min_psnr_db": 40.0, "max_levels": None}


def test_the_bundled_model_passes_its_fp16_export(tmp_path: Path):
    """The shipped model (ink read-out, guided filters, chroma gain) converts, loads in ONNX Runtime
    and meets the default tolerance on a real photo in every task (it did not before its read-out
    was kept in FP32 and the tolerance counted PSNR: ink boundaries moved single pixels by ~50 levels)."""
    photos = ["--photos", str(PHOTOS), "--n-photos", "1"] if PHOTOS.is_dir() else []
    out = tmp_path / "default"
    assert export_main(["fp16", "--model-dir", str(DEFAULT_MODEL), "--out", str(out), "--threads", "2", *photos]) == 0
    r = load_manifest(out).extra["fp16"]["parity_levels"]["fp16_storage_emulation"]["photos"]
    assert r["cases"] == 5 and r["mean_levels"] < 0.5 and r["min_psnr_db"] >= 40
    assert not load_manifest(DEFAULT_MODEL).find("onnx", "fp16")  # the bundled folder is untouched


def test_sdk_runs_the_fp16_file(fp16_dir: Path, astronaut):
    """precision='fp16' runs model.fp16.onnx and reports fp16; colours stay within the tolerance of FP32."""
    with sdk.load(fp16_dir, backend="onnxruntime-cpu", threads=1, precision="fp16") as p16, \
            sdk.load(fp16_dir, backend="onnxruntime-cpu", threads=1) as p32:
        assert (p16.precision, p16.runner.artifact.file) == ("fp16", FP16_NAME)
        assert p32.precision == "fp32"
        a = p16.stylize(astronaut[:200, :300], "ukiyoe").astype(int)
        b = p32.stylize(astronaut[:200, :300], "ukiyoe").astype(int)
    assert np.abs(a - b).max() < 4


def test_emulation_keeps_fp16_rounding_between_ops():
    """ONNX Runtime's CPU provider computes FP16 ops in FP32 and keeps the FP32 intermediate
    (1 + 2e-4 - 1 = 2e-4); the emulation rounds it to FP16 as a GPU would (1 + 2e-4 = 1 in FP16)."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    nodes = [h.make_node("Cast", ["x"], ["x16"], to=T.FLOAT16), h.make_node("Add", ["x16", "c"], ["a"], name="add"),
             h.make_node("Sub", ["a", "one"], ["b"], name="sub"), h.make_node("Cast", ["b"], ["y"], to=T.FLOAT)]
    inits = [nh.from_array(np.array([2e-4], np.float16), "c"), nh.from_array(np.array([1.0], np.float16), "one")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1])], [h.make_tensor_value_info("y", T.FLOAT, [1])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    feeds = {"x": np.ones(1, np.float32)}
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    emulated = ort.InferenceSession(fp16_storage_emulation(model).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert plain[0] == pytest.approx(2e-4, rel=1e-2)
    assert emulated[0] == 0.0


def test_tolerance_is_enforced_and_nothing_is_written(fp16_dir: Path, tmp_path: Path):
    """A tolerance the model misses raises ParityError naming the fix; the file and manifest stay as they were."""
    work = tmp_path / "model"
    shutil.copytree(fp16_dir, work)
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    with pytest.raises(ParityError, match="keep more ops in FP32"):
        export_fp16(Fp16Config(model_dir=str(work), out=str(work), max_levels=0.0, threads=1, force=True))
    with pytest.raises(ParityError, match=r"PSNR >= 120 dB"):
        export_fp16(Fp16Config(model_dir=str(work), out=str(work), min_psnr=120.0, threads=1, force=True))
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before  # no temporary folder left either


def test_existing_fp16_needs_force(fp16_dir: Path, capsys):
    """Rebuilding in place without --force is refused with exit status 1 and a hint."""
    assert export_main(["fp16", "--model-dir", str(fp16_dir), "--out", str(fp16_dir)]) == 1
    assert "--force" in capsys.readouterr().err
    with pytest.raises(ExportError, match="not a folder"):
        export_fp16(Fp16Config(model_dir=str(fp16_dir), out=str(fp16_dir), photos="/nonexistent", force=True))
