"""export.from_onnx: a training checkpoint read back from an exported graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from conftest import REPO, edit_manifest, make_checkpoint
from export.onnx_export import ExportConfig, export_onnx
from sdk.manifest import sha256_file
from training.model import Generator, GeneratorConfig
from export.from_onnx import RecoverConfig, RecoveryError, recover


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["G_ema"]


def test_recovers_every_parameter_exactly(tiny_model_dir: Path, tiny_checkpoint: Path, tmp_path: Path):
    out = recover(RecoverConfig(model_dir=str(tiny_model_dir), out=str(tmp_path / "r.pt")))
    got, want = _weights(out), _weights(tiny_checkpoint)
    assert set(got) == set(want)
    for name, value in want.items():
        assert torch.equal(got[name], value), name
    ck = torch.load(out, map_location="cpu", weights_only=False)
    assert ck["recovered_from"]["parity"]["max_abs"] < 1e-4
    assert "class_weights" not in ck  # the tiny model has no prior correction


def test_recovered_checkpoint_exports_the_same_model(tmp_path: Path):
    """Prior correction on: the class weights come back from their folded constant, and the
    recovered checkpoint re-exports to a graph giving the original's outputs."""
    ck_path = make_checkpoint(tmp_path / "pc.pt", seed=3, prior_correction=0.75, temperature=0.5)
    ck = torch.load(ck_path, weights_only=False)
    bins = len(Generator(GeneratorConfig.from_dict(ck["generator"])).bins)
    ck["class_weights"] = torch.linspace(0.5, 4.0, bins)
    torch.save(ck, ck_path)
    first = tmp_path / "first"
    export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(first), name="pc"))
    out = recover(RecoverConfig(model_dir=str(first), out=str(tmp_path / "r.pt")))
    rec = torch.load(out, weights_only=False)
    assert torch.allclose(rec["class_weights"], ck["class_weights"], rtol=1e-5)
    second = tmp_path / "second"
    export_onnx(ExportConfig(checkpoint=str(out), out=str(second), name="pc"))
    a = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(first / "model.onnx")).graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(second / "model.onnx")).graph.initializer}
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_bundled_model_is_recovered_within_parity(tmp_path: Path):
    out = recover(RecoverConfig(model_dir=str(REPO / "sdk" / "models" / "stylenet"), out=str(tmp_path / "r.pt")))
    ck = torch.load(out, map_location="cpu", weights_only=False)
    assert ck["recovered_from"]["parity"]["max_abs"] < 1e-4
    assert ck["generator"]["styles"][0] == "natural" and "class_weights" in ck


def test_a_graph_whose_branches_disagree_is_refused(model_copy: Path, tmp_path: Path):
    """One copy of a decoder weight changed in one branch only: not a graph the exporter wrote."""
    model = onnx.load(str(model_copy / "model.onnx"))
    if_node = next(n for n in model.graph.node if n.name == "switch_if")
    natural = next(a.g for a in if_node.attribute if a.name == "then_branch")
    t = next(t for t in natural.initializer if t.name.endswith("G.up16.conv.bias"))
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 1.0, t.name))
    onnx.save(model, str(model_copy / "model.onnx"))
    digest, size = sha256_file(model_copy / "model.onnx"), (model_copy / "model.onnx").stat().st_size

    def refresh(raw: dict) -> None:  # a consistent folder: only the weights are odd
        raw.update(sha256=digest, bytes=size)
        raw["artifacts"][0].update(sha256=digest, bytes=size)

    edit_manifest(model_copy, refresh)
    with pytest.raises(RecoveryError, match="differs between the graph's branches"):
        recover(RecoverConfig(model_dir=str(model_copy), out=str(tmp_path / "r.pt")))


def test_an_older_design_or_layout_is_refused(model_copy: Path, tmp_path: Path):
    """A manifest of the release-13 generator (ink read-out fields), or a graph without this layout's
    encoder switch, is refused with a message, not read back wrong."""
    edit_manifest(model_copy, lambda raw: raw["generator"].update(ink_style="ukiyoe"))
    with pytest.raises(RecoveryError, match="another generator design"):
        recover(RecoverConfig(model_dir=str(model_copy), out=str(tmp_path / "r.pt")))
    edit_manifest(model_copy, lambda raw: raw["generator"].pop("ink_style"))
    model = onnx.load(str(model_copy / "model.onnx"))
    next(n for n in model.graph.node if n.op_type == "If").name = "switch_if_colour_features"
    onnx.save(model, str(model_copy / "model.onnx"))
    digest, size = sha256_file(model_copy / "model.onnx"), (model_copy / "model.onnx").stat().st_size

    def refresh(raw: dict) -> None:
        raw.update(sha256=digest, bytes=size)
        raw["artifacts"][0].update(sha256=digest, bytes=size)

    edit_manifest(model_copy, refresh)
    with pytest.raises(RecoveryError, match="release 13 or older"):
        recover(RecoverConfig(model_dir=str(model_copy), out=str(tmp_path / "r.pt")))


def test_an_existing_output_is_kept(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "r.pt"
    out.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="--force"):
        recover(RecoverConfig(model_dir=str(tiny_model_dir), out=str(out)))
    assert out.read_bytes() == b"user data"
