"""Style evaluation: VGG Gram features, the cached style classifier and a model's style scores.

Runs on the real shared datasets and VGG weights (skipped where they are missing), at a small
crop size and a few images per class so it stays fast; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import style_eval as se
from training.losses import STATS_EPS


@pytest.fixture(scope="module")
def vgg(vgg_path: Path):
    """The VGG, with torch on one thread for this module (the CLI test sets it too); restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield se.load_vgg(vgg_path)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_cfg(datasets: Path, vgg_path: Path) -> se.ClassifierConfig:
    return se.ClassifierConfig(datasets=str(datasets), vgg=str(vgg_path), size=64, per_class=12, val_per_class=2, pca_dims=32)


@pytest.fixture(scope="module")
def cached(tmp_path_factory, small_cfg, vgg) -> tuple[Path, se.StyleClassifier]:
    path = tmp_path_factory.mktemp("style") / "clf.npz"
    clf, fitted = se.get_classifier(small_cfg, path, vgg=vgg)
    assert fitted and path.is_file()
    return path, clf


def test_features_shape_and_values(vgg, astronaut):
    """Any image size gives FEATURE_DIM finite log-scaled values; the crop is square at ``size``."""
    assert se.FEATURE_DIM == 2 * (64 + 128 + 256) + 64 * 65 // 2 + 128 * 129 // 2 == 11232
    imgs = [astronaut, astronaut[:300, :200], np.full((50, 90, 3), 128, np.uint8)]
    assert se.prepare(imgs[1], 64).shape == (64, 64, 3)
    f = se.vgg_style_features(imgs, vgg, size=64, batch=2)
    assert f.shape == (3, se.FEATURE_DIM) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= np.log(STATS_EPS) - 1e-5
    assert not np.allclose(f[0], f[2])


def test_classifier_fits_caches_and_reloads(cached, small_cfg, vgg):
    """It separates its own training images, records a val report, and the cache is reused."""
    path, clf = cached
    train, val = clf.meta["train"], clf.meta["val"]
    assert train["n"] == 12 * len(se.CLASSES) and train["accuracy"] >= 0.9
    assert val["classes"] == list(se.CLASSES) and np.asarray(val["confusion"]).shape == (5, 5)
    assert np.asarray(val["confusion"]).sum() == val["n"] == 2 * len(se.CLASSES)
    again, fitted = se.get_classifier(small_cfg, path, vgg=vgg)
    assert not fitted
    x = np.random.default_rng(0).normal(size=(4, se.FEATURE_DIM)).astype(np.float32)
    np.testing.assert_allclose(again.predict_proba(x), clf.predict_proba(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.predict_proba(x).sum(1), 1.0, rtol=1e-5)
    # A cache fitted with another VGG (different probe features) or other settings is not reused.
    assert se._compatible(again, small_cfg, vgg)
    assert not se._compatible(dataclasses.replace(again, probe=again.probe + 0.1), small_cfg, vgg)
    assert not se._compatible(again, dataclasses.replace(small_cfg, per_class=13), vgg)


def test_accuracy_report():
    r = se.accuracy_report(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ("a", "b", "c"))
    assert r["accuracy"] == 0.75 and r["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert r["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_cli_scores_a_model(cached, small_cfg, tiny_model_dir, tmp_path, capsys):
    """The CLI reuses the cache and scores 2 photos in every style; keys and ranges hold."""
    path, _ = cached
    out = tmp_path / "eval.json"
    args = ["--model-dir", str(tiny_model_dir), "--classifier", str(path), "--datasets", small_cfg.datasets,
            "--vgg", small_cfg.vgg, "--size", "64", "--per-class", "12", "--val-per-class", "2", "--pca-dims", "32",
            "--limit", "2", "--threads", "1", "--backend", "onnxruntime-cpu", "--json", str(out)]
    rc = se.main(args)
    assert rc == 0
    res = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == res
    assert res["classifier"]["fitted_now"] is False
    m = res["model"]
    styles = list(se.PAINTING_STYLES)
    assert m["photos"] == 2 and m["name"] == "tiny-test"
    for key in ("style_score", "style_prob", "as_photo", "ssim_luma"):
        assert list(m[key]) == styles
        assert all(0.0 <= v <= 1.0 for v in m[key].values()), key
    assert m["confusion"]["cols"] == list(se.CLASSES)
    assert np.asarray(m["confusion"]["matrix"]).shape == (4, 5)
    assert (np.asarray(m["confusion"]["matrix"]).sum(1) == 2).all()
    assert len(m["pairs"]) == 6
    for p in m["pairs"].values():
        assert 0.0 <= p["mad"] <= 255.0 and 0.0 <= p["a_as_b"] <= 1.0 and 0.0 <= p["b_as_a"] <= 1.0
    assert 0.0 <= m["inputs_as_photo"] <= 1.0
    assert list(m["edge_bands"]) == styles
    for b in m["edge_bands"].values():
        assert list(b) == ["top", "bottom", "left", "right", "abs"] and 0.0 <= b["abs"] <= 255.0
        assert b["abs"] == pytest.approx(np.mean([abs(b[k]) for k in ("top", "bottom", "left", "right")]), abs=0.06)
    assert list(m["tone_layout"]) == styles and all(0.0 <= v <= 255.0 for v in m["tone_layout"].values())
    assert m["fuse"] is None

    # --fuse tone --fuse-weight 1: the outputs keep the photos' tonal layout
    rc = se.main(args + ["--fuse", "tone", "--fuse-weight", "1"])
    assert rc == 0
    fused = json.loads(out.read_text())["model"]
    assert fused["fuse"]["method"] == "tone" and fused["fuse"]["weight"] == 1.0
    assert all(fused["tone_layout"][s] < 0.5 * m["tone_layout"][s] for s in styles), (fused["tone_layout"], m["tone_layout"])

    # --fuse colour --fuse-weight 1: the outputs keep the photos' own colours (photo_colour up), on the styles' luminance
    assert list(m["photo_colour"]) == styles and all(0.0 <= v <= 100.0 for v in m["photo_colour"].values())
    rc = se.main(args + ["--fuse", "colour", "--fuse-weight", "1"])
    assert rc == 0
    kept = json.loads(out.read_text())["model"]
    assert all(kept["photo_colour"][s] > m["photo_colour"][s] + 1.0 for s in styles), (kept["photo_colour"], m["photo_colour"])
    assert all(abs(kept["ssim_luma"][s] - m["ssim_luma"][s]) < 0.05 for s in styles), (kept["ssim_luma"], m["ssim_luma"])


def test_tone_layout_error():
    """The mean |difference| of 16-cell luminance means: 0 for the same layout under any fine texture
    that averages out over the cells, the offset for a uniform shift."""
    rng = np.random.default_rng(1)
    y_in = np.repeat(np.linspace(20, 220, 16), 20)[None, :].repeat(240, 0)  # 240 x 320, one tone per 20-px column
    checker = np.where((np.add.outer(np.arange(240), np.arange(320)) % 2) == 0, 10.0, -10.0)
    assert se.tone_layout_error(y_in + checker, y_in) == pytest.approx(0.0, abs=1e-9)
    assert se.tone_layout_error(y_in + 7.0, y_in) == pytest.approx(7.0)
    assert se.tone_layout_error(rng.uniform(0, 255, (240, 320)), y_in) > 20


def test_edge_bands_find_a_frame():
    """A dark band on the left and a light one at the top of a 240x180 output, against its input
    (band: 240 / 12 = 20 px); the same change everywhere reads as no band; bad shapes are refused."""
    rng = np.random.default_rng(0)
    y_in = rng.uniform(40, 200, (180, 240))
    out = y_in + 10.0  # the whole image lighter by 10: no band
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in se.edge_bands(out, y_in).values())
    out[:, :20] -= 30.0
    out[:20, 20:] += 15.0
    b = se.edge_bands(out, y_in)
    assert b["left"] == pytest.approx(-30.0) and b["right"] == pytest.approx(15.0 * 20 / 180)  # the top band reaches the right one
    assert b["top"] == pytest.approx(15.0 * 220 / 240 - 30.0 * 20 / 240) and b["bottom"] == pytest.approx(-30.0 * 20 / 240)
    with pytest.raises(ValueError, match="one shape"):
        se.edge_bands(out, y_in[:, :-1])
    with pytest.raises(ValueError, match="no interior"):
        se.edge_bands(np.zeros((4, 40)), np.zeros((4, 40)))


def test_style_reference_optimises_every_style(tmp_path: Path, datasets: Path, vgg_path: Path, cached):
    """The optimisation reference runs the training losses on the pixels of a real photo: every style
    rendered, the losses fall from the grey start, verdicts and PNGs written."""
    from training import style_reference

    ex = {s: sorted(p.name for p in (datasets / "styles" / s / "train").iterdir())[:1] for s in style_reference.PAINTING_STYLES}
    (tmp_path / "ex.json").write_text(json.dumps(ex))
    base = dict(exemplars=str(tmp_path / "ex.json"), datasets=str(datasets), vgg=str(vgg_path), out=str(tmp_path / "out"), photos=1,
                short_side=64, margin=8, crop=64, threads=1)
    import argparse

    from training.train import config_flags, config_from_args

    p = argparse.ArgumentParser()
    config_flags(p, style_reference.ReferenceConfig)
    parsed = config_from_args(style_reference.ReferenceConfig, p.parse_args(["--exemplars", "e.json", "--short-side", "0", "--w-stats", "2"]))
    assert parsed == style_reference.ReferenceConfig(exemplars="e.json", short_side=0, w_stats=2.0)
    with pytest.raises(SystemExit):
        p.parse_args([])  # --exemplars is required
    start = style_reference.run(style_reference.ReferenceConfig(**base, steps=1), clf=cached[1])
    done = style_reference.run(style_reference.ReferenceConfig(**base, steps=15), clf=cached[1])
    assert len(done["photos"][0]["verdict"]) == 4 and set(done["recognised"]) == set(style_reference.PAINTING_STYLES)
    assert done["photos"][0]["losses"]["style"] < start["photos"][0]["losses"]["style"]
    png = next((tmp_path / "out").glob("*.png"))
    assert Image.open(png).width == 5 * done["photos"][0]["size"][0]

