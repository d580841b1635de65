"""Regression tests for issue 9 (reliability): each case a demanding user or a hostile caller hit
now gives a typed ``sdk.errors`` exception or a correct result; folder runs attempt every file;
memory stays bounded by design. The property-based side of the same contract is in test_fuzz.py.
"""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

import sdk
from conftest import edit_manifest
from sdk import cli, folder, fusion, tiling
from sdk.errors import (
    ChromaforgeError,
    InvalidArgumentError,
    InvalidImageError,
    ModelCorruptError,
    OutputExistsError,
    OutputWriteError,
)

IMG = np.full((40, 56), 110, np.uint8)


def cli_args(model_dir: Path, *args: str) -> list[str]:
    return ["--model-dir", str(model_dir), "--backend", "onnxruntime-cpu", "--threads", "1", *args]


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def encoded(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpeg(astronaut) -> bytes:
    return encoded(np.asarray(Image.fromarray(astronaut).resize((96, 64))), "JPEG", quality=90)


# ------------------------------------------------------------------------------------ folder runs
def test_folder_with_a_truncated_file_and_appledouble_finishes_and_resumes(tiny_model_dir, tmp_path, jpeg, capsys):
    """Six JPEGs, one truncated, and a macOS ._ file sorting first: five outputs, the failure in
    the summary and on stderr (each on its own line), exit 2; a re-run skips the five, retries the
    bad one, and exits 2 again; fixing the file lets a third run finish the folder."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"img{i}.jpg").write_bytes(jpeg)
    (src / "img2.jpg").write_bytes(jpeg[:1000])
    (src / "._img0.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble metadata")
    out = tmp_path / "out"
    args = cli_args(tiny_model_dir, "colorize", str(src), "-o", str(out))  # progress bar on
    assert cli.main(args) == 2
    cap = capsys.readouterr()
    summary = last_json(cap.out)
    assert summary["written"] == 5 and summary["skipped_existing"] == 0
    assert [f["input"] for f in summary["failed"]] == [str(src / "img2.jpg")]
    assert "truncated" in summary["failed"][0]["error"]
    assert sorted(p.name for p in out.iterdir()) == [f"img{i}.png" for i in (0, 1, 3, 4, 5)]
    err_lines = cap.err.splitlines()
    assert any(line.startswith("chromaforge: error:") and "img2.jpg" in line for line in err_lines)
    assert all(line.startswith("chromaforge: error:") for line in err_lines if "chromaforge: error" in line)

    assert cli.main(args) == 2
    again = last_json(capsys.readouterr().out)
    assert again["written"] == 0 and again["skipped_existing"] == 5 and len(again["failed"]) == 1
    (src / "img2.jpg").write_bytes(jpeg)
    assert cli.main(args) == 0
    assert last_json(capsys.readouterr().out) == {"written": 1, "skipped_existing": 5, "failed": [], "backend": "onnxruntime-cpu"}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.skipif(os.name != "posix", reason="stale temporary files are recognised by a dead POSIX pid")
def test_stale_temporary_files_of_a_killed_run_are_removed(tiny_pipeline, tmp_path):
    """A SIGKILLed run leaves .NAME.PID.tmp; the next run removes it (and only such files)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(IMG).save(src / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".a.png.{_dead_pid()}.tmp"
    live = out / f".a.png.{os.getppid()}.tmp"  # a running process's file is left alone
    other = out / f".notes.txt.{_dead_pid()}.tmp"  # not one of this run's targets
    for f in (stale, live, other):
        f.write_bytes(b"partial")
    summary = folder.run(folder.plan([str(src)], str(out)), folder.pipeline_process(tiny_pipeline, "colorize"))
    assert summary.as_dict() == {"written": 1, "skipped_existing": 0, "failed": [], "stale_removed": 1}
    assert not stale.exists() and live.exists() and other.exists()


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_folders_take_gif_avif_heic_and_report_what_does_not_decode(tiny_model_dir, tmp_path, capsys):
    """Suffixes accepted as single files are not skipped inside folders: GIF and AVIF are written,
    a HEIC that this Pillow cannot read is reported as failed."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(IMG).save(src / "a.gif")
    Image.fromarray(np.dstack([IMG] * 3)).save(src / "b.avif")
    (src / "c.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    assert cli.main(cli_args(tiny_model_dir, "--quiet", "colorize", str(src), "-o", str(tmp_path / "out"))) == 2
    summary = last_json(capsys.readouterr().out)
    assert summary["written"] == 2 and [Path(f["input"]).name for f in summary["failed"]] == ["c.heic"]
    assert "HEIC" in summary["failed"][0]["error"]


# -------------------------------------------------------------------------------- style weights
@pytest.mark.parametrize("blend, same_as", [({"ukiyoe": 1e39}, "ukiyoe"), ({"ukiyoe": 3e38, "rococo": 3e38}, {"ukiyoe": 1, "rococo": 1}),
                                             ({"ukiyoe": 1.7e308, "rococo": 1.7e308}, {"ukiyoe": 1, "rococo": 1}),
                                             ({"ukiyoe": 1e-320}, "ukiyoe")], ids=["1e39", "3e38x2", "max-double", "subnormal"])
def test_huge_and_tiny_style_weights_normalise(tiny_pipeline, blend, same_as):
    """Huge weights no longer overflow float32 to a black image: they mean what their ratio says."""
    vec = tiny_pipeline.style_vector(blend)
    assert np.isfinite(vec).all() and abs(vec.sum() - 1) < 1e-6
    np.testing.assert_array_equal(tiny_pipeline.stylize(IMG, blend), tiny_pipeline.stylize(IMG, same_as))


def test_style_weight_beyond_float_range_is_typed(tiny_pipeline):
    with pytest.raises(InvalidArgumentError, match="finite number"):
        tiny_pipeline.stylize(IMG, {"ukiyoe": 10**400})


def test_cli_huge_weight_writes_the_style_not_black(tiny_model_dir, tiny_pipeline, tmp_path, capsys):
    src = tmp_path / "g.png"
    Image.fromarray(IMG).save(src)
    assert cli.main(cli_args(tiny_model_dir, "stylize", str(src), "--style", "ukiyoe=1e39", "-o", str(tmp_path / "o.png"))) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(tiny_pipeline.stylize(src, "ukiyoe")))


# ------------------------------------------------------------------------------------ model guard
MANIFEST_DAMAGE = {
    "4-styles": (lambda r: r.update(styles=r["styles"][:4]), "style-vector length"),
    "6-styles": (lambda r: r.update(styles=r["styles"] + ["cubism"]), "style-vector length"),
    "input-names": (lambda r: r["io"].update(inputs=["y", "style"]), "inputs are"),
    "output-names": (lambda r: r["io"].update(outputs=["rgb"]), "outputs ['rgb']"),
    "one-input": (lambda r: r["io"].update(inputs=["luma"]), "io.inputs"),
    "size_multiple-0": (lambda r: r.update(size_multiple=0), "size_multiple"),
    "size_multiple-7": (lambda r: r.update(size_multiple=7), "size_multiple 7"),
    "size_multiple-inf": (lambda r: r.update(size_multiple=1e400), "size_multiple"),
    "no-natural": (lambda r: r.update(styles=["plain"] + r["styles"][1:]), "natural"),
    "styles-string": (lambda r: r.update(styles="natural"), "styles"),
    "duplicate-styles": (lambda r: r.update(styles=["natural"] * 5), "distinct"),
    "work_size-0": (lambda r: r.update(work_size=0), "work_size"),
    "work_size-1e6": (lambda r: r.update(work_size=1e6), "work_size"),
    "work_size-below-multiple": (lambda r: r.update(work_size=16), "work_size"),
    "not-an-object": (None, "JSON list"),
}


@pytest.mark.parametrize("case", list(MANIFEST_DAMAGE))
def test_manifest_checked_against_the_graph_at_load(model_copy, case):
    """Each damage is refused by load() with ModelCorruptError naming it (never an untyped ONNX
    Runtime, ZeroDivision, Index or Memory error at the first call, nor a silent 16x16 run)."""
    edit, needle = MANIFEST_DAMAGE[case]
    if edit is None:
        (model_copy / "manifest.json").write_text("[1, 2]")
    else:
        edit_manifest(model_copy, edit)
    with pytest.raises(ModelCorruptError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu", threads=1)
    assert needle in str(ei.value) and "expected" in str(ei.value)


# ------------------------------------------------------------------------------------ input guard
def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with a tiny (invalid) body: the size is refused
    before any pixel is decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _gif_claiming(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen declares width x height (the issue's 35-byte bomb)."""
    data = bytearray(encoded(np.zeros((1, 1), np.uint8), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


@pytest.mark.parametrize("data", [_gif_claiming(10000, 10000), _png_claiming(12000, 12000)], ids=["gif-10000", "png-12000"])
def test_pixel_limit_is_checked_from_the_header(tiny_pipeline, data, tmp_path):
    """Images just under Pillow's bomb limit are refused by the SDK's own limit, with no warning and
    without decoding (so without the 1.2-1.7 GB)."""
    f = tmp_path / "bomb.img"
    f.write_bytes(data)
    for src in (data, f):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InvalidImageError, match="above the limit"):
                tiny_pipeline.colorize(src)


def test_max_pixels_is_a_parameter(tiny_model_dir):
    """max_pixels lowers or lifts the limit (None: off) on load() and fuse(); it is checked."""
    small = sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1, max_pixels=1000)
    with pytest.raises(InvalidImageError, match="1000 pixels"):
        small.colorize(IMG)
    assert small.colorize(IMG[:20, :20]).shape == (20, 20, 3)
    with pytest.raises(InvalidImageError, match="max_pixels"):
        sdk.fuse(IMG, IMG, max_pixels=100)
    assert sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1, max_pixels=None).max_pixels is None
    import inspect

    assert inspect.signature(sdk.load).parameters["max_pixels"].default == sdk.images.MAX_PIXELS
    assert inspect.signature(sdk.load).parameters["max_batch"].default == sdk.pipeline.MAX_BATCH
    for bad in (0, -5, 2.5, "big"):
        with pytest.raises(InvalidArgumentError, match="max_pixels"):
            sdk.fuse(IMG, IMG, max_pixels=bad)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_truncated_and_flipped_avif_are_typed(tiny_pipeline):
    """Truncated AVIF raised SyntaxError, some byte flips RuntimeError: now InvalidImageError."""
    data = encoded(np.dstack([IMG] * 3), "AVIF")
    cases = [data[:n] for n in (20, 40, len(data) // 2, len(data) - 1)]
    rng = np.random.default_rng(0)
    for _ in range(40):
        flipped = bytearray(data)
        flipped[rng.integers(0, len(data))] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(flipped))
    for case in cases:
        try:
            out = tiny_pipeline.colorize(case)
        except InvalidImageError:
            continue
        assert Image.open(io.BytesIO(out)).size == (IMG.shape[1], IMG.shape[0])


def test_pil_images_that_cannot_load_are_typed(tiny_pipeline, tmp_path, jpeg):
    """A lazily opened truncated file (OSError) and a closed image (ValueError) -> InvalidImageError."""
    f = tmp_path / "t.jpg"
    f.write_bytes(jpeg[:1000])
    lazy = Image.open(f)
    with pytest.raises(InvalidImageError, match="cannot be loaded"):
        tiny_pipeline.colorize(lazy)
    lazy.close()
    closed = Image.open(io.BytesIO(jpeg))
    closed.load()
    closed.close()
    with pytest.raises(InvalidImageError):
        tiny_pipeline.colorize(closed)


@pytest.mark.parametrize("path", ["x" * 5000 + ".png", "a\x00b.png", Path("d" * 300) / ("e" * 300 + ".png")],
                         ids=["name-too-long", "nul-byte", "long-parts"])
def test_unusable_paths_are_typed(tiny_pipeline, path):
    with pytest.raises(InvalidImageError, match="path|no file"):
        tiny_pipeline.colorize(path)


def test_failed_decodes_leave_no_open_file(tiny_pipeline, tmp_path, jpeg):
    """No ResourceWarning (unclosed file) after a failed decode of a path."""
    f = tmp_path / "t.jpg"
    f.write_bytes(jpeg[:1000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with pytest.raises(InvalidImageError):
                tiny_pipeline.colorize(f)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_animated_gif_uses_the_first_frame(tiny_pipeline, tmp_path):
    """Documented: a multi-frame file gives its first frame (seek a PIL image for another)."""
    frames = [Image.fromarray(IMG), Image.fromarray(255 - IMG)]
    f = tmp_path / "anim.gif"
    frames[0].save(f, save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(np.asarray(tiny_pipeline.colorize(f)), tiny_pipeline.colorize(IMG))
    im = Image.open(f)
    im.seek(1)
    np.testing.assert_array_equal(np.asarray(tiny_pipeline.colorize(im)), tiny_pipeline.colorize(255 - IMG))


# -------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("threads", [-1, 0, "abc", 2.5, True], ids=["-1", "0", "str", "float", "bool"])
def test_bad_threads_are_typed(tiny_model_dir, threads):
    """threads=-1 was accepted and failed later with ValueError: max_workers; now refused at load."""
    with pytest.raises(InvalidArgumentError, match="threads"):
        sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=threads)
    with pytest.raises(InvalidArgumentError, match="workers"):
        sdk.fuse(IMG, IMG, workers=threads)


@pytest.mark.parametrize("threads", [1000, 10**6, 10**12])
def test_huge_thread_counts_are_capped(tiny_model_dir, threads):
    """threads=1000 started 1,000 OS threads, 10**6 took the process down: now capped, with a warning."""
    with pytest.warns(RuntimeWarning, match="using"):
        p = sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=threads)
    assert p.workers == tiling.max_threads() and p.runner.threads == tiling.max_threads()
    big = np.full((400, 400), 90, np.uint8)  # above one tile: the post-processing pool is used
    assert p.colorize(big).shape == (400, 400, 3)
    p.close()


@pytest.mark.parametrize("kwargs, needle", [(dict(model_dir=123), "model_dir"), (dict(model_dir=["m"]), "model_dir"),
                                            (dict(backend=123), "backend"), (dict(max_batch=0), "max_batch")])
def test_bad_load_arguments_are_typed(kwargs, needle):
    with pytest.raises(InvalidArgumentError, match=needle):
        sdk.load(**kwargs)


# ------------------------------------------------------------------------------------ CLI outputs
def test_cli_unwritable_output_is_exit_2_without_traceback(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """A read-only folder and a full disk (the OS errors, raised where the OS raises them) end in
    `chromaforge: error: ...` and exit 2, for a folder run, a single file and the demo; nothing
    half-written is left."""
    src = tmp_path / "g.png"
    Image.fromarray(IMG).save(src)
    real_replace = os.replace

    for err in (errno.EROFS, errno.ENOSPC):
        def failing(a, b, _err=err):
            if str(a).endswith(".tmp"):
                raise OSError(_err, os.strerror(_err), str(b))
            return real_replace(a, b)

        monkeypatch.setattr(folder.os, "replace", failing)
        out = tmp_path / f"out{err}"
        assert cli.main(cli_args(tiny_model_dir, "colorize", str(src), "-o", str(out / "x.png"))) == 2
        cap = capsys.readouterr()
        assert "chromaforge: error:" in cap.err and os.strerror(err) in cap.err and "Traceback" not in cap.err
        assert last_json(cap.out)["written"] == 0
        assert not list(out.glob(".*.tmp"))
        assert cli.main(cli_args(tiny_model_dir, "--quiet", "demo", "-o", str(out / "demo"))) == 2
        assert os.strerror(err) in capsys.readouterr().err
    with pytest.raises(OutputWriteError) as ei:
        folder.save_atomic(Image.fromarray(IMG), tmp_path / "y" / "z.png")
    assert isinstance(ei.value, OSError) and isinstance(ei.value, ChromaforgeError)


def test_cli_output_naming_an_existing_file(tiny_model_dir, tmp_path, capsys):
    """-o naming an existing non-image file is refused (exit 2) before any work."""
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a", "b"):
        Image.fromarray(IMG).save(src / f"{n}.png")
    existing = tmp_path / "results"
    existing.write_text("a file")
    for inputs in ([str(src)], [str(src / "a.png")]):
        assert cli.main(cli_args(tiny_model_dir, "colorize", *inputs, "-o", str(existing))) == 2
        assert "existing file" in capsys.readouterr().err
    assert existing.read_text() == "a file"
    with pytest.raises(OutputExistsError):
        folder.plan_outputs(folder.collect_inputs([str(src)]), str(existing), "png")


def test_cli_output_with_an_unwritable_image_suffix(tiny_model_dir, tmp_path, capsys):
    """-o x.gif used to create a folder x.gif/; now it is refused, naming the writable suffixes."""
    src = tmp_path / "g.png"
    Image.fromarray(IMG).save(src)
    assert cli.main(cli_args(tiny_model_dir, "colorize", str(src), "-o", str(tmp_path / "x.gif"))) == 2
    assert "cannot write .gif" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()


def test_output_collision_names_the_files(tmp_path):
    for n in ("a.jpg", "a.png"):
        Image.fromarray(IMG).save(tmp_path / n)
    with pytest.raises(InvalidArgumentError) as ei:
        folder.plan([str(tmp_path)], str(tmp_path / "out"))
    assert "a.jpg" in str(ei.value) and "a.png" in str(ei.value)


def test_cli_version_and_global_options_after_the_command(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["--version"])
    assert ei.value.code == 0 and capsys.readouterr().out.strip() == f"chromaforge {sdk.__version__}"
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a", "b"):
        Image.fromarray(IMG).save(src / f"{n}.png")
    args = ["colorize", str(src), "-o", str(tmp_path / "out"), "--quiet", "--model-dir", str(tiny_model_dir),
            "--backend", "onnxruntime-cpu", "--threads", "1", "--batch-size", "1"]
    assert cli.main(args) == 0
    cap = capsys.readouterr()
    assert last_json(cap.out)["written"] == 2 and "2/2" not in cap.err  # --quiet after the command took effect
    assert cli.main(["info", "--model-dir", str(tiny_model_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["model_dir"] == str(tiny_model_dir)
    assert cli.main(["colorize", str(src), "-o", str(tmp_path / "o2"), "--threads", "-1", "--model-dir", str(tiny_model_dir)]) == 2
    assert "threads" in capsys.readouterr().err


# ------------------------------------------------------------------------------- bounded memory
def test_lists_are_processed_in_chunks(tiny_model_dir, tiny_pipeline):
    """A list of N same-size images went to the backend as one batch of N; now at most max_batch
    images are decoded, run and finished at a time, and the results are unchanged."""
    p = sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1, max_batch=3)
    batches = []
    real = p.runner.run
    p.runner.run = lambda luma, style: batches.append(len(luma)) or real(luma, style)
    imgs = [np.roll(IMG, 3 * i, axis=1) for i in range(8)]
    outs = p.colorize(imgs)
    assert batches == [3, 3, 2]
    for img, out in zip(imgs, outs):
        np.testing.assert_array_equal(out, tiny_pipeline.colorize(img))


def _traced_peak(fn) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        out = fn()
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def test_laplacian_fusion_memory_does_not_grow_with_height():
    """Laplacian fusion is tiled like the rest of the full-resolution path: beyond the output, its
    numpy working set is a few row tiles (the old version held several full-size float planes)."""
    rng = np.random.default_rng(0)
    extra = {}
    for h in (1000, 4000):
        c = rng.integers(0, 256, (h, 1000, 3), dtype=np.uint8)
        s = rng.integers(0, 256, (h, 1000, 3), dtype=np.uint8)
        peak, out = _traced_peak(lambda: fusion.fuse_laplacian(c, s, 0.7, 2, 5, 2))
        extra[h] = peak - out.nbytes
    assert extra[4000] < 16e6 and extra[4000] < 1.5 * extra[1000]


def test_grey_fusion_does_not_copy_the_input_to_rgb():
    """A grey content is fused through a broadcast view: no HxWx3 copy of it."""
    grey = np.random.default_rng(1).integers(0, 256, (4000, 1000), dtype=np.uint8)
    peak, out = _traced_peak(lambda: sdk.fuse(grey, grey, method="weighted", workers=1))
    assert out.shape == (4000, 1000, 3) and peak - out.nbytes < 6e6  # two RGB copies were 24 MB
