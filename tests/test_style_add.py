"""The style path and ``chromaforge style add``: a new style trains alone, the rest stays bit-identical."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import sdk
from sdk.errors import InvalidArgumentError, InvalidImageError, OutputExistsError
from sdk.manifest import load_manifest
from sdk.style_add import MAX_PAINTINGS, StyleAddConfig, add_style, check_name, check_paintings
from training.stylenet import StyleNet, StyleNetConfig, painting_weights


def test_styles_blend_their_normalisation_parameters():
    """A blend of two styles is the network with the blend of their rows; strength is not a style weight."""
    torch.manual_seed(0)
    net = StyleNet(StyleNetConfig(widths=(4, 8, 8), res_blocks=1, n_styles=2)).eval()
    for n in net.norms():
        torch.nn.init.normal_(n.gamma, 1.0, 0.3)
        torch.nn.init.normal_(n.beta, 0.0, 0.3)
    luma = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        a, b = net(luma, torch.tensor([[1.0, 0.0]])), net(luma, torch.tensor([[0.0, 1.0]]))
        mix = net(luma, torch.tensor([[0.5, 0.5]]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(mix, 0.5 * (a + b), atol=1e-4)  # parameters blend, not pixels
    w = painting_weights(torch.tensor([[0.4, 0.3, 0.3], [1.0, 0.0, 0.0]]))  # natural share is strength's business
    assert torch.allclose(w, torch.tensor([[0.5, 0.5], [0.0, 0.0]]))


def test_add_style_appends_a_row_and_keeps_the_others():
    net = StyleNet(StyleNetConfig(widths=(4, 8, 8), res_blocks=1, n_styles=2)).eval()
    for n in net.norms():
        torch.nn.init.normal_(n.gamma, 1.0, 0.3)
    luma = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        before = net(luma, torch.tensor([[0.0, 1.0]]))
        assert net.add_style() == 2 and net.cfg.n_styles == 3
        assert torch.equal(net(luma, torch.tensor([[0.0, 1.0, 0.0]])), before)
    assert all(p.shape[0] == 3 for p in net.style_parameters())


def test_check_name_and_paintings(tmp_path: Path, datasets: Path):
    with pytest.raises(InvalidArgumentError, match="not valid"):
        check_name("Fauvism!", ("natural",))
    with pytest.raises(InvalidArgumentError, match="already has a style 'ukiyoe'"):
        check_name("ukiyoe", ("natural", "ukiyoe"))
    check_name("fauvism", ("natural", "ukiyoe"))
    with pytest.raises(InvalidArgumentError, match="no paintings"):
        check_paintings(())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="found no painting files"):
        check_paintings((str(tmp_path / "empty"),))
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        check_paintings((str(tmp_path / "nowhere"),))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "notes.jpg").write_text("not an image")
    good = sorted((datasets / "styles_extra" / "fauvism" / "train").iterdir())
    shutil.copy(good[0], tmp_path / "bad" / good[0].name)
    with pytest.raises(InvalidImageError, match="1 of 2 paintings cannot be used: .*notes.jpg"):
        check_paintings((str(tmp_path / "bad"),))
    files = check_paintings((str(datasets / "styles_extra" / "fauvism" / "train"),))
    assert len(files) == MAX_PAINTINGS and files == sorted(files)


def _paintings(tmp_path: Path, datasets: Path, n: int = 3) -> Path:
    folder = tmp_path / "fauvism"
    folder.mkdir()
    for f in sorted((datasets / "styles_extra" / "fauvism" / "train").iterdir())[:n]:
        shutil.copy(f, folder / f.name)
    return folder


def _outputs(model_dir: Path, styles: list[str]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    luma = np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32)
    n = len(load_manifest(model_dir).styles)
    out = {}
    for k, name in enumerate(styles):
        style = np.zeros((2, n), np.float32)
        style[:, k] = 1.0
        out[name] = sess.run(None, {"luma": luma, "style": style})[0]
    style = np.zeros((2, n), np.float32)
    style[:, 0], style[:, 1] = 0.4, 0.6  # a strength blend of natural and the first painting style
    out["blend"] = sess.run(None, {"luma": luma, "style": style})[0]
    return out


def test_style_add_trains_only_the_new_style_and_resumes(tiny_model_dir: Path, tmp_path: Path, datasets: Path, vgg_path: Path):
    """`style add` writes a complete model folder with the new style; natural, every shipped style and
    their blends are bit-identical to the base model's; an interrupted job resumes; bad settings are refused."""
    base = load_manifest(tiny_model_dir)
    paintings = _paintings(tmp_path, datasets)
    photos = datasets / "photos" / "val" / "bsds500"
    cfg = StyleAddConfig(name="fauvism", paintings=(str(paintings),), out=str(tmp_path / "mine"), model_dir=str(tiny_model_dir),
                         photos=str(photos), vgg=str(vgg_path), steps=4, size=64, batch=2, ckpt_every=2)

    def stop_at_3(step: int, total: int, stats: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_style(cfg, progress=stop_at_3)
    assert not (tmp_path / "mine").exists() and (tmp_path / "mine.partial" / "last.pt").is_file()
    seen = []
    summary = add_style(cfg, progress=lambda step, total, stats: seen.append(step))
    assert summary["resumed"] and seen == [3, 4] and summary["steps"] == 4
    model = tmp_path / "mine"
    assert not (tmp_path / "mine.partial").exists()
    m = load_manifest(model)
    assert m.styles == (*base.styles, "fauvism") and summary["styles"] == list(m.styles)
    assert "Added style: fauvism" in (model / "MODEL_CARD.md").read_text()

    old, new = _outputs(tiny_model_dir, list(base.styles)), _outputs(model, list(base.styles))
    for name in old:
        assert np.array_equal(old[name], new[name]), name  # bit-identical: only the new row trained
    pipe = sdk.load(model_dir=model)
    img = np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)
    art = pipe.stylize(img, "fauvism")
    assert art.shape == img.shape and not np.array_equal(art, pipe.stylize(img, base.styles[1]))

    with pytest.raises(OutputExistsError, match="exists"):
        add_style(cfg)
    with pytest.raises(InvalidArgumentError, match="already has a style 'fauvism'"):
        add_style(StyleAddConfig(**{**cfg.__dict__, "model_dir": str(model), "out": str(tmp_path / "again")}))
    (tmp_path / "other.partial").mkdir()
    (tmp_path / "other.partial" / "job.json").write_text(json.dumps({"job": "someone else's"}))
    with pytest.raises(OutputExistsError, match="another style job"):
        add_style(StyleAddConfig(**{**cfg.__dict__, "out": str(tmp_path / "other")}))
    with pytest.raises(InvalidArgumentError, match="--photos"):
        add_style(StyleAddConfig(**{**cfg.__dict__, "out": str(tmp_path / "x"), "photos": str(tmp_path / "none")}))
    with pytest.raises(InvalidArgumentError, match="--steps"):
        add_style(StyleAddConfig(**{**cfg.__dict__, "out": str(tmp_path / "x"), "steps": 0}))
    assert not (tmp_path / "x").exists()


def test_style_add_cli_errors_are_messages(tmp_path: Path, tiny_model_dir: Path):
    """The CLI turns a bad call into `chromaforge: error: ...` and exit 2, never a traceback."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "sdk", "style", "add", *a], capture_output=True, text=True)  # noqa: E731
    r = run("Bad Name", str(tmp_path), "--out", str(tmp_path / "m"), "--model-dir", str(tiny_model_dir))
    assert r.returncode == 2 and "chromaforge: error: style name 'Bad Name' is not valid" in r.stderr and "Traceback" not in r.stderr
    r = run("mine", str(tmp_path / "missing"), "--out", str(tmp_path / "m"), "--model-dir", str(tiny_model_dir))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = subprocess.run([sys.executable, "-m", "sdk", "style", "add", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "examples:\n  chromaforge style add fauvism" in r.stdout
