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

from conftest import MOBILENET
from training import style_eval as se
from training import style_metrics as sm
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


@pytest.fixture(scope="module")
def mobilenet(vgg):
    """The RGB MobileNetV2 (after ``vgg``, so torch is on one thread)."""
    if not MOBILENET.is_file():
        pytest.skip(f"MobileNetV2 weights not found at {MOBILENET}")
    return se.load_mobilenet(MOBILENET, "rgb")


@pytest.fixture(scope="module")
def small_mcfg(datasets: Path) -> se.MnetConfig:
    return se.MnetConfig(datasets=str(datasets), size=64, per_class=12, val_per_class=3, pca_dims=32,
                         extra=(("fauvism", str(datasets / "styles_extra" / "fauvism")),))


@pytest.fixture(scope="module")
def cached_mnet(tmp_path_factory, small_mcfg, mobilenet) -> tuple[Path, se.StyleClassifier]:
    path = tmp_path_factory.mktemp("style") / "mnet.npz"
    clf, fitted = se.get_mnet_classifier(small_mcfg, path, net=mobilenet)
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


def test_cli_scores_a_model(cached, cached_mnet, small_cfg, small_mcfg, datasets, tmp_path, capsys):
    """The CLI reuses both caches and scores 2 tune photos with the bundled model in every style
    its manifest lists, with the Reinhard and (2 steps on 1 photo) Gatys baselines; keys and
    ranges hold; the Markdown goes to stderr."""
    from sdk.manifest import default_model_dir, load_manifest

    path, _ = cached
    manifest = load_manifest(default_model_dir())
    out = tmp_path / "eval.json"
    args = ["--model-dir", str(default_model_dir()), "--classifier", str(path), "--datasets", small_cfg.datasets,
            "--vgg", small_cfg.vgg, "--size", "64", "--per-class", "12", "--val-per-class", "2", "--pca-dims", "32",
            "--mnet-classifier", str(cached_mnet[0]), "--mnet-val-per-class", "3", "--mnet-pca-dims", "32",
            "--extra-style", f"fauvism={datasets / 'styles_extra' / 'fauvism'}",
            "--limit", "2", "--threads", "1", "--backend", "onnxruntime-cpu", "--json", str(out)]
    ex = {s: sorted(p.name for p in (datasets / "styles" / s / "train").iterdir())[:1] for s in se.PAINTING_STYLES}
    (tmp_path / "ex.json").write_text(json.dumps(ex))
    md = tmp_path / "eval.md"
    rc = se.main(args + ["--gatys", "1", "--gatys-steps", "2", "--gatys-size", "64", "--gatys-exemplars", str(tmp_path / "ex.json"),
                         "--markdown", str(md)])
    assert rc == 0
    res = json.loads(out.read_text())
    captured = capsys.readouterr()
    assert json.loads(captured.out) == res
    assert md.read_text().strip() in captured.err and "| model | ukiyoe | 2 |" in captured.err
    assert res["classifier"]["fitted_now"] is False and res["classifier_mnet"]["fitted_now"] is False
    assert res["classifiers_val"]["classes"] == list(se.CLASSES) + ["fauvism"]
    final = set(se.read_final_split())
    assert res["model"]["split"] == "tune" and len(res["model"]["photo_files"]) == 2
    assert not final & set(res["model"]["photo_files"])
    for name, r in [("model", res["model"]), ("reinhard", res["baselines"]["reinhard"]), ("gatys", res["baselines"]["gatys"])]:
        assert r["styles"] == list(se.PAINTING_STYLES), name
        assert r["photos"] == (1 if name == "gatys" else 2)
        assert np.asarray(r["mnet"]["confusion"]["matrix"]).shape == (4, 6)
        assert all(0.0 <= v <= 1.0 for v in r["mnet"]["style_score"].values())
        for s in se.PAINTING_STYLES:
            a = r["artfid"][s]
            if name == "gatys":  # one output: no covariance, no FID
                assert a is None
                continue
            assert a["n_outputs"] == 2 and a["n_paintings"] == 3 and a["dims"] == 1
            assert a["content"] == pytest.approx(r["content_vgg"][s], abs=1e-4) and a["content"] > 0
            assert a["artfid"] == pytest.approx((1 + a["content"]) * (1 + a["fid"]), rel=1e-3)
            assert a["fid"] >= 0 and a["fid_photos"] >= 0
    assert res["baselines"]["reinhard"]["targets"].keys() == set(se.PAINTING_STYLES)
    m = res["model"]
    styles = [s for s in manifest.styles if s != "natural"]
    assert styles == list(se.PAINTING_STYLES)  # the bundled model's manifest; the cases below assume it
    assert m["photos"] == 2 and m["name"] == manifest.name
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

    # --split final: the photos come from the committed release-only list
    rc = se.main(args + ["--split", "final", "--limit", "1", "--no-reinhard"])
    assert rc == 0
    fin = json.loads(out.read_text())
    assert fin["model"]["split"] == "final" and set(fin["model"]["photo_files"]) <= final and fin["baselines"] == {}


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

    from training.config import config_flags, config_from_args

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



# ---------------------------------------------------------------------------------- issue 29: measure
def test_final_split_is_committed_disjoint_and_deterministic(datasets: Path):
    """training/final_test.json is what build_final_split gives (deterministic), 30 + 30 photos of
    the two sources, none the trainer or --limit 40 ever looked at; tune is the rest, disjoint."""
    photo_dir = datasets / "photos" / "val"
    committed = json.loads(se.FINAL_SPLIT_FILE.read_text())
    assert se.build_final_split(photo_dir)["files"] == committed["files"] == se.build_final_split(photo_dir)["files"]
    files = committed["files"]
    assert len(files) == len(set(files)) == 60
    assert sum(f.startswith("bsds500/") for f in files) == sum(f.startswith("imagenet_sample/") for f in files) == 30
    everything = se.list_images(photo_dir)
    final, tune = se.split_photos(photo_dir, "final"), se.split_photos(photo_dir, "tune")
    assert len(final) == 60 and len(tune) == len(everything) - 60 == 138
    assert not set(final) & set(tune) and set(final) | set(tune) == set(everything)
    assert [f.relative_to(photo_dir).as_posix() for f in final] == sorted(files)
    used = set(everything[: se.TRAINER_VAL_IMAGES]) | set(se.evenly_spaced(everything, se.HISTORIC_LIMIT))
    assert not used & set(final)
    # --limit thins the split, never reaches outside it; the classifiers' val photos are tune photos
    assert set(se.evenly_spaced(tune, 40)) <= set(tune) and len(se.evenly_spaced(tune, 40)) == 40
    assert not set(se.class_files(datasets, "val", 0)[0]) & set(final)
    with pytest.raises(ValueError, match="split"):
        se.split_photos(photo_dir, "all")


def _synthetic(kind: str, rng, n: int, size: int = 64) -> list[np.ndarray]:
    """Two clearly different image classes: smooth two-colour gradients, or high-contrast dot noise."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for _ in range(n):
        if kind == "smooth":
            a, b, t = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0, np.pi)
            w = (np.cos(t) * xx + np.sin(t) * yy)[..., None].clip(0, 1)
            out.append((a * (1 - w) + b * w).astype(np.uint8))
        else:
            dots = rng.random((size // 4, size // 4, 3)) > 0.5
            out.append((np.kron(dots, np.ones((4, 4, 1))) * 255).astype(np.uint8))
    return out


def test_mobilenet_classifier_separates_two_clear_classes(mobilenet, astronaut):
    """Pooled MobileNetV2 features + the logistic regression tell smooth gradients from dot
    noise on held-out images (a constant or broken feature extractor scores ~50 %)."""
    rng = np.random.default_rng(0)
    train = _synthetic("smooth", rng, 10) + _synthetic("dots", rng, 10)
    test = _synthetic("smooth", rng, 6) + _synthetic("dots", rng, 6)
    f_train, f_test = se.mobilenet_features(train, mobilenet), se.mobilenet_features(test, mobilenet)
    assert f_train.shape == (20, sm.MOBILENET_DIM) and np.isfinite(f_train).all()
    y = np.repeat([0, 1], 10)
    clf = se.fit_classifier(f_train, y, pca_dims=8, l2=0.1, n_classes=2)
    assert (clf.predict(f_test) == np.repeat([0, 1], 6)).all()
    with pytest.raises(ValueError, match="multiples of 32"):
        se.mobilenet_features([np.zeros((48, 48, 3), np.uint8)], mobilenet)
    # the luminance variant (what the generator's encoder reads) is colour-blind: the photo and its
    # grey version (same luminance up to 8-bit rounding) give the same features; the RGB one is not
    luma = se.load_mobilenet(MOBILENET, "luma")
    img = se.prepare(astronaut, 64)
    grey = np.repeat(se._luma(img)[..., None], 3, -1)

    def rel(net) -> float:
        a, b = se.mobilenet_features([img], net), se.mobilenet_features([grey], net)
        return float(np.linalg.norm(a - b) / np.linalg.norm(a))

    assert rel(luma) < 0.05 and rel(mobilenet) > 0.3


def test_mnet_classifier_fits_extra_style_and_caches(cached_mnet, small_mcfg, mobilenet):
    """The real fit: photo + 4 styles + fauvism (--extra-style), val report, FID basis and the
    reference paintings saved; the cache is reused, and refitted for other classes or weights."""
    path, clf = cached_mnet
    assert clf.classes == se.CLASSES + ("fauvism",)
    # 12 crops of 64 px per class (MobileNet's last map is 2x2 there): well above chance (1/6), not perfect
    assert clf.meta["train"]["n"] == 12 * 6 and clf.meta["train"]["accuracy"] >= 0.8
    assert np.asarray(clf.meta["val"]["confusion"]).shape == (6, 6) and clf.meta["val"]["n"] == 3 * 6
    assert clf.arrays["fid_basis"].shape == (se.FID_BASIS_DIMS, sm.MOBILENET_DIM)
    b = clf.arrays["fid_basis"].astype(np.float64)
    np.testing.assert_allclose(b @ b.T, np.eye(len(b)), atol=1e-4)
    assert all(clf.arrays[f"ref_{s}"].shape == (3, sm.MOBILENET_DIM) for s in clf.classes[1:])
    again, fitted = se.get_mnet_classifier(small_mcfg, path, net=mobilenet)
    assert not fitted and again.classes == clf.classes
    np.testing.assert_array_equal(again.arrays["ref_fauvism"], clf.arrays["ref_fauvism"])
    assert se._mnet_compatible(again, small_mcfg, mobilenet)
    assert not se._mnet_compatible(again, dataclasses.replace(small_mcfg, extra=()), mobilenet)
    assert not se._mnet_compatible(again, dataclasses.replace(small_mcfg, colour="luma"), mobilenet)
    assert not se._mnet_compatible(dataclasses.replace(again, probe=again.probe + 0.1), small_mcfg, mobilenet)
    with pytest.raises(ValueError, match="already a class"):
        se.parse_extra_style(f"ukiyoe={small_mcfg.extra[0][1]}")
    with pytest.raises(ValueError, match="not a folder"):
        se.parse_extra_style("cubism=/nonexistent")


def test_frechet_distance_zero_for_itself_and_grows_with_a_shift():
    """FID(X, X) = 0; a mean shift d adds |d|^2 (the covariance term stays 0); a rescale adds a
    covariance term; Ledoit-Wolf keeps few-sample covariances positive definite."""
    from training.style_metrics import fid_dims_for, frechet_distance, ledoit_wolf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    assert frechet_distance(x, x)["fid"] == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x, shrink=False)["fid"] == pytest.approx(0.0, abs=1e-6)
    fids = [frechet_distance(x, x + s)["fid"] for s in (0.1, 0.5, 1.0, 2.0)]
    assert fids == sorted(fids) and fids[0] > 0
    assert fids[2] == pytest.approx(8 * 1.0**2, rel=1e-6)
    scaled = frechet_distance(x, 2 * (x - x.mean(0)) + x.mean(0))
    assert scaled["mean_term"] == pytest.approx(0.0, abs=1e-9) and scaled["cov_term"] > 1.0
    y = rng.normal(size=(5, 20))  # fewer samples than dimensions
    cov, shrink = ledoit_wolf(y)
    assert 0.0 < shrink <= 1.0 and np.linalg.eigvalsh(cov).min() > 0
    assert fid_dims_for(2, 16) == 1 and fid_dims_for(40, 16) == 16 and fid_dims_for(27, 16) == 13
    with pytest.raises(ValueError, match="two samples"):
        ledoit_wolf(x[:1])


def test_artfid_uses_the_content_term(cached_mnet, vgg, astronaut):
    """content_distance is 0 for the photo itself and grows as the content goes; ArtFID is
    (1 + content) * (1 + FID), so the same FID with more content loss scores worse."""
    import torch

    from training.style_metrics import content_distance

    _, clf = cached_mnet
    photo = se.prepare(astronaut, 64)
    rng = np.random.default_rng(0)
    shuffled = photo.reshape(-1, 3)[rng.permutation(64 * 64)].reshape(photo.shape)
    with torch.no_grad():
        fs = vgg(se._batch([photo, np.clip(photo.astype(int) + 20, 0, 255).astype(np.uint8), shuffled, photo]))
    d = content_distance([f[:3] for f in fs], [f[3:] for f in fs])
    assert d[0] == pytest.approx(0.0, abs=1e-7) and 0.0 < d[1] < d[2] <= 2.0
    ref = clf.arrays["ref_ukiyoe"]
    out = clf.arrays["ref_rococo"]
    low, high = se.artfid(clf, out, ref, np.array([0.0, 0.0, 0.0])), se.artfid(clf, out, ref, np.array([0.5, 0.5, 0.5]))
    assert low["fid"] == high["fid"] > 0 and low["artfid"] == pytest.approx(1 + low["fid"], rel=1e-4)
    assert high["artfid"] == pytest.approx(1.5 * (1 + high["fid"]), rel=1e-4)
    assert se.artfid(clf, ref, ref, np.zeros(3))["fid"] == pytest.approx(0.0, abs=1e-6)
    assert se.artfid(clf, out[:1], ref, np.zeros(1)) is None


def test_reinhard_matches_the_target_statistics(astronaut):
    """The Lab mean and std of a Reinhard output are the target's (within rounding and a little
    gamut clipping); the Lab conversion round-trips; the baseline's target is the paintings' mean."""
    from training.metrics import rgb_to_lab
    from training.style_metrics import ReinhardBaseline, lab_stats, lab_to_rgb, reinhard_transfer

    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(astronaut)).astype(int), astronaut.astype(int), atol=1)
    target_mean, target_std = np.array([55.0, 8.0, 18.0]), np.array([18.0, 7.0, 10.0])
    out = reinhard_transfer(astronaut, target_mean, target_std)
    m, s = lab_stats(out)
    np.testing.assert_allclose(m, target_mean, atol=1.0)
    np.testing.assert_allclose(s, target_std, atol=1.0)
    m0, _ = lab_stats(astronaut)
    assert np.abs(m0 - target_mean).max() > 5  # the photo did not already have them
    rng = np.random.default_rng(0)
    paintings = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), np.full((16, 16, 3), (200, 120, 40), np.uint8)]
    r = ReinhardBaseline.from_paintings({"test": paintings})
    stats = [lab_stats(p) for p in paintings]
    np.testing.assert_allclose(r.targets["test"][0], np.mean([a for a, _ in stats], 0))
    np.testing.assert_allclose(r.targets["test"][1], np.mean([b for _, b in stats], 0))
    assert r.styles == ["test"] and r.stylize(astronaut, "test").shape == astronaut.shape


def test_markdown_report_lists_every_style_and_class():
    """The tables have one row per classifier class and per renderer x style, with '–' where a
    classifier has no class for a style (a model style only the MobileNet classifier learnt)."""
    worst = {"as": "photo", "share": 0.5}
    r = {"photos": 2, "styles": ["ukiyoe", "fauvism"], "style_score": {"ukiyoe": 1.0, "fauvism": None},
         "worst_confusion": {"ukiyoe": worst, "fauvism": worst}, "ssim_luma": {"ukiyoe": 0.5, "fauvism": 0.4},
         "content_vgg": {"ukiyoe": 0.3, "fauvism": 0.2},
         "mnet": {"style_score": {"ukiyoe": 0.5, "fauvism": 0.0}, "worst_confusion": {"ukiyoe": worst, "fauvism": worst}},
         "artfid": {"ukiyoe": {"fid": 2.0, "dims": 1, "fid_photos": 3.0, "artfid": 3.9}, "fauvism": None}}
    val = {"per_class": {"photo": 1.0}, "support": {"photo": 2}, "balanced_accuracy": 1.0}
    text = se.markdown_report({"classifiers_val": {"classes": ["photo", "fauvism"], "vgg": val,
                                                   "mnet": {"per_class": {"photo": 0.5, "fauvism": 1.0}, "support": {"photo": 2, "fauvism": 3},
                                                            "balanced_accuracy": 0.75}},
                               "model": r, "baselines": {"reinhard": r}})
    assert "| fauvism | – | 100.0 | 0 / 3 |" in text
    assert "| model | ukiyoe | 2 | 100.0 | 50.0 | photo 50.0 / photo 50.0 | 0.500 | 0.300 | 2.00 (1) | 3.00 | 3.90 |" in text
    assert "| reinhard | fauvism | 2 | – | 0.0 |" in text
    assert all(line.startswith("|") and line.endswith("|") for line in text.splitlines() if line)
