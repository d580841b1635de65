"""Video (sdk.video, sdk.temporal): streaming through the real model, what the output keeps
(timestamps, rotation, audio), atomic output, typed errors, and the stabiliser measured on clips of
known motion (a still photo panned) and a scene cut (two clips concatenated)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

import sdk  # noqa: E402
from sdk import stages, video  # noqa: E402
from sdk.errors import InvalidArgumentError, InvalidVideoError, OutputExistsError, OutputWriteError  # noqa: E402
from sdk.temporal import Stabilizer, TemporalParams, histogram_distance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEO = REPO.parent / "shared" / "datasets" / "video"
PHOTO = REPO / "sdk" / "examples" / "astronaut.jpg"


def pan_frames(n: int = 16, size: tuple[int, int] = (160, 112), step: int = 3, photo: Path = PHOTO) -> list[np.ndarray]:
    """Grey frames of a window panning right over a still photo: known motion of ``step`` px/frame."""
    from PIL import Image

    img = np.asarray(Image.open(photo).convert("L"))
    w, h = size
    return [np.ascontiguousarray(img[100:100 + h, 60 + i * step:60 + i * step + w]) for i in range(n)]


def write_clip(path: Path, frames: list[np.ndarray], pts_ms: list[int] | None = None, rotation: int = 0, audio: bool = False) -> None:
    """Encode grey or RGB frames as H.264 in MP4 (time base 1/1000, the given timestamps)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv420p"
        s.time_base = Fraction(1, 1000)
        s.codec_context.options = {"crf": "12", "preset": "ultrafast"}
        if rotation:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        for i, f in enumerate(frames):
            rgb = np.repeat(f[..., None], 3, -1) if f.ndim == 2 else f
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            fr.pts = pts_ms[i] if pts_ms else i * 40
            fr.time_base = Fraction(1, 1000)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
        if a is not None:
            t = np.arange(16000, dtype=np.float32) / 16000
            samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, start
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)


def read_back(path: Path) -> tuple[list[np.ndarray], list[int], dict]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        info = {"streams": sorted(s.type for s in c.streams), "size": (vs.width, vs.height)}
        frames, pts = [], []
        for f in c.decode(vs):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(int(round(f.pts * f.time_base * 1000)))
            info["rotation"] = f.rotation
    return frames, pts, info


@pytest.fixture(scope="module")
def pipe():
    return sdk.load(threads=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A panned still with variable frame timing, 90 degree rotation and a mono AAC track."""
    path = tmp_path_factory.mktemp("video") / "pan.mp4"
    pts = [0, 40, 80, 130, 170, 230, 270, 310, 360, 400, 440, 500]
    write_clip(path, pan_frames(len(pts)), pts, rotation=90, audio=True)
    return path


def test_colorize_video_keeps_timestamps_rotation_and_audio(pipe, clip, tmp_path):
    out = tmp_path / "colour.mp4"
    seen = []
    summary = video.process(pipe, clip, out, "colorize", progress=lambda done, total: seen.append((done, total)))
    frames_in, pts_in, info_in = read_back(clip)
    frames_out, pts_out, info_out = read_back(out)
    assert summary.frames == len(frames_in) == len(frames_out) == 12
    assert summary.audio_streams == 1 and info_out["streams"] == ["audio", "video"]
    assert pts_out == pts_in  # variable frame timing kept
    assert info_out["rotation"] == info_in["rotation"] == 90
    assert info_out["size"] == info_in["size"]
    assert seen[-1][0] == 12 and len(seen) == 12
    # colour was added: grey in, chroma out
    f = frames_out[6].astype(np.float32)
    assert np.abs(f[..., 0] - f[..., 2]).mean() > 2.0
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial file left


def test_existing_output_is_skipped_and_input_never_replaced(pipe, clip, tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"user file")
    s = video.process(pipe, clip, out, "colorize")
    assert s.skipped_existing and out.read_bytes() == b"user file"
    with pytest.raises(OutputExistsError, match="is the input"):
        video.process(pipe, clip, clip, "colorize", overwrite=True)


def test_interrupted_job_leaves_nothing_at_the_final_path(pipe, clip, tmp_path):
    out = tmp_path / "cut.mp4"

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        video.process(pipe, clip, out, "colorize", progress=stop)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, match", [(b"not a video at all", "not a video"), (None, "does not exist")])
def test_unreadable_inputs_are_typed(pipe, tmp_path, content, match):
    src = tmp_path / "bad.mp4"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(InvalidVideoError, match=match):
        video.process(pipe, src, tmp_path / "out.mp4", "colorize")
    assert not (tmp_path / "out.mp4").exists()


def test_audio_only_file_has_no_video_stream(pipe, tmp_path):
    src = tmp_path / "sound.m4a"
    with av.open(str(src), "w") as c:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for p in a.encode(af):
            c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    with pytest.raises(InvalidVideoError, match="no video stream"):
        video.process(pipe, src, tmp_path / "out.mp4", "colorize")


def test_bad_options_and_outputs_are_typed(pipe, clip, tmp_path):
    with pytest.raises(InvalidArgumentError, match="codec"):
        video.process(pipe, clip, tmp_path / "x.mp4", "colorize", options=video.VideoOptions(codec="no-such-codec"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidArgumentError, match=r"cannot be written to \.webm.*libvpx-vp9 for \.webm"):
        video.process(pipe, clip, tmp_path / "x.webm", "colorize", options=video.VideoOptions(copy_audio=False))  # no H.264 in WebM
    with pytest.raises(InvalidArgumentError, match=r"audio stream .* cannot be copied into \.webm.*--no-audio"):
        video.process(pipe, clip, tmp_path / "x.webm", "colorize", options=video.VideoOptions(codec="libvpx-vp9"))
    half = tmp_path / "half.mp4"
    half.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(InvalidVideoError):
        video.process(pipe, half, tmp_path / "y.mp4", "colorize")
    assert list(tmp_path.iterdir()) == [half]
    half.unlink()
    with pytest.raises(InvalidArgumentError, match="crf"):
        video.VideoOptions(crf=99)
    with pytest.raises(OutputWriteError, match="does not exist"):
        video.process(pipe, clip, tmp_path / "missing" / "x.mp4", "colorize")
    with pytest.raises(InvalidArgumentError):
        TemporalParams(keep=1.5)


def test_iterator_form_returns_each_frame_in_its_type(pipe):
    frames = pan_frames(5)
    out = list(video.frames(pipe, frames, "stylize", stages.Params("rococo"), video.VideoOptions(batch=2)))
    assert len(out) == 5
    assert all(o.shape == frames[0].shape + (3,) and o.dtype == np.uint8 for o in out)


def chroma_flicker(frames: list[np.ndarray], step: int) -> float:
    """Mean |ab_t - ab_{t-1} shifted by the known pan| over the overlap (Lab a, b of the outputs)."""
    from training.metrics import rgb_to_lab

    lab = [rgb_to_lab(f)[..., 1:] for f in frames]
    return float(np.mean([np.abs(lab[t][:, :-step] - lab[t - 1][:, step:]).mean() for t in range(1, len(lab))]))


def test_stabilizer_halves_chroma_flicker_on_known_motion(pipe):
    """The stabilised colour of a panned still follows the pan: its frame-to-frame chroma change along
    the known motion is well below frame-by-frame inference's."""
    frames = pan_frames(14, step=3)
    per_frame = list(video.frames(pipe, frames, "colorize", options=video.VideoOptions(stabilize=False)))
    stab = list(video.frames(pipe, frames, "colorize"))
    raw, steady = chroma_flicker(per_frame, 3), chroma_flicker(stab, 3)
    assert steady < 0.6 * raw, (raw, steady)


def test_scene_cut_resets_the_stabilizer(pipe):
    """Two different shots back to back: the histogram jump is detected as one cut, and the second
    shot's first frame is the model's own output (no ghost of the first shot)."""
    a = pan_frames(4)
    b = [255 - f for f in pan_frames(4)]  # another shot: the inverted photo
    assert histogram_distance(a[-1] / 255.0, b[0] / 255.0) > TemporalParams().cut
    stab = Stabilizer()
    jobs_opts = stages.check_options("colorize", stages.Params(), pipe.manifest)
    outs = []
    for f in a + b:
        job = stages.prepare(f, jobs_opts)
        raw = stages.infer(pipe.runner, [job])[0]
        outs.append((raw, stab(job.luma, raw, "colorize")))
    assert stab.cuts == 1
    raw, steady = outs[4]
    assert np.array_equal(raw, steady)
    assert not np.array_equal(*outs[5])  # and it stabilises again within the new shot


def test_stabilizer_checks_its_inputs():
    stab = Stabilizer()
    with pytest.raises(InvalidArgumentError, match="expected"):
        stab(np.zeros((8, 8), np.float32), np.zeros((3, 8, 9), np.float32), "colorize")
    with pytest.raises(InvalidArgumentError, match="task"):
        stab(np.zeros((8, 8), np.float32), np.zeros((3, 8, 8), np.float32), "paint")


def test_cli_folder_job_takes_videos_beside_images(clip, tmp_path, capsys):
    from sdk import cli

    src = tmp_path / "in"
    src.mkdir()
    (src / "pan.mp4").write_bytes(clip.read_bytes())
    (src / "photo.jpg").write_bytes(PHOTO.read_bytes())
    out = tmp_path / "out"
    assert cli.main(["--quiet", "colorize", str(src), "-o", str(out), "--crf", "28", "--no-audio"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == 2 and summary["failed"] == []
    _, _, info = read_back(out / "pan.mp4")
    assert info["streams"] == ["video"]
    assert (out / "photo.png").is_file()
    assert cli.main(["--quiet", "colorize", str(src), "-o", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped_existing"] == 2


@pytest.mark.skipif(not (SHARED_VIDEO / "davis_blackswan").is_dir(), reason="../shared/datasets/video not beside the clone")
def test_real_clip_through_the_cli(tmp_path, capsys):
    from sdk import cli

    src = next((SHARED_VIDEO / "davis_blackswan").glob("*.mp4"))
    out = tmp_path / "swan.mkv"
    assert cli.main(["--quiet", "stylize", str(src), "-o", str(out), "--style", "ukiyoe", "--preset", "ultrafast"]) == 0
    frames, _, info = read_back(out)
    assert len(frames) == 50 and info["size"] == (854, 480)
