"""The bundled default model: shipped in the package, checksummed, and really trained.

These run the real model (5.6 MB, ONNX Runtime CPU). The held-out check reads
``../shared/datasets/photos/val`` and skips with a reason where that folder is absent.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sdk
from sdk import contract
from training import metrics
from sdk.manifest import default_model_dir, load_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe():
    return sdk.load(backend="onnxruntime-cpu")


@pytest.fixture(scope="module")
def grey_astronaut(astronaut):
    return np.asarray(Image.fromarray(astronaut).convert("L"))


def test_bundled_manifest_and_checksum():
    """The bundled model is present, small, matches its checksum and the SDK's contract."""
    m = load_manifest(default_model_dir(), verify=True)
    assert m.styles == contract.STYLES
    assert m.color_space == contract.COLOR_SPACE and m.precision == "fp32"
    assert m.model_path.stat().st_size < 16 * 2**20  # small enough to bundle
    assert "Apache" in (m.directory / "NOTICE.txt").read_text()
    assert m.raw["training"]["step"] >= 500, "the bundled model must be a trained one (steps of its last stage)"
    assert m.raw["parity"]["max_abs"] <= m.raw["parity"]["tolerance"]


def test_colorizes_the_example_photo(pipe, astronaut, grey_astronaut):
    """Grey astronaut in, visibly coloured out, luminance kept, closer to the original than grey."""
    out = pipe.colorize(grey_astronaut)
    assert metrics.colourfulness(out) > 10.0
    assert np.abs(np.asarray(Image.fromarray(out).convert("L")).astype(int) - grey_astronaut).max() <= 2
    grey3 = np.repeat(grey_astronaut[:, :, None], 3, 2)
    assert metrics.psnr(out, astronaut) > metrics.psnr(grey3, astronaut) - 0.5


def test_four_distinct_styles(pipe, astronaut):
    """Each painting style differs clearly from the others and from natural colorization."""
    outs = {s: pipe.stylize(astronaut, s).astype(np.float32) for s in pipe.styles()}
    for a, b in itertools.combinations(outs, 2):
        diff = np.abs(outs[a] - outs[b]).mean()
        assert diff > 4.0, f"{a} and {b} differ by only {diff:.2f} levels on average"


def test_beats_grey_baseline_on_held_out_photos(datasets):
    """On held-out photos the model beats the luminance-only baseline in PSNR and colour accuracy, and is not washed out."""
    from training.evaluate import evaluate

    r = evaluate(None, str(datasets / "photos" / "val"), limit=40, backend="onnxruntime-cpu")
    assert r["model"]["psnr"] > r["baseline_grey"]["psnr"] + 0.2, r
    assert r["model"]["auc"] > r["baseline_grey"]["auc"] + 0.5, r
    assert r["model"]["colourfulness"] > 0.55 * r["ground_truth"]["colourfulness"], r


def test_evaluate_scores_the_trade_at_other_chroma_factors(datasets, astronaut):
    """--chroma-factors: factor 1 reproduces the model's row, a larger factor is more colourful with
    the same luminance; a factor that is not positive is refused before any work."""
    from training.evaluate import evaluate, scale_chroma

    r = evaluate(None, str(datasets / "photos" / "val"), limit=3, backend="onnxruntime-cpu", chroma_factors=(1.0, 1.3))
    same = {k: v for k, v in r["model"].items() if k != "psnr_wins_vs_grey"}
    assert r["chroma_factors"]["1"] == same
    assert r["chroma_factors"]["1.3"]["colourfulness"] > 1.2 * same["colourfulness"]
    luma = lambda rgb: np.asarray(Image.fromarray(rgb).convert("L"), np.int16)  # noqa: E731
    assert np.abs(luma(scale_chroma(astronaut, 0.5)) - luma(astronaut)).max() <= 2
    with pytest.raises(ValueError, match="must be > 0"):
        evaluate(None, str(datasets / "photos" / "val"), chroma_factors=(0.0,))


def test_wheel_ships_model_and_example(tmp_path):
    """`pip install .` carries the model, its manifest and the example photo (package data)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True)
    (whl,) = tmp_path.glob("chromaforge-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for needed in ["sdk/models/default/model.onnx", "sdk/models/default/manifest.json", "sdk/models/default/NOTICE.txt", "sdk/examples/astronaut.jpg",
                   "sdk/models/stylenet/model.onnx", "sdk/models/stylenet/manifest.json", "sdk/models/stylenet/MODEL_CARD.md",
                   "sdk/backends/onnxruntime.py", "training/model.py", "export/onnx_export.py"]:
        assert needed in names, f"{needed} missing from the wheel"
    assert any(n.endswith("entry_points.txt") for n in names)
