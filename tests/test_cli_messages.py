"""The command line as a newcomer meets it: ``--help`` with examples and the model's style names,
messages that say what was expected, what came and how to fix it (no Python internals), the note
on skipped outputs, Ctrl-C during a folder job (summary, exit 130, a rerun resumes), the
missing-extra hint, one model description for ``info`` and ``GET /v1/models``, and the package's
command registry."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import sdk
from sdk import cli, errors
from sdk.cli import _args, stylize as stylize_cmd
from sdk.images import MAX_PIXELS

REPO = Path(__file__).resolve().parents[1]


def cli_args(model_dir: Path, *args: str) -> list[str]:
    return ["--model-dir", str(model_dir), "--backend", "onnxruntime-cpu", "--threads", "1", *args]


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser by its full name ("stylize", "style add")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                found[name] = sp
                found.update({f"{name} {k}": v for k, v in subparsers(sp).items()})
    return found


@pytest.fixture
def grey_png(tmp_path, astronaut) -> Path:
    f = tmp_path / "in.png"
    Image.fromarray(astronaut).resize((80, 60)).convert("L").save(f)
    return f


# ------------------------------------------------------------------------------------ layout
def test_every_command_module_is_registered():
    """Each command module has NAME, add_parser and run, and the parser offers exactly them."""
    names = [c.NAME for c in cli.COMMANDS]
    assert names == ["colorize", "stylize", "fuse", "demo", "info", "style", "serve"]
    assert all(callable(c.add_parser) and callable(c.run) for c in cli.COMMANDS)
    assert {n for n in subparsers(cli.build_parser()) if " " not in n} == set(names)


def test_old_folder_names_are_gone_from_sdk_cli():
    """The re-export of sdk.folder's names is gone: import them from sdk.folder."""
    for name in ("collect_inputs", "plan_outputs", "save_atomic"):
        assert not hasattr(cli, name)


def test_python_dash_m_sdk_and_the_console_script_entry(tmp_path):
    """`python -m sdk --version` works, and pyproject's script still points at sdk.cli:main."""
    r = subprocess.run([sys.executable, "-m", "sdk", "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"chromaforge {sdk.__version__}"
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["chromaforge"] == "sdk.cli:main"
    packages = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "sdk").rglob("__init__.py")}
    assert packages <= set(project["tool"]["setuptools"]["packages"]), "`pip install .` would leave a package out"


# -------------------------------------------------------------------------------------- help
def test_every_command_has_examples_and_every_flag_a_help(capsys):
    """Each subcommand's --help ends with example command lines; no option or argument lacks a help."""
    parser = cli.build_parser()
    for name, sp in subparsers(parser).items():
        with pytest.raises(SystemExit) as ei:
            cli.main([*name.split(), "--help"])
        assert ei.value.code == 0
        text = capsys.readouterr().out
        examples = text[text.index("examples:"):].splitlines()[1:]
        assert 2 <= sum(line.strip().startswith("chromaforge ") for line in examples) <= 4, (name, examples)
        assert sp.formatter_class is argparse.RawDescriptionHelpFormatter
        for action in sp._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.option_strings or action.dest} has no help"
    assert "8192*8192" not in "".join(a.help or "" for a in parser._actions)
    max_pixels = next(a for a in parser._actions if "--max-pixels" in a.option_strings)
    assert _args.pixels_text(MAX_PIXELS) in max_pixels.help


def test_style_help_lists_the_manifests_styles_and_the_default(tmp_path, tiny_model_dir):
    """--style's help lists the bundled manifest's styles and the default; another model gives its own
    names; a broken model folder gives a generic text, never an error."""
    styles = sdk.load(backend="onnxruntime-cpu", threads=1).styles()
    text = stylize_cmd.style_help()
    assert all(s in text for s in styles) and "default ukiyoe" in text and "NAME=WEIGHT" in text
    st = next(a for a in subparsers(cli.build_parser())["stylize"]._actions if "--style" in a.option_strings)
    assert st.help == text and st.default == "ukiyoe"
    mine = tmp_path / "mine"
    shutil.copytree(tiny_model_dir, mine)
    raw = json.loads((mine / "manifest.json").read_text())
    raw["styles"] = ["natural", "fauvism"]
    (mine / "manifest.json").write_text(json.dumps(raw))
    assert "fauvism" in stylize_cmd.style_help(mine)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    for folder in (broken, tmp_path / "missing"):
        generic = stylize_cmd.style_help(folder)
        assert "default ukiyoe" in generic and "chromaforge info" in generic


# ---------------------------------------------------------------------------------- messages
def test_style_with_a_colon_hints_name_equals_weight(tiny_model_dir, grey_png, tmp_path, capsys):
    """--style ukiyoe:0.5 exits 2 with 'did you mean ukiyoe=0.5?' and writes nothing."""
    out = tmp_path / "x.png"
    assert cli.main(cli_args(tiny_model_dir, "stylize", str(grey_png), "--style", "ukiyoe:0.5", "-o", str(out))) == 2
    err = capsys.readouterr().err
    assert err.startswith("chromaforge: error:") and "did you mean ukiyoe=0.5?" in err and "NAME=WEIGHT" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-2"])
def test_threads_out_of_range_says_what_to_do(value, tiny_model_dir, grey_png, tmp_path, capsys):
    """--threads 0 names the flag, what came, what is expected and the fix; no Python 'None'."""
    assert cli.main(["--model-dir", str(tiny_model_dir), "colorize", str(grey_png), "-o", str(tmp_path / "o.png"),
                     "--threads", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"chromaforge: error: --threads is {value}; expected an integer >= 1 (CPU threads): "
                   "leave --threads out for one per core")
    assert not (tmp_path / "o.png").exists()


def test_unreadable_image_message_has_no_python_internals(tiny_model_dir, grey_png, tmp_path, capsys):
    """A text file named notes.jpg and a truncated PNG: the summary and stderr name the file, what came
    and what is expected, with no exception class names or object reprs."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.jpg").write_text("this is not an image\n")
    (src / "cut.png").write_bytes(grey_png.read_bytes()[:80])
    shutil.copy(grey_png, src / "ok.png")
    assert cli.main(cli_args(tiny_model_dir, "--quiet", "colorize", str(src), "-o", str(tmp_path / "out"))) == 2
    cap = capsys.readouterr()
    failed = {Path(f["input"]).name: f["error"] for f in last_json(cap.out)["failed"]}
    assert set(failed) == {"notes.jpg", "cut.png"}
    assert failed["notes.jpg"] == (f"{src / 'notes.jpg'} is not a readable image: Pillow cannot identify its format "
                                   "(got text starting 'this is not an image'); "
                                   "expected PNG, JPEG, WebP, TIFF, BMP or another format Pillow reads")
    assert "PNG data is truncated or damaged" in failed["cut.png"] and "copy or export it again" in failed["cut.png"]
    for msg in [*failed.values(), cap.err]:
        assert not re.search(r"UnidentifiedImageError|<_io\.|Error:|Traceback", msg), msg


def test_install_hint_has_both_forms_and_every_hint_uses_it():
    """One wording for a missing extra: from PyPI and from a source checkout."""
    assert errors.install_hint("serve") == 'pip install "chromaforge[serve]" (from a source checkout: pip install -e ".[serve]")'
    assert errors.install_hint("train", "export").endswith('pip install -e ".[train,export]")')
    from sdk import ray_executor
    from sdk.backends import _cuda, onnxruntime

    assert errors.install_hint("ray") in ray_executor.INSTALL and errors.install_hint("tensorrt") in _cuda.EXTRA
    ok, why = onnxruntime._available("CUDAExecutionProvider")
    if not ok:
        assert errors.install_hint("gpu") in why and "[" not in why.split("offers only")[1].split(";")[0]
    hand_made = [f"{p.relative_to(REPO)}:{n}" for p in sorted((REPO / "sdk").rglob("*.py"))
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"""["'][^"']*pip install ['"]?chromaforge\[""", line) and p.name != "errors.py"]
    assert not hand_made, f"build the hint with sdk.errors.install_hint: {hand_made}"


def test_serve_without_the_extra_names_both_installs(tmp_path):
    """With Starlette not importable, `chromaforge serve` exits 2 naming pip install -e ".[serve]" too."""
    code = "import sys; sys.modules['starlette'] = None\nfrom sdk import cli\nsys.exit(cli.main(['serve']))\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("chromaforge: error: chromaforge serve needs the serve extra")
    assert errors.install_hint("serve") in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------- folder jobs
def test_rerun_says_how_many_outputs_it_skipped(tiny_model_dir, grey_png, tmp_path, capsys):
    """A rerun prints 'skipped N existing outputs (use --overwrite to replace them)' on stderr; --overwrite does not."""
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a", "b", "c"):
        shutil.copy(grey_png, src / f"{n}.png")
    args = cli_args(tiny_model_dir, "--quiet", "colorize", str(src), "-o", str(tmp_path / "out"))
    assert cli.main(args) == 0
    assert "skipped" not in capsys.readouterr().err
    assert cli.main(args) == 0
    cap = capsys.readouterr()
    assert last_json(cap.out)["skipped_existing"] == 3
    assert "chromaforge: skipped 3 existing outputs (use --overwrite to replace them)" in cap.err.splitlines()
    (tmp_path / "out" / "b.png").unlink()
    assert cli.main(args) == 0
    assert "chromaforge: skipped 2 existing outputs (use --overwrite to replace them)" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite"]) == 0
    assert "skipped" not in capsys.readouterr().err


def test_ctrl_c_during_a_folder_job_prints_the_summary_and_a_rerun_resumes(tmp_path):
    """SIGINT while a folder job runs: exit 130, no traceback, the JSON summary so far with
    "interrupted": true, a note that a rerun resumes; only whole outputs are left, and the rerun
    writes the rest."""
    n = 30
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(n):
        shutil.copy(sdk.example_image(), src / f"img{i:02d}.jpg")
    cmd = [sys.executable, "-m", "sdk", "--backend", "onnxruntime-cpu", "--threads", "1", "--batch-size", "1",
           "stylize", str(src), "-o", str(out), "--style", "ukiyoe"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    err = bytearray()
    started = threading.Event()

    def read_stderr() -> None:
        while chunk := proc.stderr.read1(256):
            err.extend(chunk)
            if re.search(rb" [1-9]\d*/%d " % n, err):
                started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert started.wait(180), f"no progress within 180 s: {err.decode(errors='replace')}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)  # not communicate(): it would read stderr too, racing the reader thread
        stdout = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    stderr = err.decode(errors="replace")
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    summary = last_json(stdout.decode())
    assert summary["interrupted"] is True and summary["failed"] == [] and 1 <= summary["written"] < n
    assert "run the same command again to resume" in stderr.splitlines()[-1]
    written = sorted(out.iterdir())
    assert len(written) == summary["written"] and all(p.suffix == ".png" for p in written)  # no temporary files left
    for p in written:
        with Image.open(p) as im:
            im.load()

    again = subprocess.run(cmd[:3] + ["--quiet"] + cmd[3:], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = last_json(again.stdout)
    assert resumed["skipped_existing"] == summary["written"] and resumed["written"] == n - summary["written"]
    assert "interrupted" not in resumed and f"skipped {summary['written']} existing output" in again.stderr
    assert len(list(out.iterdir())) == n


def test_ctrl_c_outside_a_folder_job_is_one_line(monkeypatch, grey_png, tmp_path, capsys):
    """Ctrl-C before the job starts (here: while the model loads) prints one line and exits 130."""
    def interrupted_load(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sdk, "load", interrupted_load)
    assert cli.main(["colorize", str(grey_png), "-o", str(tmp_path / "o.png")]) == 130
    cap = capsys.readouterr()
    assert cap.err == "chromaforge: interrupted\n" and cap.out == "" and not (tmp_path / "o.png").exists()


def test_job_interrupted_is_a_keyboard_interrupt_with_the_summary():
    from sdk.folder import Summary

    s = Summary(written=2)
    e = errors.JobInterrupted(s)
    assert isinstance(e, KeyboardInterrupt) and e.summary is s


# ------------------------------------------------------------------------- info and service
def test_info_is_the_shared_description(tiny_model_dir, tiny_pipeline, capsys):
    """`chromaforge info` prints sdk.describe.describe(pipeline): the keys the service's /v1/models has too."""
    from sdk.describe import describe

    assert cli.main(cli_args(tiny_model_dir, "info")) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == json.loads(json.dumps(describe(tiny_pipeline)))
    assert {"name", "styles", "backend", "reason", "precision", "model_precision", "sha256", "work_size",
            "style_work_size", "style_pad", "fuse_methods", "artifacts", "model_dir"} <= set(info)
    assert "model_dir" not in describe(tiny_pipeline, paths=False)


def test_models_endpoint_is_the_shared_description(tiny_model_dir, tiny_pipeline):
    """GET /v1/models is describe(pipeline) without paths, plus the service's config."""
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is not installed")
    import socket

    import uvicorn

    from sdk.describe import describe
    from sdk.serve.app import ServeConfig, create_app

    app = create_app(ServeConfig(port=0, model_dir=str(tiny_model_dir), backend="onnxruntime-cpu", threads=1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service not ready within 60 s"
            time.sleep(0.05)
        got = httpx.get(url + "/v1/models", timeout=10).json()
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    config = got.pop("config")
    assert got == json.loads(json.dumps(describe(tiny_pipeline, paths=False)))
    assert config["backend"] == "onnxruntime-cpu" and "host" not in config


# -------------------------------------------------------------------------------------- serve
def test_serve_no_access_log_reaches_the_server(tiny_model_dir, tmp_path):
    """`chromaforge serve --no-access-log` (default on) runs the service without request lines on stderr."""
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is not installed")
    import socket

    parser = cli.build_parser()
    assert parser.parse_args(["serve"]).access_log is True and parser.parse_args(["serve", "--no-access-log"]).access_log is False
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    err = tmp_path / "stderr.txt"
    with err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "sdk", *cli_args(tiny_model_dir, "serve", "--port", str(port), "--no-access-log")],
                                stdout=subprocess.PIPE, stderr=stderr, cwd=tmp_path)
        try:
            deadline, ok = time.monotonic() + 60, False
            while not ok:
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                try:
                    ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    time.sleep(0.1)
            assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, err.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    text = err.read_text()
    assert "/v1/models" not in text and "GET /" not in text and "Traceback" not in text
