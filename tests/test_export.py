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

from export.onnx_export import ExportConfig, ExportError, ParityError, _parity_inputs, export_onnx, load_generator, parity
from sdk import contract
from sdk.manifest import load_manifest, sha256_file

from conftest import make_checkpoint, make_style_checkpoint


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
    cold = export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "cold"), set=("temperature=0.1",), simplify=False))
    assert cold["generator"]["temperature"] == 0.1
    feeds = {"luma": np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32), "style": np.eye(5, dtype=np.float32)[:1]}
    sharp = ort.InferenceSession(str(tmp_path / "cold" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    G, _ = load_generator(tiny_checkpoint, overrides={"temperature": 1.0})
    with torch.no_grad():
        mean = G(torch.from_numpy(feeds["luma"]), torch.from_numpy(feeds["style"])).numpy()
    assert np.abs(sharp[:, 1:]).mean() > np.abs(mean[:, 1:]).mean()


def test_prior_correction_takes_back_the_rebalancing(tmp_path: Path):
    """prior_correction subtracts a * log w from the colour logits in the graph, with the class weights the
    colour run saved (export reads no photos); recorded; parity holds; without saved weights it says what is missing."""
    ck_path = make_checkpoint(tmp_path / "ck.pt")
    ck = torch.load(ck_path, weights_only=False)
    G0, _ = load_generator(ck_path)
    w = torch.linspace(0.5, 3.0, len(G0.bins))
    ck["class_weights"] = w
    torch.save(ck, ck_path)
    G, _ = load_generator(ck_path, overrides={"prior_correction": 1.0})
    assert torch.allclose(G.class_log_weights, torch.log(w))
    assert G0.cfg.prior_correction == 0 and not G0.class_log_weights.any()
    # The read-out is the annealed mean of (logits - a log w): uniform logits read out as softmax(-log w / T)'s mean.
    flat = torch.zeros(1, len(G.bins), 1, 1)
    p = torch.softmax(-torch.log(w) / G.cfg.temperature, 0)
    assert torch.allclose(G.chroma(flat)[0, :, 0, 0] / G.cfg.chroma_scale, p @ G.bins, atol=1e-6)

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), set=("prior_correction=1.0",), simplify=False))
    assert m["generator"]["prior_correction"] == 1.0 and m["parity"]["max_abs"] < 1e-4
    feeds = {"luma": np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32), "style": np.eye(5, dtype=np.float32)[:1]}
    corrected = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        plain = G0(torch.from_numpy(feeds["luma"]), torch.from_numpy(feeds["style"])).numpy()
    assert np.abs(corrected[:, 1:] - plain[:, 1:]).max() > 1e-3
    del ck["class_weights"]
    torch.save(ck, ck_path)
    with pytest.raises(ExportError, match="class weights"):
        load_generator(ck_path, overrides={"prior_correction": 0.5})


def test_set_takes_only_read_out_fields_of_the_right_type(tiny_checkpoint: Path, tmp_path: Path):
    """--set NAME=VALUE: read-out fields only, typed; anything else is refused before work."""
    for bad, msg in ((("widths=3",), "NAME one of"), (("temperature",), "NAME=VALUE"), (("chroma_guide=x",), "takes a int")):
        with pytest.raises(ExportError, match=msg):
            export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(tmp_path / "bad"), set=bad))
    with pytest.raises(ExportError, match="only the read-out"):
        load_generator(tiny_checkpoint, overrides={"widths": (8, 8, 8, 8, 4)})
    assert not (tmp_path / "bad").exists()
    out = subprocess.run([sys.executable, "-m", "export", "onnx", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "cli"),
                          "--set", "temperature=0.3", "chroma_scale=1.2", "--no-simplify"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    g = load_manifest(tmp_path / "cli").extra["generator"]
    assert (g["temperature"], g["chroma_scale"]) == (0.3, 1.2)


def test_guided_chroma_upsampling_follows_luminance_edges(tmp_path: Path):
    """--chroma-guide: the read-out chroma is upsampled along the input's luminance (a guided filter): with a flat
    luminance it is the box-smoothed bilinear upsampling; across a luminance step it changes sharply where plain
    bilinear blurs; recorded; parity holds; bad settings are refused."""
    import torch.nn.functional as F

    from training.model import GeneratorConfig

    ck_path = make_checkpoint(tmp_path / "ck.pt")
    G, _ = load_generator(ck_path, overrides={"chroma_guide": 1, "chroma_guide_eps": 1e-3})
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

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), set=("chroma_guide=2", "chroma_guide_eps=0.004"),
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


def test_colour_and_style_runs_join(tmp_path: Path):
    """--style-checkpoint: natural output comes from the colour run, full style from the style run, whose
    style names the manifest lists; a file that is not a style run is refused."""
    colour = make_checkpoint(tmp_path / "colour.pt", seed=3)
    style = make_style_checkpoint(tmp_path / "style.pt", seed=4, styles=("ukiyoe", "impressionism", "pointillism", "rococo", "fauvism"))
    G, ck = load_generator(colour, style_checkpoint=style)
    Gc, _ = load_generator(colour)
    assert G.cfg.styles == ("natural", "ukiyoe", "impressionism", "pointillism", "rococo", "fauvism")
    luma = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        assert torch.equal(G(luma, torch.eye(6)[[0]]), Gc(luma, torch.eye(5)[[0]]))
        assert not torch.allclose(G(luma, torch.eye(6)[[1]]), Gc(luma, torch.eye(5)[[1]]))
    assert ck["style_checkpoint"]["path"] == str(style)
    manifest = export_onnx(ExportConfig(checkpoint=str(colour), style_checkpoint=str(style), out=str(tmp_path / "joined"), simplify=False))
    assert manifest["training"]["style_run"]["path"] == str(style)
    assert manifest["styles"][-1] == "fauvism" and manifest["io"]["shapes"]["style"] == ["N", 6]
    with pytest.raises(ExportError, match="not a style-path checkpoint"):
        load_generator(colour, style_checkpoint=colour)


def test_task_switch_runs_only_the_paths_a_call_needs(tiny_checkpoint: Path, tiny_model_dir: Path, tmp_path: Path):
    """The default export runs the encoder only for batches with natural weight, the colour decoder alone
    for natural-only batches, the style path alone for batches without natural weight, and both blended
    otherwise; the style path's weights are held once; all give the plain export's numbers."""
    from export.switch import SPLIT_NODE

    model = onnx.load(str(tiny_model_dir / "model.onnx"))
    (split,) = [n for n in model.graph.node if n.name == SPLIT_NODE]
    skip, enc = ({a.name: a.g for a in split.attribute}[k] for k in ("then_branch", "else_branch"))
    assert {o.name for o in enc.output} == {o.name for o in skip.output} == {"enc_f4", "enc_f8", "enc_f16", "enc_f32"}
    assert len([n for n in enc.node if n.op_type == "Conv"]) > 30 and len(skip.initializer) == 4
    (switch,) = [n for n in model.graph.node if n.name == "switch_if"]
    branches = {a.name: a.g for a in switch.attribute}
    assert not any("style_net" in n.name for n in branches["then_branch"].node)
    painting = branches["else_branch"]
    assert any("style_net" in n.name for n in painting.node)  # the style path, once, before the inner If
    (inner,) = [n for n in painting.node if n.op_type == "If"]
    zeros, colour = ({a.name: a.g for a in inner.attribute}[k] for k in ("then_branch", "else_branch"))
    assert [n.op_type for n in zeros.node] == ["Conv"] and not any("colour_head" in n.name for n in zeros.node)
    assert not any("style_net" in n.name for n in colour.node) and any("colour_head" in n.name for n in colour.node)
    assert painting.node[-1].name.startswith("blend_")  # the blend reads the style path and the If's output
    assert load_manifest(tiny_model_dir).extra["graph"].startswith("task-switch")
    plain = tmp_path / "plain"
    export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(plain), task_switch=False))
    assert not [n for n in onnx.load(str(plain / "model.onnx")).graph.node if n.op_type == "If"]
    a = ort.InferenceSession(str(tiny_model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(plain / "model.onnx"), providers=["CPUExecutionProvider"])
    luma = np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32)
    for row in ([1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0.5, 0, 0, 0.5, 0], [0, 0, 0.3, 0, 0.7]):
        style = np.array([row, [1, 0, 0, 0, 0]], np.float32)  # a mixed batch takes the blend
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


def test_chroma_gain_evens_out_each_images_colour_budget(tmp_path: Path):
    """chroma_gain: each image's read-out chroma is multiplied by (ref / e) ** b, e its mean expected chroma
    magnitude (clamped to CHROMA_GAIN_LIMITS), image by image in a batch, ref the checkpoint's (the colour
    run measures it); recorded; parity holds; bad settings are refused."""
    from training.model import CHROMA_GAIN_LIMITS, GeneratorConfig

    ck_path = make_checkpoint(tmp_path / "ck.pt")
    G0, _ = load_generator(ck_path)
    assert G0.cfg.chroma_gain == 0
    G, _ = load_generator(ck_path, overrides={"chroma_gain": 1.0})
    ref = G.cfg.chroma_gain_ref
    assert ref == G0.cfg.chroma_gain_ref > 0
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

    m = export_onnx(ExportConfig(checkpoint=str(ck_path), out=str(tmp_path / "m"), set=("chroma_gain=0.75", "chroma_gain_ref=0.05"),
                                 simplify=False))
    assert (m["generator"]["chroma_gain"], m["generator"]["chroma_gain_ref"]) == (0.75, 0.05) and m["parity"]["max_abs"] < 1e-4
    feeds = {"luma": np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32), "style": np.eye(5, dtype=np.float32)[[0, 0]]}
    gained = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        plain = G0(torch.from_numpy(feeds["luma"]), torch.from_numpy(feeds["style"])).numpy()
    assert np.abs(gained[:, 1:] - plain[:, 1:]).max() > 1e-4 and np.abs(gained[:, :1] - plain[:, :1]).max() < 1e-5
    for bad in ({"chroma_gain": -0.5}, {"chroma_gain": 2.5}, {"chroma_gain": 1.0, "chroma_gain_ref": 0.0}):
        with pytest.raises(ValueError, match="chroma_gain"):
            GeneratorConfig(**bad)
