"""Backend registry and selection, session reuse, import hygiene, and the command line
(both ``python -m sdk`` in a subprocess and ``sdk.cli.main`` in-process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import sdk
from sdk import backends, cli, contract

CPU_ONLY = "CUDAExecutionProvider" not in ort.get_available_providers()


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m sdk ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "sdk", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def last_json(stdout: str) -> dict:
    """The JSON summary the CLI prints as its last stdout line."""
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def photo(astronaut) -> np.ndarray:
    return np.asarray(Image.fromarray(astronaut).resize((80, 60), Image.BILINEAR))


@pytest.fixture
def grey_png(tmp_path, photo) -> Path:
    f = tmp_path / "in.png"
    Image.fromarray(photo).convert("L").save(f)
    return f


@pytest.fixture
def image_tree(tmp_path, photo) -> Path:
    """in/a.png, in/b.jpg and in/sub/c.png (plus a non-image that must be ignored)."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(photo).convert("L").save(root / "a.png")
    Image.fromarray(photo[:40, :50]).save(root / "b.jpg", quality=95)
    Image.fromarray(photo[::-1]).save(root / "sub" / "c.png")
    (root / "notes.txt").write_text("not an image")
    return root


def cli_args(model_dir: Path, *args: str) -> list[str]:
    return ["--model-dir", str(model_dir), "--backend", "onnxruntime-cpu", "--threads", "1", *args]


# -------------------------------------------------------------------------------------- backends
def test_backend_names_in_auto_order():
    """names() lists native TensorRT, then the three ONNX Runtime backends, fastest first (auto's order)."""
    assert backends.names() == ["tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"]


def test_availability_reports_cpu():
    """availability() says the CPU backend runs here, and why."""
    av = backends.availability()
    assert set(av) == set(backends.names())
    ok, why = av["onnxruntime-cpu"]
    assert ok is True and "CPUExecutionProvider" in why
    if CPU_ONLY:
        ok, why = av["onnxruntime-cuda"]
        assert ok is False and "chromaforge[gpu]" in why


@pytest.mark.skipif(not CPU_ONLY, reason="auto would pick a GPU backend on this machine")
def test_auto_picks_cpu_and_says_why(tiny_model_dir):
    """auto picks onnxruntime-cpu here; backend_reason says auto picked it and what it skipped."""
    p = sdk.load(tiny_model_dir, threads=1)
    assert p.backend_name == "onnxruntime-cpu"
    assert p.backend_reason.startswith("auto picked onnxruntime-cpu")
    assert "skipped" in p.backend_reason and "onnxruntime-cuda" in p.backend_reason
    assert "onnxruntime-cpu" in repr(p)


def test_explicit_backend_reason(tiny_pipeline):
    """An explicitly requested backend says so in backend_reason."""
    assert tiny_pipeline.backend_name == "onnxruntime-cpu"
    assert "requested explicitly" in tiny_pipeline.backend_reason


def test_session_created_once_per_pipeline(tiny_model_dir, photo):
    """The ORT session is made once per Pipeline and reused by every call; another Pipeline has its own."""
    p = sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1)
    runner, session = p.runner, p.runner.session
    assert isinstance(session, ort.InferenceSession)
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert session.get_session_options().intra_op_num_threads == 1
    p.colorize(photo)
    p.stylize([photo, photo[:30]], "rococo")
    p.fuse(photo, photo)
    assert p.runner is runner and p.runner.session is session
    assert sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1).runner.session is not session


def test_import_sdk_does_not_import_torch(tiny_model_dir, tmp_path):
    """`import sdk` (and loading + running a model) in a fresh interpreter imports no torch/training/export,
    nor Ray (the ray executor imports it only when a Ray run starts)."""
    code = (
        "import sys, json, numpy as np\n"
        "import sdk\n"
        "heavy = lambda: sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'export', 'ray'))\n"
        "after_import = heavy()\n"
        f"p = sdk.load({str(tiny_model_dir)!r}, backend='onnxruntime-cpu', threads=1)\n"
        "p.colorize(np.zeros((8, 8), np.uint8))\n"
        "print(json.dumps({'import': after_import, 'run': heavy(), 'ort': 'onnxruntime' in sys.modules}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got == {"import": [], "run": [], "ort": True}


# ------------------------------------------------------------------------------- CLI: colorize
def test_cli_colorize_single_file_subprocess(tiny_model_dir, tiny_pipeline, grey_png, tmp_path):
    """`python -m sdk colorize in.png -o out.png` writes the colorized image (same pixels as the API)."""
    out = tmp_path / "result" / "out.png"
    r = run_module(*cli_args(tiny_model_dir, "colorize", str(grey_png), "-o", str(out)), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert last_json(r.stdout) == {"written": 1, "skipped_existing": 0, "failed": [], "backend": "onnxruntime-cpu"}
    im = Image.open(out)
    assert im.format == "PNG" and im.size == Image.open(grey_png).size and im.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(im), np.asarray(tiny_pipeline.colorize(grey_png)))
    assert not list(out.parent.glob(".*.tmp"))  # no leftovers from the atomic write


def test_cli_colorize_folder_progress_and_skip(tiny_model_dir, tiny_pipeline, image_tree, tmp_path, capsys):
    """A folder (with a subfolder) goes to an output folder with a progress bar; reruns skip, --overwrite rewrites."""
    out = tmp_path / "out"
    args = cli_args(tiny_model_dir, "colorize", str(image_tree), "-o", str(out))
    assert cli.main(args) == 0
    cap = capsys.readouterr()
    assert last_json(cap.out)["written"] == 3
    assert "3/3" in cap.err and "#" in cap.err  # the progress bar
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["a.png", "b.png", "sub/c.png"]
    for rel_in, rel_out in (("a.png", "a.png"), ("b.jpg", "b.png"), ("sub/c.png", "sub/c.png")):
        src = image_tree / rel_in
        np.testing.assert_array_equal(np.asarray(Image.open(out / rel_out)), np.asarray(tiny_pipeline.colorize(src)))

    before = {f: (out / f).read_bytes() for f in files}
    (out / "a.png").write_bytes(b"marker")  # a skipped output must be left alone
    assert cli.main(args) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["skipped_existing"] == 3 and summary["written"] == 0
    assert (out / "a.png").read_bytes() == b"marker"

    assert cli.main(args + ["--overwrite"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["written"] == 3 and summary["skipped_existing"] == 0
    assert {f: (out / f).read_bytes() for f in files} == before


def test_cli_quiet_has_no_progress_bar(tiny_model_dir, image_tree, tmp_path, capsys):
    """--quiet suppresses the progress bar."""
    assert cli.main(["--quiet", *cli_args(tiny_model_dir, "colorize", str(image_tree), "-o", str(tmp_path / "q"))]) == 0
    assert "3/3" not in capsys.readouterr().err


def test_cli_refuses_output_equal_to_input(tiny_model_dir, grey_png, capsys):
    """-o equal to the input path exits with code 2 and leaves the input byte-for-byte unchanged."""
    original = grey_png.read_bytes()
    assert cli.main(cli_args(tiny_model_dir, "colorize", str(grey_png), "-o", str(grey_png), "--overwrite")) == 2
    assert "also an input" in capsys.readouterr().err
    assert grey_png.read_bytes() == original


def test_cli_refuses_folder_output_onto_inputs(tiny_model_dir, image_tree, capsys):
    """A folder written onto itself (PNG inputs would be replaced) is refused with code 2, nothing changed."""
    before = {p: p.read_bytes() for p in image_tree.rglob("*") if p.is_file()}
    assert cli.main(cli_args(tiny_model_dir, "colorize", str(image_tree), "-o", str(image_tree), "--overwrite")) == 2
    assert "also an input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in image_tree.rglob("*") if p.is_file()} == before


def test_cli_file_output_for_many_inputs_refused(tiny_model_dir, image_tree, tmp_path, capsys):
    """-o x.png with several inputs is refused (exit 2) and writes nothing."""
    assert cli.main(cli_args(tiny_model_dir, "colorize", str(image_tree), "-o", str(tmp_path / "x.png"))) == 2
    assert "give a folder" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# -------------------------------------------------------------------------------- CLI: stylize
def test_cli_stylize_blend_with_fuse(tiny_model_dir, tiny_pipeline, grey_png, tmp_path, capsys):
    """stylize --style ukiyoe=0.6,rococo=0.4 --fuse laplacian writes fuse(input, stylize(input, blend))."""
    out = tmp_path / "art.png"
    args = cli_args(tiny_model_dir, "stylize", str(grey_png), "--style", "ukiyoe=0.6,rococo=0.4",
                    "--fuse", "laplacian", "-o", str(out))
    assert cli.main(args) == 0
    assert last_json(capsys.readouterr().out)["written"] == 1
    blend = {"ukiyoe": 0.6, "rococo": 0.4}
    plain = tiny_pipeline.stylize(grey_png, blend)
    expected = sdk.fuse(grey_png, plain, method="laplacian", detail=0.7)
    got = np.asarray(Image.open(out))
    np.testing.assert_array_equal(got, np.asarray(expected))
    assert np.abs(got.astype(int) - np.asarray(plain)).mean() > 0.5  # the fusion did something


def test_cli_stylize_fuse_tone_takes_the_fuse_weight(tiny_model_dir, tiny_pipeline, grey_png, tmp_path, capsys):
    """stylize --fuse tone --fuse-weight 1 writes fuse(input, stylize(input), method="tone", weight=1)."""
    out = tmp_path / "art.png"
    assert cli.main(cli_args(tiny_model_dir, "stylize", str(grey_png), "--style", "rococo", "--fuse", "tone",
                             "--fuse-weight", "1", "-o", str(out))) == 0
    expected = sdk.fuse(grey_png, tiny_pipeline.stylize(grey_png, "rococo"), method="tone", weight=1.0)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    half = sdk.fuse(grey_png, tiny_pipeline.stylize(grey_png, "rococo"), method="tone", weight=0.5)
    assert not np.array_equal(np.asarray(half), np.asarray(expected))


def test_cli_stylize_fuse_colour_keeps_the_photos_colours(tiny_model_dir, tiny_pipeline, photo, tmp_path, capsys):
    """stylize --fuse colour --fuse-weight 1 on a colour photo writes the stylized luminance with the photo's colours."""
    src = tmp_path / "colour.png"
    Image.fromarray(photo).save(src)
    out = tmp_path / "art.png"
    assert cli.main(cli_args(tiny_model_dir, "stylize", str(src), "--style", "rococo", "--fuse", "colour",
                             "--fuse-weight", "1", "-o", str(out))) == 0
    plain = tiny_pipeline.stylize(src, "rococo")
    expected = sdk.fuse(src, plain, method="colour", weight=1.0)
    got = np.asarray(Image.open(out))
    np.testing.assert_array_equal(got, np.asarray(expected))
    ycc = lambda a: a.astype(np.float32) @ np.asarray(contract.RGB_TO_YCBCR, np.float32).T  # noqa: E731
    assert np.abs(ycc(got)[..., 1:] - ycc(photo)[..., 1:]).mean() < np.abs(ycc(np.asarray(plain))[..., 1:] - ycc(photo)[..., 1:]).mean()


def test_cli_saturation(tiny_model_dir, tiny_pipeline, grey_png, tmp_path, capsys):
    """colorize / stylize --saturation write what the API gives; a value outside [0, 2] exits 2 and writes nothing."""
    out = tmp_path / "c.png"
    assert cli.main(cli_args(tiny_model_dir, "colorize", str(grey_png), "--saturation", "1.5", "-o", str(out))) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(tiny_pipeline.colorize(grey_png, saturation=1.5)))
    out = tmp_path / "s.png"
    assert cli.main(cli_args(tiny_model_dir, "stylize", str(grey_png), "--saturation", "0.5", "-o", str(out))) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(tiny_pipeline.stylize(grey_png, "ukiyoe", saturation=0.5)))
    capsys.readouterr()
    bad = tmp_path / "bad.png"
    assert cli.main(cli_args(tiny_model_dir, "colorize", str(grey_png), "--saturation", "3", "-o", str(bad))) == 2
    assert "saturation" in capsys.readouterr().err and not bad.exists()


def test_cli_stylize_unknown_style_subprocess(tiny_model_dir, grey_png, tmp_path):
    """An unknown style exits with code 2, lists the valid styles on stderr and writes nothing."""
    out = tmp_path / "never" / "x.png"
    r = run_module(*cli_args(tiny_model_dir, "stylize", str(grey_png), "--style", "cubism", "-o", str(out)), cwd=tmp_path)
    assert r.returncode == 2
    assert "cubism" in r.stderr and "valid styles" in r.stderr
    for s in ("natural", "ukiyoe", "impressionism", "pointillism", "rococo"):
        assert s in r.stderr
    assert not out.exists() and not out.parent.exists()
    assert r.stdout == ""


def test_cli_stylize_bad_weight_syntax(tiny_model_dir, grey_png, tmp_path, capsys):
    """A malformed blend (ukiyoe=lots) exits with code 2 and shows the expected syntax."""
    out = tmp_path / "x.png"
    assert cli.main(cli_args(tiny_model_dir, "stylize", str(grey_png), "--style", "ukiyoe=lots", "-o", str(out))) == 2
    assert "NAME=NUMBER" in capsys.readouterr().err
    assert not out.exists()


# ----------------------------------------------------------------------------------- CLI: fuse
def test_cli_fuse_two_files(photo, tmp_path, capsys):
    """`fuse content stylized -o out.png` writes sdk.fuse(content, stylized) with the given options."""
    content, stylized, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "f.png"
    Image.fromarray(photo).save(content)
    Image.fromarray(np.ascontiguousarray(photo[:, ::-1])).save(stylized)
    assert cli.main(["fuse", str(content), str(stylized), "--method", "weighted", "--weight", "0.3", "-o", str(out)]) == 0
    assert last_json(capsys.readouterr().out) == {"written": 1, "skipped_existing": 0, "failed": []}
    expected = sdk.fuse(content, stylized, method="weighted", weight=0.3)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), photo)


def test_cli_fuse_folders_with_same_names(tiny_model_dir, tiny_pipeline, image_tree, tmp_path, capsys):
    """fuse of a content folder and a stylized folder pairs files by relative path (PNG inputs)."""
    sty = tmp_path / "sty"
    pngs = [p for p in image_tree.rglob("*.png")]
    for p in pngs:
        target = sty / p.relative_to(image_tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        tiny_pipeline.stylize(p, "rococo").save(target)
    content = tmp_path / "content"
    for p in pngs:  # a content tree holding only the PNGs
        target = content / p.relative_to(image_tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.read_bytes())
    out = tmp_path / "fused"
    assert cli.main(["--quiet", "fuse", str(content), str(sty), "-o", str(out)]) == 0
    assert last_json(capsys.readouterr().out)["written"] == 2
    for rel in ("a.png", "sub/c.png"):
        expected = sdk.fuse(content / rel, sty / rel)
        np.testing.assert_array_equal(np.asarray(Image.open(out / rel)), np.asarray(expected))


def test_cli_stylize_then_fuse_folder_round_trip(tiny_model_dir, image_tree, tmp_path, capsys):
    """`stylize in -o sty` then `fuse in sty -o fused` works for a folder that holds JPEGs."""
    sty, fused = tmp_path / "sty", tmp_path / "fused"
    assert cli.main(["--quiet", *cli_args(tiny_model_dir, "stylize", str(image_tree), "-o", str(sty))]) == 0
    capsys.readouterr()
    assert cli.main(["--quiet", "fuse", str(image_tree), str(sty), "-o", str(fused)]) == 0
    assert last_json(capsys.readouterr().out)["written"] == 3


def test_cli_fuse_missing_stylized(photo, tmp_path, capsys):
    """fuse with a missing stylized file exits with code 2 and writes nothing."""
    content = tmp_path / "c.png"
    Image.fromarray(photo).save(content)
    assert cli.main(["fuse", str(content), str(tmp_path / "nope.png"), "-o", str(tmp_path / "f.png")]) == 2
    assert "no stylized image" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


# ------------------------------------------------------------------------------ CLI: info, demo
def test_cli_info_subprocess(tiny_model_dir, tmp_path):
    """`info` prints JSON with the styles, the backend and why it was chosen."""
    r = run_module("--model-dir", str(tiny_model_dir), "info", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["styles"] == ["natural", "ukiyoe", "impressionism", "pointillism", "rococo"]
    assert info["backend"] in backends.names() and info["reason"]
    assert Path(info["model_dir"]) == tiny_model_dir and info["precision"] == "fp32"
    assert info["work_size"] == 256


def test_cli_demo(tiny_model_dir, tiny_pipeline, tmp_path, capsys):
    """`demo -o DIR` writes the grey input, its colorization and one PNG per style; a rerun replaces
    its own files (and nothing else in the folder)."""
    out = tmp_path / "demo"
    assert cli.main(cli_args(tiny_model_dir, "demo", "-o", str(out))) == 0
    cap = capsys.readouterr()
    summary = last_json(cap.out)
    assert str(out) in cap.err  # says where the images are
    expected = ["input_grey.png", "colorized.png"] + [f"{s}.png" for s in tiny_pipeline.styles()[1:]]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected) == summary["files"]
    assert summary["replaced"] == 0
    grey = Image.open(out / "input_grey.png")
    assert grey.mode == "L" and grey.size == (512, 512)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "colorized.png")), np.asarray(tiny_pipeline.colorize(grey)))
    arts = [np.asarray(Image.open(out / f"{s}.png")) for s in tiny_pipeline.styles()[1:]]
    assert all(a.shape == (512, 512, 3) for a in arts)
    assert not np.array_equal(arts[0], arts[1])

    (out / "notes.txt").write_text("mine")
    before = {n: (out / n).read_bytes() for n in expected}
    assert cli.main(cli_args(tiny_model_dir, "--quiet", "demo", "-o", str(out))) == 0  # rerunnable
    assert last_json(capsys.readouterr().out)["replaced"] == len(expected)
    assert {n: (out / n).read_bytes() for n in expected} == before and (out / "notes.txt").read_text() == "mine"


def test_cli_demo_never_replaces_a_file_it_did_not_write(tiny_model_dir, photo, tmp_path, capsys):
    """A user's own colorized.png in the demo folder is refused (exit 2, nothing written) unless --overwrite."""
    out = tmp_path / "demo"
    out.mkdir()
    Image.fromarray(photo).save(out / "colorized.png")
    own = (out / "colorized.png").read_bytes()
    assert cli.main(cli_args(tiny_model_dir, "--quiet", "demo", "-o", str(out))) == 2
    err = capsys.readouterr().err
    assert "colorized.png" in err and "not written by chromaforge demo" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["colorized.png"] and (out / "colorized.png").read_bytes() == own
    assert cli.main(cli_args(tiny_model_dir, "--quiet", "demo", "-o", str(out), "--overwrite")) == 0
    assert (out / "colorized.png").read_bytes() != own


def test_cli_demo_default_leaves_the_checkout_clean(tiny_model_dir, tmp_path):
    """`python -m sdk demo` run twice from the repository root (the README's first step) writes to the
    temp dir, not the checkout, and the rerun succeeds."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    root_before = {p.name for p in repo.iterdir()}
    for _ in range(2):
        r = subprocess.run([sys.executable, "-m", "sdk", *cli_args(tiny_model_dir, "--quiet", "demo")], capture_output=True,
                           text=True, cwd=repo, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert Path(last_json(r.stdout)["out"]) == tmp_path / "chromaforge-demo"
    assert (tmp_path / "chromaforge-demo" / "colorized.png").is_file()
    assert not [n for n in sorted(p.name for p in repo.iterdir()) if n not in root_before and "demo" in n]
