"""Video end to end (decode -> model -> stabiliser -> encode, :mod:`sdk.video`): seconds per clip.

The clip is the example photo panned and zoomed (real content, real motion), encoded once per
session as H.264 at 854x480 or 1280x720, 24 frames at 24 fps; frames per second is 24 / median.
``colorize 480p`` is gated (benchmarks/README.md, "The gate").
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sdk
from sdk import stages

av = pytest.importorskip("av")
pytest.importorskip("cv2")
from sdk import video  # noqa: E402

from conftest import info  # noqa: E402

FRAMES = 24
SIZES = {"480p": (854, 480), "720p": (1280, 720)}


def make_clip(path: Path, size: tuple[int, int], frames: int = FRAMES) -> Path:
    """The example photo, panned and slowly zoomed, as an H.264 MP4 (grey: what colorize gets)."""
    w, h = size
    src = Image.open(sdk.example_image()).convert("L")
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(frames):
            z = 1.0 + 0.01 * i  # zoom in a little every frame, and pan right
            cw, ch = 512 / z, 512 / z * h / w
            box = (4 * i, 60 + 2 * i, 4 * i + cw * 0.9, 60 + 2 * i + ch * 0.9)
            g = np.asarray(src.resize((w, h), Image.BILINEAR, box=box))
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.repeat(g[..., None], 3, -1)), format="rgb24")
            fr.pts, fr.time_base = i, Fraction(1, 24)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {k: make_clip(root / f"pan_{k}.mp4", v) for k, v in SIZES.items()}


def run_clip(benchmark, pipe, clips, tmp_path, size: str, task: str, style: str | None = None) -> None:
    params = stages.Params(style) if style else None
    out = tmp_path / "out.mp4"
    info(benchmark, pipe, size, frames=FRAMES, task=task, style=style, codec="libx264", preset="veryfast", stabilize=True)
    summary = benchmark(video.process, pipe, clips[size], out, task, params, overwrite=True)
    assert summary.frames == FRAMES
    benchmark.extra_info["fps_of_median"] = round(FRAMES / benchmark.stats.stats.median, 2)


@pytest.mark.gate
def test_video_colorize_480p(benchmark, cpu_pipeline, clips, tmp_path):
    run_clip(benchmark, cpu_pipeline, clips, tmp_path, "480p", "colorize")


def test_video_colorize_720p(benchmark, cpu_pipeline, clips, tmp_path):
    run_clip(benchmark, cpu_pipeline, clips, tmp_path, "720p", "colorize")


def test_video_stylize_480p(benchmark, cpu_pipeline, clips, tmp_path):
    run_clip(benchmark, cpu_pipeline, clips, tmp_path, "480p", "stylize", "ukiyoe")
