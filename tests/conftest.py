"""Shared fixtures: a tiny real generator exported through the real export path.

Nothing here mocks torch or ONNX Runtime: the tiny model is a randomly initialised
:class:`training.model.Generator`, exported with :func:`export.onnx_export.export_onnx` and run by
onnxruntime, so the tests exercise the same code users run, only with a smaller network.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
VGG = SHARED / "weights" / "vgg19_relu3_1_caffe.safetensors"
MOBILENET = SHARED / "weights" / "mobilenet_v2_100.safetensors"

TINY = dict(widths=(8, 8, 8, 8, 4), attention=True, style_widths=(4, 8, 8), style_res_blocks=1)
"""A tiny generator: colour decoder with attention, and a small style path (every painting style)."""


def _randomise_style_rows(net) -> None:
    """Give every painting style its own normalisation scales and shifts (a fresh StyleNet has
    ones and zeros, the same for all), so the style input really changes the styled output."""
    import torch

    for norm in net.norms():
        torch.nn.init.normal_(norm.gamma, mean=1.0, std=0.3)
        torch.nn.init.normal_(norm.beta, std=0.3)


def make_checkpoint(path: Path, seed: int = 0, **gen_kwargs) -> Path:
    """Write a colour-run checkpoint (the format ``python -m training`` saves, without optimiser
    state, class weights or run config) of a randomly initialised generator of the current design:
    ``TINY`` overridden by ``gen_kwargs`` (fields of GeneratorConfig)."""
    import torch

    from training.model import Generator, GeneratorConfig

    torch.manual_seed(seed)
    cfg = GeneratorConfig(**{**TINY, **gen_kwargs})
    G = Generator(cfg)
    # Non-zero FiLM weights in the colour decoder, and per-style rows in the style path.
    for m in G.modules():
        if m.__class__.__name__ == "FiLM":
            torch.nn.init.normal_(m.gamma.weight, std=0.3)
            torch.nn.init.normal_(m.beta.weight, std=0.3)
    _randomise_style_rows(G.style_net)
    sd = G.state_dict()
    torch.save({"G": sd, "G_ema": sd, "generator": dataclasses.asdict(cfg), "step": 0, "config": {}}, path)
    return path


def make_style_checkpoint(path: Path, seed: int = 0, styles: tuple[str, ...] | None = None, widths: tuple[int, int, int] = (4, 8, 8),
                          res_blocks: int = 1) -> Path:
    """Write a style-run checkpoint (the entries ``python -m training.style_train`` saves that export
    reads) of a randomly initialised style network for ``styles`` (default: the painting styles)."""
    import torch

    from sdk import contract
    from training.stylenet import StyleNet, StyleNetConfig

    torch.manual_seed(seed)
    styles = tuple(styles or contract.PAINTING_STYLES)
    net = StyleNet(StyleNetConfig(widths=widths, res_blocks=res_blocks, n_styles=len(styles)))
    _randomise_style_rows(net)
    torch.save({"net": net.state_dict(), "net_config": dataclasses.asdict(net.cfg), "styles": list(styles), "step": 0, "config": {},
                "exemplars": {}}, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_checkpoint) -> Path:
    from export.onnx_export import ExportConfig, export_onnx

    out = tmp_path_factory.mktemp("tiny_model")
    export_onnx(ExportConfig(checkpoint=str(tiny_checkpoint), out=str(out), name="tiny-test"))
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir):
    import sdk

    return sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1)


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model folder that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def edit_manifest(model_dir: Path, edit) -> None:
    """Apply ``edit`` (a function changing the parsed JSON in place) to ``model_dir/manifest.json``."""
    p = model_dir / "manifest.json"
    raw = json.loads(p.read_text())
    edit(raw)
    p.write_text(json.dumps(raw))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """NASA's astronaut photo shipped with the package: 512x512x3 uint8."""
    from PIL import Image

    import sdk

    return np.asarray(Image.open(sdk.example_image()).convert("RGB"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS} (they live in ../shared beside the clone)")
    return DATASETS


@pytest.fixture(scope="session")
def vgg_path() -> Path:
    if not VGG.is_file():
        pytest.skip(f"VGG19 weights not found at {VGG} (they live in ../shared/weights)")
    return VGG
