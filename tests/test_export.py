"""Export: ONNX checks, parity with PyTorch, manifest contents, safety."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx_export import (ExportConfig, ExportError, ParityError, _parity_inputs, chroma_gain_reference, export_onnx,
                                load_generator, parity)
from sdk import contract
from sdk.manifest import load_manifest, sha256_file
from training.data import list_images

from conftest import make_checkpoint


def test_manifest_describes_the_model(tiny_model_dir: Path):
    """The manifest records colour space, styles, sizes, io names, precision, opset, checksum, versions."""
    m = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert m["color_space"]["name"] == contract.COLOR_SPACE
    assert m["color_space"]["ycbcr_to_rgb"] == [list(r) for r in contract.YCBCR_TO_RGB]
    assert m["styles"] == list(contract.STYLES)
    assert m["io"]["inputs"] == ["luma", "style"] and m["io"]["outputs"] == ["ycbcr"]
    assert m["precision"] == "fp32" and m["opset"] == 17 and m["work_size"] == contract.WORK_SIZE
    assert m["sha256"] == sha256_file(tiny_model_dir / "model.onnx")
    assert {"torch", "onnx", "onnxruntime", "onnxslim"} <= set(m["versions"])
    assert m["parity"]["max_abs"] <= m["parity"]["tolerance"]
    assert load_manifest(tiny_model_dir).styles == contract.STYLES
    assert "Apache" in m["licence"]["encoder"]
    notice = (tiny_model_dir / "NOTICE.txt").read_text()
    assert "MobileNetV2" in notice and "Apache License" in notice and "END OF TERMS AND CONDITIONS" in notice


def test_onnx_is_valid_with_dynamic_axes(tiny_model_dir: Path):
    """The ONNX passes the checker and runs at any batch and any multiple-of-32 size."""
    model = onnx.load(str(tiny_model_dir / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["luma", "style"]
    sess = ort.InferenceSession(str(tiny_model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for n, h, w in [(1, 32, 32), (3, 64, 96), (2, 256, 160)]:
        out = sess.run(None, {"luma": np.random.rand(n, 1, h, w).astype(np.float32),
                              "style": np.eye(5, dtype=np.float32)[np.arange(n) % 5]})[0]
        assert out.shape == (n, 3, h, w)


def test_parity_against_pytorch(tiny_model_dir: Path, tiny_checkpoint: Path):
    """ONNX Runtime matches PyTorch on random and real inputs to 1e-4."""
    G, _ = load_generator(tiny_checkpoint)
    cases = _parity_inputs(ExportConfig(checkpoint="", out=""), 5)
    assert any("astronaut" in c[0] for c in cases)
    report = parity(tiny_model_dir / "model.onnx", G, cases)
    assert report["max_abs"] < 1e-4 and report["cases"] == len(cases)


def test_parity_detects_a_different_model(tiny_model_dir: Path, tmp_path: Path):
    """The parity check fails loudly when the ONNX and the PyTorch weights differ."""
    other, _ = load_generator(make_checkpoint(tmp_path / "other.pt", seed=1))
    report = parity(tiny_model_dir / "model.onnx", other, _parity_inputs(ExportConfig(checkpoint="", out=""), 5)[:2])
    assert report["max_abs"] > 1e-3


def test_tolerance_is_enforced(tiny_checkpoint: Path, tmp_path: Path):
    """An export whose parity error exceeds the tolerance raises and leaves no model behind."""
    with pytest.raises(ParityError, match="tolerance"):
        export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "m"), tolerance=-1.0))
    assert not (tmp_path / "m" / "model.onnx").exists()


def test_refuses_to_overwrite(tiny_model_dir: Path, tiny_checkpoint: Path, tmp_path: Path):
    """An existing model is never replaced without --force; with it, the checksum is rewritten."""
    target = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, target)
    before = (target / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="--force"):
        export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(target)))
    assert (target / "model.onnx").read_bytes() == before
    export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(target), force=True, simplify=False))
    assert load_manifest(target).sha256 == sha256_file(target / "model.onnx")


def test_bad_checkpoint(tmp_path: Path):
    """Missing or foreign checkpoints raise ExportError with a hint."""
    with pytest.raises(ExportError, match="does not exist"):
        load_generator(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ExportError, match="not a chromaforge"):
        load_generator(tmp_path / "foreign.pt")


def test_cli(tiny_checkpoint: Path, tmp_path: Path):
    """`python -m export onnx` writes the model (`trt`, `fp16`, `triton`: tests/test_export_gpu.py, tests/test_fp16.py)."""
    out = subprocess.run([sys.executable, "-m", "export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "cli")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["parity"]["max_abs"] < 1e-4


def test_nearest_generator_exports_with_parity(tmp_path: Path):
    """A generator with nearest decoder upsampling exports (ONNX Resize nearest) and matches PyTorch."""
    ck = make_checkpoint(tmp_path / "nearest.pt", seed=2, upsample="nearest")
    out = tmp_path / "model"
    manifest = export_onnx(ExportConfig(checkpoint=str(ck), out=str(out), simplify=False))
    assert manifest["generator"]["upsample"] == "nearest"
    assert manifest["parity"]["max_abs"] < 1e-4


def test_temperature_is_baked_in_and_recorded(tiny_checkpoint: Path, tmp_path: Path):
    """--temperature changes the colour read-out in the graph and is recorded; lower is more colourful."""
    cold = export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "cold"), temperature=0.1, simplify=False))
    assert cold["generator"]["temperature"] == 0.1
    feeds = {"luma": np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32), "style": np.eye(5, dtype=np.float32)[:1]}
    sharp = ort.InferenceSession(str(tmp_path / "cold" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    G, _ = load_generator(tiny_checkpoint, temperature=1.0)
    with torch.no_grad():
        mean = G(torch.from_numpy(feeds["luma"]), torch.from_numpy(feeds["style"])).numpy()
    assert np.abs(sharp[:, 1:]).mean() > np.abs(mean[:, 1:]).mean()


def test_prior_correction_takes_back_the_rebalancing(tmp_path: Path, datasets: Path):
    """--prior-correction subtracts a * log w from the colour logits in the graph: w recomputed from the
    run's training photos (checkpoints without saved weights) or taken as saved; recorded; parity holds."""
    from training.train import colour_class_weights

    photos = tmp_path / "photos"
    photos.mkdir()
    for f in list_images(datasets / "photos" / "val")[:4]:
        shutil.copy(f, photos / f.name)
    config = {"photos": str(photos), "load_size": 64, "photo_limit": 0, "seed": 0, "rebalance_lambda": 0.5, "bin_step": 0.05}
    ck_path = make_checkpoint(tmp_path / "ck.pt")
    ck = torch.load(ck_path, weights_only=False)
    ck["config"] = config
    torch.save(ck, ck_path)

    G, _ = load_generator(ck_path, prior_correction=1.0)
    w = colour_class_weights(config, G.bins)
    assert torch.allclose(G.class_log_weights, torch.log(w)) and float(w.max()) > 2 * float(w.min())
    G0, _ = load_generator(ck_path)
    assert G0.cfg.prior_correction == 0 and not G0.class_log_weights.any()
    # The read-out is the annealed mean of (logits - a log w): uniform logits read out as softmax(-log w / T)'s mean.
    flat = torch.zeros(1, len(G.bins), 1, 1)
    p = torch.softmax(-torch.log(w) / G.cfg.temperature, 0)
    assert torch.allclose(G.chroma(flat)[0, :, 0, 0] / G.cfg.chroma_scale, p @ G.bins, atol=1e-6)

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), prior_correction=1.0, simplify=False))
    assert m["generator"]["prior_correction"] == 1.0 and m["parity"]["max_abs"] < 1e-4
    feeds = {"luma": np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32), "style": np.eye(5, dtype=np.float32)[:1]}
    corrected = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        plain = G0(torch.from_numpy(feeds["luma"]), torch.from_numpy(feeds["style"])).numpy()
    assert np.abs(corrected[:, 1:] - plain[:, 1:]).max() > 1e-3

    # Saved weights are used as they are; without them and without the photos the export says what is missing.
    ck["class_weights"] = torch.full((len(G.bins),), 2.0)
    torch.save(ck, ck_path)
    G2, _ = load_generator(ck_path, prior_correction=0.5)
    assert torch.allclose(G2.class_log_weights, torch.full_like(G2.class_log_weights, float(np.log(2.0))))
    del ck["class_weights"]
    ck["config"] = {**config, "photos": str(tmp_path / "gone")}
    torch.save(ck, ck_path)
    with pytest.raises(ExportError, match="class weights"):
        load_generator(ck_path, prior_correction=0.5)


def _ukiyoe_checkpoint(tmp_path: Path, datasets: Path) -> tuple[Path, Path]:
    """A tiny checkpoint whose run config points at 6 ukiyo-e prints copied to tmp_path/styles (the ink palette's source)."""
    styles = tmp_path / "styles"
    (styles / "ukiyoe" / "train").mkdir(parents=True)
    for f in sorted((datasets / "styles" / "ukiyoe" / "train").iterdir())[:6]:
        shutil.copy(f, styles / "ukiyoe" / "train" / f.name)
    ck_path = make_checkpoint(tmp_path / "ck.pt")
    ck = torch.load(ck_path, weights_only=False)
    ck["config"] = {"styles_root": str(styles)}
    torch.save(ck, ck_path)
    return styles, ck_path


def test_ink_read_out_prints_the_inked_style_in_flat_school_colours(tmp_path: Path, datasets: Path):
    """--ink-style: the named style's output takes (softly) the nearest of K inks, a k-means palette of that
    school's paintings; other styles are untouched, blends ink in proportion; recorded; parity holds;
    paintings missing or a style that is not a painting style give an ExportError."""
    from training.train import ink_palette

    styles, ck_path = _ukiyoe_checkpoint(tmp_path, datasets)

    G, _ = load_generator(ck_path, ink_style="ukiyoe", inks=4)
    G0, _ = load_generator(ck_path)
    palette = ink_palette(styles, "ukiyoe", 4)
    assert torch.equal(G.ink_palette, palette) and palette.shape == (4, 3) and torch.cdist(palette, palette).max() > 0.1
    assert G0.cfg.ink_style == "" and G0.ink_palette.numel() == 0
    luma = torch.from_numpy(np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32))
    with torch.no_grad():
        # a hand-made image: every pixel moves onto (within the softness of) its nearest ink
        x = torch.rand(1, 3, 16, 16) * torch.tensor([1.0, 0.4, 0.4])[:, None, None] - torch.tensor([0.0, 0.2, 0.2])[:, None, None]
        inked = G.inked(x, torch.rand(1, 1, 16, 16))
        dist = torch.cdist(inked.flatten(2)[0].T, palette).min(dim=1).values
        assert float(dist.median()) < 1e-3 and float(dist.max()) < 0.1
        for k in range(len(contract.STYLES)):
            style = torch.from_numpy(np.eye(5, dtype=np.float32)[k : k + 1])
            same = torch.allclose(G(luma, style), G0(luma, style), atol=1e-6)
            assert same == (contract.STYLES[k] != "ukiyoe"), contract.STYLES[k]
        half = torch.tensor([[0.0, 0.5, 0.5, 0.0, 0.0]])
        full_u, full_i = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
        feats = G.encoder(luma)
        raw = G0.styled(feats, luma, half)
        assert torch.allclose(G.styled(feats, luma, half), raw + 0.5 * (G.inked(raw, luma) - raw), atol=1e-6)
        assert not torch.allclose(G(luma, full_u), G0(luma, full_u), atol=1e-3) and torch.allclose(G(luma, full_i), G0(luma, full_i))

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), ink_style="ukiyoe", inks=4, simplify=False))
    assert m["generator"]["ink_style"] == "ukiyoe" and m["generator"]["inks"] == 4 and m["parity"]["max_abs"] < 1e-4
    # The task switch's third level: painting batches without ukiyo-e weight skip the ink step, with the plain export's numbers.
    assert "without ukiyoe weight the ink read-out" in m["graph"]
    export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "plain"), ink_style="ukiyoe", inks=4, simplify=False,
                             task_switch=False))
    def ifs(g):  # every If node, at any depth: name -> {branch: graph}
        found = {}
        for n in g.node:
            if n.op_type == "If":
                found[n.name] = {a.name: a.g for a in n.attribute}
                for body in found[n.name].values():
                    found.update(ifs(body))
        return found

    ink_if = ifs(onnx.load(str(tmp_path / "m" / "model.onnx")).graph)["switch_if_ink"]
    assert len(ink_if["then_branch"].node) < len(ink_if["else_branch"].node)  # the branch without the ink step is smaller
    switched, plain = (ort.InferenceSession(str(tmp_path / d / "model.onnx"), providers=["CPUExecutionProvider"]) for d in ("m", "plain"))
    feed_luma = luma.numpy()
    for row in ([0, 1, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0.5, 0.5, 0, 0], [0, 0, 0.3, 0.7, 0]):
        feed = {"luma": feed_luma, "style": np.array([row], np.float32)}
        assert np.abs(switched.run(None, feed)[0] - plain.run(None, feed)[0]).max() < 1e-5, row
    shutil.rmtree(styles)
    with pytest.raises(ExportError, match="ukiyoe paintings"):
        load_generator(ck_path, ink_style="ukiyoe")
    with pytest.raises(ExportError, match="ink_style"):
        load_generator(ck_path, ink_style="natural")


def test_ink_saturation_weights_the_palette_toward_the_schools_strong_colours(tmp_path: Path, datasets: Path):
    """--ink-saturation: the palette's k-means weighs each pixel by its chroma, so the inks keep the school's
    strong colours (more chroma than plain k-means' inks); 0 is plain k-means; it is recorded with the
    generator and a checkpoint's value is kept unless overridden; out of range is an ExportError."""
    from training.train import ink_palette

    styles, ck_path = _ukiyoe_checkpoint(tmp_path, datasets)
    plain = ink_palette(styles, "ukiyoe", 4)
    assert torch.equal(ink_palette(styles, "ukiyoe", 4, saturation=0.0), plain)
    strong = ink_palette(styles, "ukiyoe", 4, saturation=2.0)
    G, _ = load_generator(ck_path, ink_style="ukiyoe", inks=4, ink_saturation=2.0)
    assert G.cfg.ink_saturation == 2.0 and torch.equal(G.ink_palette, strong)
    assert float(strong[:, 1:].norm(dim=1).mean()) > float(plain[:, 1:].norm(dim=1).mean())
    assert torch.equal(load_generator(ck_path, ink_style="ukiyoe", inks=4)[0].ink_palette, plain)
    ck = torch.load(ck_path, weights_only=False)  # a run trained through saturated inks records them
    ck["generator"].update(ink_style="ukiyoe", inks=4, ink_saturation=2.0)
    torch.save(ck, tmp_path / "sat.pt")
    assert torch.equal(load_generator(tmp_path / "sat.pt")[0].ink_palette, strong)
    assert torch.equal(load_generator(tmp_path / "sat.pt", ink_saturation=0.0)[0].ink_palette, plain)
    with pytest.raises(ExportError, match="ink_saturation"):
        load_generator(ck_path, ink_style="ukiyoe", inks=4, ink_saturation=5.0)


def test_ink_fields_vote_along_the_photos_edges(tmp_path: Path, datasets: Path):
    """--ink-fields: the pixels' inks are voted over a window weighted along the input's luminance, so an isolated
    speck on flat luminance joins its field, while a line of another ink that the photo also has (a luminance
    line) survives, and the same line on flat luminance is voted away; recorded; parity holds; bad settings
    are refused."""
    from training.model import GeneratorConfig

    _, ck_path = _ukiyoe_checkpoint(tmp_path, datasets)

    G, _ = load_generator(ck_path, ink_style="ukiyoe", inks=4, ink_fields=2, ink_fields_eps=0.0009)
    G1, _ = load_generator(ck_path, ink_style="ukiyoe", inks=4)
    assert (G.cfg.ink_fields, G.cfg.ink_fields_eps, G1.cfg.ink_fields) == (2, 0.0009, 0)
    ink = G.ink_palette
    x = ink[0][:, None, None].expand(3, 32, 32).clone()[None]  # one field
    x[0, :, 16:18, :] = ink[1][:, None, None]  # a two-pixel line of a second ink
    x[0, :, 6, 6] = ink[2]  # a speck of a third
    flat = torch.full((1, 1, 32, 32), 0.6)
    lined = flat.clone()
    lined[..., 16:18, :] = 0.2  # the photo has the line too
    with torch.no_grad():
        on_flat, on_line, plain = G.inked(x, flat), G.inked(x, lined), G1.inked(x, flat)
    assert torch.allclose(plain[0, :, 6, 6], ink[2], atol=1e-4) and torch.allclose(plain[0, :, 16], ink[1][:, None].expand(3, 32), atol=1e-4)
    assert torch.allclose(on_flat[0, :, 6, 6], ink[0], atol=1e-4) and torch.allclose(on_line[0, :, 6, 6], ink[0], atol=1e-4)  # speck: gone
    assert torch.allclose(on_flat[0, :, 16:18], ink[0][:, None, None].expand(3, 2, 32), atol=1e-3)  # line on flat luma: voted away
    assert torch.allclose(on_line[0, :, 16:18], ink[1][:, None, None].expand(3, 2, 32), atol=1e-3)  # along the photo's line: kept
    assert torch.allclose(on_line[0, :, 10:14], ink[0][:, None, None].expand(3, 4, 32), atol=1e-3)  # and the field beside it

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), ink_style="ukiyoe", inks=4, ink_fields=1,
                                 simplify=False))
    assert m["generator"]["ink_fields"] == 1 and m["parity"]["max_abs"] < 1e-4
    for bad in ({"ink_fields": -1}, {"ink_fields": 2, "ink_fields_eps": 0.0}):
        with pytest.raises(ValueError, match="ink_fields"):
            GeneratorConfig(ink_style="ukiyoe", **bad)


def test_key_lines_outline_the_inked_style_along_the_photos_dark_edges(tmp_path: Path, datasets: Path):
    """--ink-lines: the inked style gets key lines in its darkest ink on the dark side of the input's
    luminance steps and along its thin dark lines, none on flat luminance or a faint step; the other
    styles and colorization are untouched; recorded; parity holds; bad settings are refused."""
    from training.model import GeneratorConfig

    _, ck_path = _ukiyoe_checkpoint(tmp_path, datasets)
    G, _ = load_generator(ck_path, ink_style="ukiyoe", inks=4, ink_lines=1.0, ink_lines_sigma=1.0, ink_lines_threshold=0.04)
    G0, _ = load_generator(ck_path, ink_style="ukiyoe", inks=4)
    assert (G.cfg.ink_lines, G.cfg.ink_lines_sigma, G.cfg.ink_lines_threshold, G0.cfg.ink_lines) == (1.0, 1.0, 0.04, 0.0)
    luma = torch.full((1, 1, 32, 64), 0.9)
    luma[..., 32:] = 0.1  # a strong step: dark on the right
    luma[..., 8, :16] = 0.3  # a thin dark line on the bright side
    luma[..., 24:, :16] = 0.85  # a faint step
    with torch.no_grad():
        lines = G.key_lines(luma)[0, 0]
    assert lines[:, 33].min() > 0.9 and lines[:, 26:32].max() == 0 and lines[:, 36:].max() == 0  # the step's dark side only
    assert lines[8, 4:12].min() > 0.9 and lines[12:20, :14].max() == 0  # the thin line, not the flat
    assert lines[26:, :14].max() == 0  # the faint step stays without a line
    key = G.ink_palette[G.ink_palette[:, 0].argmin()]
    eye = torch.eye(5)
    with torch.no_grad():
        inked, plain = G(luma, eye[[1]]), G0(luma, eye[[1]])
        assert torch.allclose(inked[0, :, 10:20, 33], key[:, None].expand(3, 10), atol=1e-4)
        assert torch.equal(inked[0, :, 12:20, 40:60], plain[0, :, 12:20, 40:60])  # away from any line
        for k in (0, 2, 3, 4):  # colorization and the other styles
            assert torch.equal(G(luma, eye[[k]]), G0(luma, eye[[k]]))
    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), ink_style="ukiyoe", inks=4, ink_lines=0.5,
                                 simplify=False))
    assert m["generator"]["ink_lines"] == 0.5 and m["parity"]["max_abs"] < 1e-4
    for bad in ({"ink_lines": 1.5}, {"ink_lines": 1.0, "ink_lines_sigma": 0.0}, {"ink_lines": 1.0, "ink_lines_threshold": -0.1}):
        with pytest.raises(ValueError, match="ink_lines"):
            GeneratorConfig(ink_style="ukiyoe", **bad)
    with pytest.raises(ValueError, match="needs an ink_style"):
        GeneratorConfig(ink_lines=1.0)


def test_guided_chroma_upsampling_follows_luminance_edges(tmp_path: Path):
    """--chroma-guide: the read-out chroma is upsampled along the input's luminance (a guided filter): with a flat
    luminance it is the box-smoothed bilinear upsampling; across a luminance step it changes sharply where plain
    bilinear blurs; recorded; parity holds; bad settings are refused."""
    import torch.nn.functional as F

    from training.model import GeneratorConfig

    ck_path = make_checkpoint(tmp_path / "ck.pt")
    G, _ = load_generator(ck_path, chroma_guide=1, chroma_guide_eps=1e-3)
    assert G.cfg.chroma_guide == 1 and G.cfg.chroma_guide_eps == 1e-3
    c = torch.zeros(1, 2, 8, 8)
    c[:, :, :, 4:] = 0.2  # chroma steps at column 4 of the 1/4-size read-out (pixel 16 at full size)
    step = torch.zeros(1, 1, 32, 32)
    step[..., 16:] = 1.0  # the luminance steps at the same place
    with torch.no_grad():
        guided = G.guided_up4(c, step)
        flat = G.guided_up4(c, torch.full((1, 1, 32, 32), 0.5))
    box = F.avg_pool2d(F.pad(c, (1,) * 4, mode="replicate"), 3, stride=1)
    box = F.avg_pool2d(F.pad(box, (1,) * 4, mode="replicate"), 3, stride=1)
    assert torch.allclose(flat, F.interpolate(box, scale_factor=4.0, mode="bilinear", align_corners=False), atol=1e-6)
    bilinear = F.interpolate(c, scale_factor=4.0, mode="bilinear", align_corners=False)
    # one pixel either side of the edge: the guided chroma is (nearly) the side's own, bilinear is halfway
    assert float(guided[..., 15].abs().max()) < 0.03 and float((guided[..., 16] - 0.2).abs().max()) < 0.03
    assert float(bilinear[..., 15].abs().min()) > 0.045 and float((bilinear[..., 16] - 0.2).abs().min()) > 0.045

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), chroma_guide=2, chroma_guide_eps=0.004,
                                 simplify=False))
    assert m["generator"]["chroma_guide"] == 2 and m["parity"]["max_abs"] < 1e-4
    with pytest.raises(ValueError, match="chroma_guide"):
        GeneratorConfig(chroma_guide=-1)
    with pytest.raises(ValueError, match="chroma_guide"):
        GeneratorConfig(chroma_guide=1, chroma_guide_eps=0.0)


def test_old_generator_design_is_refused(tiny_checkpoint: Path, tmp_path: Path):
    """A checkpoint of the first release's generator (fields this design lacks) raises ExportError, not a traceback."""
    ck = torch.load(tiny_checkpoint, weights_only=False)
    ck["generator"] = {**ck["generator"], "n_res": 3}
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(ExportError, match="older generator design"):
        load_generator(tmp_path / "old.pt")


def _joined_outputs(colour: Path, style: Path) -> dict[str, torch.Tensor]:
    """Natural and ukiyo-e outputs of the joined generator and of each run alone, on one random input."""
    G, _ = load_generator(colour, style_checkpoint=style)
    Gc, _ = load_generator(colour)
    Gs, _ = load_generator(style)
    luma = torch.rand(1, 1, 64, 96)
    nat, ukiyoe = torch.eye(5)[[0]], torch.eye(5)[[1]]
    with torch.no_grad():
        return {f"{who}_{s}": g(luma, v) for who, g in (("joined", G), ("colour", Gc), ("style", Gs))
                for s, v in (("natural", nat), ("ukiyoe", ukiyoe))}


def test_colour_and_style_runs_join(tmp_path: Path):
    """--style-checkpoint: natural output comes from the colour run, full style from the style run.
    The colour run may have fine-tuned the encoder past stride 8 (--encoder-tune-stride 16): the
    style branch reads only the layers before; a change there is refused."""
    colour = make_checkpoint(tmp_path / "colour.pt", seed=3)
    style = make_checkpoint(tmp_path / "style.pt", seed=4)
    with pytest.raises(ExportError, match="different encoder"):
        load_generator(colour, style_checkpoint=style)
    ck_c, ck_s = torch.load(colour, weights_only=False), torch.load(style, weights_only=False)
    for name in ("G", "G_ema"):  # as in real runs: both start from the same frozen encoder
        ck_s[name].update({k: v for k, v in ck_c[name].items() if k.startswith("encoder.")})
    torch.save(ck_s, style)
    out = _joined_outputs(colour, style)
    assert torch.equal(out["joined_natural"], out["colour_natural"])
    assert torch.equal(out["joined_ukiyoe"], out["style_ukiyoe"])
    assert not torch.allclose(out["joined_ukiyoe"], out["colour_ukiyoe"])
    _, ck = load_generator(colour, style_checkpoint=style)
    assert ck["style_checkpoint"]["path"] == str(style)
    manifest = export_onnx(ExportConfig(checkpoint=str(colour), style_checkpoint=str(style), out=str(tmp_path / "joined"), simplify=False))
    assert manifest["training"]["style_run"]["path"] == str(style)

    for name in ("G", "G_ema"):  # the colour run's own stride-16 layers: still joins
        ck_c[name]["encoder.blocks.12.project.conv.weight"] = ck_c[name]["encoder.blocks.12.project.conv.weight"] * 1.5
    torch.save(ck_c, colour)
    out = _joined_outputs(colour, style)
    assert torch.equal(out["joined_natural"], out["colour_natural"])
    assert not torch.equal(out["joined_natural"], out["style_natural"])
    assert torch.equal(out["joined_ukiyoe"], out["style_ukiyoe"])
    for name in ("G", "G_ema"):  # a layer behind the stride-8 features: refused, naming it
        ck_c[name]["encoder.blocks.4.dw.conv.bias"] = ck_c[name]["encoder.blocks.4.dw.conv.bias"] + 0.1
    torch.save(ck_c, colour)
    with pytest.raises(ExportError, match="blocks.4.dw.conv.bias"):
        load_generator(colour, style_checkpoint=style)


def test_task_switch_skips_the_style_branch_for_natural_inputs(tiny_checkpoint: Path, tiny_model_dir: Path, tmp_path: Path):
    """The default export joins the encoder with an If: natural-only batches run the colour decoder
    alone, batches without natural weight the style branch alone, anything else both decoders; all
    give the plain export's numbers."""
    import onnxruntime as ort

    from export.switch import SPLIT_NODE

    model = onnx.load(str(tiny_model_dir / "model.onnx"))
    (split,) = [n for n in model.graph.node if n.name == SPLIT_NODE]  # the encoder past stride 8, for natural weight only
    skip, high = ({a.name: a.g for a in split.attribute}[k] for k in ("then_branch", "else_branch"))
    assert not any(n.op_type == "Conv" and "blocks" in "".join(n.input) for n in skip.node)
    assert {o.name for o in high.output} == {o.name for o in skip.output} == {"enc_f16", "enc_f32"}
    assert len([n for n in high.node if n.op_type == "Conv"]) > 30 and len(skip.initializer) == 2
    assert sum(t.dims[0] for t in skip.initializer) == 96 + 320  # grouped zero convolutions: 416 weights
    (switch,) = [n for n in model.graph.node if n.name == "switch_if"]
    branches = {a.name: a.g for a in switch.attribute}
    assert not any("style_" in n.name for n in branches["then_branch"].node)
    (inner,) = [n for n in branches["else_branch"].node if n.op_type == "If"]  # no natural weight: style branch only
    painting = {a.name: a.g for a in inner.attribute}
    assert any("style_" in n.name for n in painting["then_branch"].node)
    assert not any("colour_head" in n.name or "up16" in n.name for n in painting["then_branch"].node)
    assert len(branches["then_branch"].node) < len(painting["else_branch"].node)
    assert len(painting["then_branch"].node) < len(painting["else_branch"].node)
    assert load_manifest(tiny_model_dir).extra["graph"].startswith("task-switch")
    plain = tmp_path / "plain"
    export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(plain), task_switch=False))
    assert not [n for n in onnx.load(str(plain / "model.onnx")).graph.node if n.op_type == "If"]
    a = ort.InferenceSession(str(tiny_model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(plain / "model.onnx"), providers=["CPUExecutionProvider"])
    luma = np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32)
    for row in ([1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0.5, 0, 0, 0.5, 0], [0, 0, 0.3, 0, 0.7]):
        style = np.array([row, [1, 0, 0, 0, 0]], np.float32)  # a mixed batch takes the full branch
        for s in (style, style[:1], np.array([row, [0, 0, 0, 1, 0]], np.float32)):
            feed = {"luma": luma[: len(s)], "style": s}
            assert np.abs(a.run(None, feed)[0] - b.run(None, feed)[0]).max() < 1e-5


def test_work_size_outside_what_the_sdk_runs_is_refused(tiny_checkpoint: Path, tmp_path: Path):
    """A --work-size the SDK would refuse at load is refused before any work, and nothing is written."""
    for size in (0, 16, 10**5):
        with pytest.raises(ExportError, match=f"--work-size is {size}; expected a long side"):
            export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "bad"), work_size=size))
    assert not (tmp_path / "bad").exists()


def test_semantic_features_start_neutral_and_export_with_parity(tmp_path: Path):
    """GeneratorConfig.semantic: the encoder's own 1x1 head feeds the colour decoder through
    zero-initialised layers (a run initialised from a checkpoint without them starts from its
    output); once trained they change colorization, not the styles, and export with parity."""
    from training.model import Generator, GeneratorConfig

    from conftest import TINY

    ck_path = make_checkpoint(tmp_path / "sem.pt", seed=5, semantic=True)
    G, _ = load_generator(ck_path)
    assert G.encoder.head(G.encoder(torch.rand(1, 1, 64, 64))[-1]).shape[1] == 1280
    plain = Generator(GeneratorConfig(**TINY)).eval()
    plain.load_state_dict({k: v for k, v in G.state_dict().items() if k in plain.state_dict()})
    luma, nat, ukiyoe = torch.rand(1, 1, 64, 96), torch.eye(5)[[0]], torch.eye(5)[[1]]
    with torch.no_grad():
        assert torch.equal(G(luma, nat), plain(luma, nat))
    ck = torch.load(ck_path, weights_only=False)
    for name in ("G", "G_ema"):
        ck[name]["lat_sem.weight"] = torch.randn_like(ck[name]["lat_sem.weight"])
        ck[name]["global_sem.weight"] = torch.randn_like(ck[name]["global_sem.weight"])
    torch.save(ck, ck_path)
    G, _ = load_generator(ck_path)
    with torch.no_grad():
        assert not torch.allclose(G(luma, nat), plain(luma, nat))
        assert torch.equal(G(luma, ukiyoe), plain(luma, ukiyoe))
    manifest = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), simplify=False))
    assert manifest["generator"]["semantic"] and manifest["parity"]["max_abs"] < 1e-4
    graph = onnx.load(str(tmp_path / "m" / "model.onnx")).graph
    weights_1280 = lambda g: {t.name for t in g.initializer if t.dims[:1] == [1280]}  # noqa: E731: the head's kernel and bias
    branches = {a.name: a.g for n in graph.node if n.op_type == "If" for a in n.attribute}
    assert not weights_1280(graph)  # not in the main graph, which stylize runs too
    assert weights_1280(branches["then_branch"])  # in the colour-only branch (colorize)


def test_chroma_gain_evens_out_each_images_colour_budget(tmp_path: Path, datasets: Path):
    """--chroma-gain: each image's read-out chroma is multiplied by (ref / e) ** b, e its mean expected chroma
    magnitude (clamped to CHROMA_GAIN_LIMITS), image by image in a batch; the reference is measured on the run's
    training photos when not given; recorded; parity holds; without the photos or with bad settings it says so."""
    from training.model import CHROMA_GAIN_LIMITS, GeneratorConfig

    photos = tmp_path / "photos"
    photos.mkdir()
    for f in list_images(datasets / "photos" / "val")[:3]:
        shutil.copy(f, photos / f.name)
    ck_path = make_checkpoint(tmp_path / "ck.pt")
    ck = torch.load(ck_path, weights_only=False)
    ck["config"] = {"photos": str(photos)}
    torch.save(ck, ck_path)

    G0, _ = load_generator(ck_path)
    assert G0.cfg.chroma_gain == 0
    G, _ = load_generator(ck_path, chroma_gain=1.0)
    ref = G.cfg.chroma_gain_ref
    assert ref == chroma_gain_reference(G0, photos, 256) and ref > 0
    # Two images in one batch: one whose classes sit on strong colours, one on weak ones.
    norms = G.bins.norm(dim=1)
    logits = torch.zeros(2, len(G.bins), 2, 2)
    logits[0, int(norms.argmax())] = 20.0
    logits[1, int(norms.argmin())] = 20.0
    with torch.no_grad():
        plain, gained = G0.chroma(logits), G.chroma(logits)
        e = G.annealed_mean(logits)[1]
    assert torch.allclose(e, torch.stack([norms.max(), norms.min()]), atol=1e-4)
    want = (ref / e.clamp_min(1e-4)).clamp(*CHROMA_GAIN_LIMITS)
    assert torch.allclose(gained, plain * want[:, None, None, None], atol=1e-6)
    assert float(want[0]) < 1.0  # the strongly coloured image is toned down

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), chroma_gain=0.75, chroma_gain_ref=0.05,
                                 simplify=False))
    assert (m["generator"]["chroma_gain"], m["generator"]["chroma_gain_ref"]) == (0.75, 0.05) and m["parity"]["max_abs"] < 1e-4
    feeds = {"luma": np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32), "style": np.eye(5, dtype=np.float32)[[0, 0]]}
    gained = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        plain = G0(torch.from_numpy(feeds["luma"]), torch.from_numpy(feeds["style"])).numpy()
    assert np.abs(gained[:, 1:] - plain[:, 1:]).max() > 1e-4 and np.abs(gained[:, :1] - plain[:, :1]).max() < 1e-5

    ck["config"] = {"photos": str(tmp_path / "gone")}
    torch.save(ck, ck_path)
    with pytest.raises(ExportError, match="chroma-gain-ref"):
        load_generator(ck_path, chroma_gain=1.0)
    assert load_generator(ck_path, chroma_gain=1.0, chroma_gain_ref=0.06)[0].cfg.chroma_gain_ref == 0.06
    for bad in ({"chroma_gain": -0.5}, {"chroma_gain": 2.5}, {"chroma_gain": 1.0, "chroma_gain_ref": 0.0}):
        with pytest.raises(ValueError, match="chroma_gain"):
            GeneratorConfig(**bad)
