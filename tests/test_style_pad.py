"""Stylize's own geometry: the manifest's ``style_work_size`` and ``style_pad`` (reflect padding
around the working-size input, cropped off the output), written by export, read by the SDK, and
covered by the engine profiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import sdk
from conftest import edit_manifest
from export.onnx_export import ExportConfig, ExportError, export_onnx
from sdk import colour, resample, stages
from sdk.backends import profiles
from sdk.backends.onnxruntime import provider_options
from sdk.errors import ModelCorruptError
from sdk.images import decode
from sdk.manifest import load_manifest, write_manifest
from sdk.stages import Params


@pytest.fixture(scope="module")
def padded_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with stylize at long side 192, padded by 32."""
    out = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("padded") / "model"))
    edit_manifest(out, lambda raw: raw.update(style_work_size=192, style_pad=32))
    return out


def test_export_writes_the_stylize_geometry(tiny_checkpoint, tmp_path):
    m = export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "m"), style_work_size=224, style_pad=32))
    assert (m["work_size"], m["style_work_size"], m["style_pad"]) == (256, 224, 32)
    back = load_manifest(tmp_path / "m")
    assert (back.stylize_size, back.style_pad, profiles.run_side(back)) == (224, 32, 288)
    write_manifest(back)  # round trip: the fields stay owned, not extras
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["style_pad"] == 32
    with pytest.raises(ExportError, match="--style-pad is 20"):
        export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "bad"), style_pad=20))


def test_manifest_without_the_fields_keeps_one_geometry(tiny_model_dir):
    m = load_manifest(tiny_model_dir)
    assert (m.stylize_size, m.style_pad, profiles.run_side(m)) == (256, 0, 256)
    assert "style_pad" not in json.loads((tiny_model_dir / "manifest.json").read_text())


@pytest.mark.parametrize("field, value", [("style_pad", 16), ("style_pad", -32), ("style_pad", 1.5), ("style_pad", True),
                                          ("style_work_size", 8), ("style_work_size", "224")])
def test_bad_stylize_geometry_is_refused(model_copy, field, value):
    edit_manifest(model_copy, lambda raw: raw.update({field: value}))
    with pytest.raises(ModelCorruptError, match=field):
        load_manifest(model_copy)


def test_stylize_runs_padded_and_returns_the_input_size(padded_dir, astronaut):
    img = np.asarray(Image.fromarray(astronaut).resize((300, 200)))
    pipe = sdk.load(padded_dir, backend="onnxruntime-cpu", threads=1)
    job = stages.prepare(img, stages.check_options("stylize", Params("rococo"), pipe.manifest))
    assert job.options.pad == 32 and job.shape == (128 + 64, 192 + 64)  # long side 192, then 32 on every side
    natural = stages.prepare(img, stages.check_options("colorize", Params(), pipe.manifest))
    assert natural.options.pad == 0 and natural.shape == (160, 256)  # colorize keeps the work_size
    out = pipe.stylize(img, "rococo")
    assert out.shape == img.shape

    # The same by hand: resize, reflect-pad, run the graph, crop, upsample.
    d = decode(img)
    luma = np.pad(resample.resize_luma(d.luma, (128, 192)), 32, mode="reflect")
    sess = ort.InferenceSession(str(padded_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    style = pipe.style_vector("rococo")[None]
    raw = sess.run(None, {"luma": luma[None, None].astype(np.float32), "style": style.astype(np.float32)})[0][0]
    want = colour.ycbcr_small_to_rgb(raw[:, 32:-32, 32:-32], d.size, 1)
    assert np.abs(out.astype(int) - np.asarray(want).astype(int)).max() <= 1


def test_padding_changes_the_border_not_the_size(tiny_model_dir, padded_dir, astronaut):
    """Unpadded and padded outputs differ (the generator sees a different border)."""
    img = np.asarray(Image.fromarray(astronaut).resize((192, 192)))
    plain = sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1).stylize(img, "ukiyoe")
    padded = sdk.load(padded_dir, backend="onnxruntime-cpu", threads=1).stylize(img, "ukiyoe")
    assert plain.shape == padded.shape == img.shape
    assert np.abs(plain.astype(int) - padded.astype(int)).max() > 0


def test_profiles_cover_the_padded_stylize_shapes(padded_dir, tmp_path, monkeypatch):
    m = load_manifest(padded_dir)
    shapes = profiles.manifest_shapes(m)
    assert (256, 256) in shapes and (256, 160) in shapes and (96, 256) in shapes and len(shapes) == len(set(shapes))
    assert profiles.working_shapes(192, 32, pad=32)[0] == (256, 256)
    dyn = profiles.dynamic_profile(profiles.run_side(m), 32)
    assert profiles.check_coverage([dyn], m.work_size, 32, extra=shapes) == []
    only_256 = profiles.bucket_profiles([(256, 256)])
    assert profiles.check_coverage(only_256, m.work_size, 32, extra=shapes) == []  # every shape pads up into it
    big = dict(style_work_size=224, style_pad=32)  # long side 288: beyond a 256 bucket
    edit_manifest(padded_dir, lambda raw: raw.update(big))
    try:
        m = load_manifest(padded_dir)
        assert (288, 288) in profiles.check_coverage(only_256, m.work_size, 32, extra=profiles.manifest_shapes(m))
        monkeypatch.setenv("CHROMAFORGE_CACHE", str(tmp_path))
        opts = provider_options("TensorrtExecutionProvider", m)
        assert opts["trt_profile_max_shapes"] == "luma:8x1x288x288,style:8x5"
    finally:
        edit_manifest(padded_dir, lambda raw: raw.update(style_work_size=192, style_pad=32))


def test_engine_plan_covers_the_padded_stylize_shapes(model_copy):
    """``python -m export trt``'s profiles: the dynamic one reaches the padded side; buckets that
    hold only colorize's shapes are refused, naming a padded shape."""
    from export.trt_engine import TrtConfig, plan_profiles, with_shapes

    edit_manifest(model_copy, lambda raw: raw.update(style_pad=32))
    m = load_manifest(model_copy)
    cfg = TrtConfig(model_dir=str(model_copy), out=str(model_copy))
    assert plan_profiles(cfg, m) == (profiles.dynamic_profile(320, 32, 8),)
    with pytest.raises(ExportError, match=r"\(320, 320\).*uncovered.*up to 320 for stylize"):
        plan_profiles(with_shapes(cfg, "256x256,160x256,256x160,192x256,256x192"), m)
    assert len(plan_profiles(with_shapes(cfg, "256x256,320x320"), m)) == 2
