"""The Ray Data executor (sdk.ray_executor, `--executor ray`): same outputs as the local executor, per-file
errors collected, existing outputs skipped, options checked before anything is touched.

One local Ray instance (2 CPUs, started once for the module: it costs seconds) and the bundled
model on 40 real photos of ../shared/datasets/photos/val. The import-hygiene and missing-Ray tests
at the top need no Ray and run everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdk import cli, folder
from sdk.errors import BackendUnavailableError, InvalidArgumentError, JobInterrupted

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout's ``sdk``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


# ------------------------------------------------------------------------- without Ray
def test_import_sdk_cli_and_ray_executor_does_not_import_ray(tmp_path):
    """`import sdk`, the CLI's parser and sdk.ray_executor itself load no Ray (it is imported inside the run)."""
    r = _python("import sys, sdk, sdk.cli, sdk.ray_executor; sdk.cli.build_parser(); sdk.ray_executor.check_executor_options(2, 0.5); "
                "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'pandas')]; assert not bad, bad; "
                "print(sdk.__file__)", tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == REPO / "sdk" / "__init__.py"


def test_missing_ray_is_a_typed_error_naming_the_extra(tmp_path):
    """With Ray not importable, the API raises BackendUnavailableError and the CLI exits 2, both
    naming `pip install "chromaforge[ray]"`; no output folder is created."""
    out = tmp_path / "out"
    code = ("import sys; sys.modules['ray'] = None\n"
            "from sdk import ray_executor, cli, errors\n"
            "try:\n    ray_executor.require_ray()\nexcept errors.BackendUnavailableError as e:\n    print('API', e)\n"
            f"sys.exit(cli.main(['--quiet', 'colorize', {str(REPO / 'sdk' / 'examples')!r}, '-o', {str(out)!r}, '--executor', 'ray']))\n")
    r = _python(code, tmp_path)
    assert r.returncode == 2, r.stderr
    assert 'API the ray executor needs Ray Data' in r.stdout and 'pip install "chromaforge[ray]"' in r.stdout
    assert r.stderr.startswith("chromaforge: error: the ray executor needs Ray Data") and "chromaforge[ray]" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


@pytest.mark.parametrize("argv, match", [
    (["--actors", "0"], "--actors is 0; expected an integer >= 1"),
    (["--actors", "-3"], "--actors is -3"),
    (["--gpus-per-actor", "-1"], "--gpus-per-actor is -1.0; expected a number >= 0"),
    (["--gpus-per-actor", "nan"], "--gpus-per-actor is nan"),
    (["--threads", "0"], "--threads is 0"),
])
def test_bad_executor_options_fail_before_anything(argv, match, tmp_path, capsys):
    """Engine options are checked first, even before Ray is imported: nothing under -o is touched
    (a dead run's temporary file there stays)."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".astronaut.png.999999999.tmp"
    stale.write_bytes(b"left by a killed run")
    assert cli.main(["--quiet", "colorize", str(REPO / "sdk" / "examples"), "-o", str(out), "--executor", "ray", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chromaforge: error: ") and match in err, err
    assert sorted(p.name for p in out.iterdir()) == [stale.name]


def test_ray_options_need_executor_ray(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--quiet", "colorize", str(REPO / "sdk" / "examples"), "-o", str(out), "--actors", "2", "--address", "auto"]) == 2
    assert "--address, --actors only apply to --executor ray" in capsys.readouterr().err and not out.exists()


def test_check_executor_options_api():
    from sdk import ray_executor

    for kwargs in ({"actors": True}, {"actors": 1.5}, {"gpus_per_actor": float("inf")}, {"gpus_per_actor": "1"}, {"batch_size": 0}):
        with pytest.raises(InvalidArgumentError, match="expected"):
            ray_executor.check_executor_options(**kwargs)
    ray_executor.check_executor_options(actors=3, gpus_per_actor=0.25, threads=1, batch_size=1)


# ------------------------------------------------------------------------- with Ray
# Ray Data's DataContext warns about its own deprecated fields when it is first created.
ray_quirks = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos" / "val" / "bsds500"


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module, started the way `--executor ray` starts it."""
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "chromaforge[ray]"): the Ray executor tests need it')
    from sdk import ray_executor

    if ray.is_initialized():
        pytest.skip("Ray is already initialised by another test module")
    assert ray_executor.connect(quiet=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """40 BSDS500 photos (481x321 and 321x481 JPEG) and one truncated JPEG, in a temporary folder."""
    if not PHOTOS.is_dir():
        pytest.skip(f"real photos not found at {PHOTOS} (they live in ../shared beside the clone)")
    root = tmp_path_factory.mktemp("photos") / "in"
    (root / "sub").mkdir(parents=True)
    files = sorted(PHOTOS.glob("*.jpg"))[:40]
    assert len(files) == 40
    for i, f in enumerate(files):
        shutil.copy(f, root / ("sub" if i % 5 == 0 else "") / f.name)
    (root / "broken.jpg").write_bytes(files[0].read_bytes()[:2000])  # a truncated JPEG
    return root


def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _summary(capsys) -> tuple[dict, str]:
    cap = capsys.readouterr()
    return json.loads(cap.out.strip().splitlines()[-1]), cap.err


@pytest.mark.slow
@ray_quirks
def test_ray_executor_matches_local_and_reports_broken_files(ray_local, photos, tmp_path, capsys):
    """`--executor ray` (2 actors, 1 thread each) writes the same files as `--executor local`, pixels
    within 1 level; the truncated JPEG is in `failed` (and on stderr) on both, exit code 2, every
    other file is written; inputs are untouched. Then a rerun skips everything without
    rewriting, and after deleting 3 outputs only those 3 are written again."""
    before = _digest(photos)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    common = ["--quiet", "--batch-size", "4"]
    assert cli.main([*common, "--threads", "2", "colorize", str(photos), "-o", str(local)]) == 2
    want, _ = _summary(capsys)
    assert cli.main([*common, "--threads", "1", "colorize", str(photos), "-o", str(distributed), "--executor", "ray", "--actors", "2"]) == 2
    got, err = _summary(capsys)

    assert want["written"] == got["written"] == 40 and got["skipped_existing"] == 0
    assert got["executor"] == "ray" and got["actors"] == 2 and got["backend"] == "onnxruntime-cpu"
    assert got["failed"] == want["failed"] and [f["input"] for f in got["failed"]] == [str(photos / "broken.jpg")]
    assert "broken.jpg" in err and "not a readable image" in err
    names = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(distributed)) for p in distributed.rglob("*") if p.is_file())
    assert len(names) == 40 and "sub/" + sorted(PHOTOS.glob("*.jpg"))[0].with_suffix(".png").name in names
    for name in names:
        a = np.asarray(Image.open(local / name), dtype=np.int16)
        b = np.asarray(Image.open(distributed / name), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1, name
    assert _digest(photos) == before

    mtimes = {p: p.stat().st_mtime_ns for p in distributed.rglob("*.png")}
    assert cli.main([*common, "colorize", str(photos), "-o", str(distributed), "--executor", "ray", "--actors", "2"]) == 2
    again, _ = _summary(capsys)
    # broken.jpg has no output, so it is tried again (as on the local executor), by one actor
    assert (again["written"], again["skipped_existing"], again["actors"], len(again["failed"])) == (0, 40, 1, 1)
    assert {p: p.stat().st_mtime_ns for p in distributed.rglob("*.png")} == mtimes

    gone = sorted(mtimes)[:3]
    for p in gone:
        p.unlink()
    stale = distributed / f".{gone[0].name}.999999999.tmp"  # a killed run's leftover, removed first
    stale.write_bytes(b"x")
    assert cli.main([*common, "colorize", str(photos), "-o", str(distributed), "--executor", "ray", "--actors", "2"]) == 2
    third, _ = _summary(capsys)
    assert (third["written"], third["skipped_existing"], third.get("stale_removed")) == (3, 37, 1) and not stale.exists()
    assert third["actors"] == 1  # 3 files and broken.jpg, batch size 4: one actor is enough
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p not in gone)
    assert all(p.is_file() for p in gone) and _digest(photos) == before


@pytest.mark.slow
@ray_quirks
def test_ray_executor_refuses_bad_options_before_touching_files(ray_local, photos, tmp_path, capsys):
    """Unknown style, an output that is an input, more GPUs than the cluster has: typed errors,
    exit 2, nothing written or removed."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".broken.png.999999999.tmp"  # a dead run's file beside a target: removed only once a run starts
    stale.write_bytes(b"x")
    before = _digest(photos)
    one = next(photos.glob("*.jpg"))
    cases = [
        (["stylize", str(photos), "-o", str(out), "--style", "cubism"], "unknown style 'cubism'; valid styles: natural"),
        (["stylize", str(photos), "-o", str(out), "--style", "ukiyoe", "--strength", "2"], "strength is 2.0; expected a number in [0, 1]"),
        (["colorize", str(one), "-o", str(one)], "is also an input"),
        (["colorize", str(photos), "-o", str(out), "--gpus-per-actor", "1"], "needs 1 GPUs; the Ray cluster has 0"),
        (["--backend", "nope", "colorize", str(photos), "-o", str(out)], "unknown backend 'nope'"),
    ]
    for argv, match in cases:
        assert cli.main(["--quiet", *argv, "--executor", "ray"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("chromaforge: error: ") and match in err, (argv, err)
    assert sorted(p.name for p in out.iterdir()) == [stale.name] and _digest(photos) == before


@pytest.mark.slow
@ray_quirks
def test_backend_that_cannot_run_on_the_actors_is_a_typed_error(ray_local, photos, tmp_path):
    """A backend the actors cannot create (CUDA on a CPU-only machine) stops the run with the
    SDK's BackendUnavailableError, not a Ray traceback."""
    from sdk import ray_executor

    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():  # pragma: no cover
        pytest.skip("CUDA is available here")
    items = folder.plan([str(photos / "sub")], str(tmp_path / "out"))
    with pytest.raises(BackendUnavailableError, match="onnxruntime-cuda"):
        ray_executor.run(items, "colorize", backend="onnxruntime-cuda", quiet=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@ray_quirks
def test_build_dataset_is_lazy_and_returns_a_status_per_row(ray_local, photos, tmp_path):
    """The Python entry point: a lazy Dataset; running it writes every item (stylize with
    fusion here) and returns written / failed rows with the reason."""
    from sdk import ray_executor, stages
    from sdk.fusion import FuseParams

    items = folder.plan([str(photos / "sub"), str(photos / "broken.jpg")], str(tmp_path / "out"))
    params = stages.Params("ukiyoe", 0.8, FuseParams("laplacian", detail=0.8))
    ds = ray_executor.build_dataset(items, "stylize", params, actors=1, threads=2, batch_size=3)
    assert not (tmp_path / "out").exists()  # nothing ran yet
    rows = sorted(ds.take_all(), key=lambda r: r["index"])
    assert [r["status"] for r in rows] == ["written"] * 8 + ["failed"]
    assert "broken.jpg" in rows[-1]["error"] and rows[-1]["error_type"] == "InvalidImageError"
    for it in items[:8]:
        assert Image.open(it.target).size == Image.open(it.source).size


@pytest.mark.slow
@ray_quirks
def test_ctrl_c_stops_the_pool_and_a_rerun_finishes(ray_local, photos, tmp_path):
    """SIGINT in the driver after the first file: the shared runner stops the pool and raises
    JobInterrupted with the Ray summary; every output on disk is a whole image; a rerun skips
    what was written and finishes the rest."""
    from sdk import ray_executor

    items = folder.plan([str(photos / "sub")], str(tmp_path / "out"))
    sent = []

    def progress(note):
        if not sent:
            sent.append(note)
            os.kill(os.getpid(), signal.SIGINT)

    caught = None
    try:
        ray_executor.run(items, "colorize", actors=1, threads=1, batch_size=1, quiet=True, progress=progress)
    except KeyboardInterrupt as e:  # pytest stops on a bare KeyboardInterrupt: catch it to check its type
        caught = e
    assert isinstance(caught, JobInterrupted), caught
    done = caught.summary.as_dict()
    assert done["interrupted"] is True and done["executor"] == "ray" and done["actors"] == 1 and done["failed"] == []
    assert 1 <= done["written"] <= len(items) == 8
    on_disk = sorted((tmp_path / "out").glob("*.png"))  # atomic writes: whatever is there is whole
    for f in on_disk:
        with Image.open(f) as im:
            im.load()
    assert done["written"] <= len(on_disk)  # actors run ahead: what they finished is counted by its existence
    again = ray_executor.run(items, "colorize", actors=1, threads=1, batch_size=4, quiet=True)
    assert again.written + again.skipped_existing == 8 and again.skipped_existing >= done["written"] and not again.failed
    for it in items:
        with Image.open(it.target) as im:
            assert im.size == Image.open(it.source).size


# ------------------------------------------------------------------ stdout is the summary's alone
def _ray_data_or_skip():
    pytest.importorskip("ray", reason='Ray is not installed (pip install "chromaforge[ray]")')
    pytest.importorskip("ray.data", reason="Ray Data is not importable")


@pytest.mark.slow
def test_cli_stdout_is_exactly_the_json_summary_line(tmp_path):
    """`python -m sdk --quiet colorize DIR -o OUT --executor ray` (a fresh process, its own local
    Ray, 2 actors, one unreadable file): stdout is the one JSON line scripts parse; Ray's lines,
    the failure and the rest are on stderr."""
    _ray_data_or_skip()
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((48, 64)) * 255).astype(np.uint8)).save(src / f"{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "sdk", "--quiet", "--batch-size", "2", "colorize", str(src), "-o", str(tmp_path / "out"),
                        "--executor", "ray", "--actors", "2"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 2, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and r.stdout.endswith("\n"), r.stdout
    summary = json.loads(lines[0])
    assert summary["written"] == 4 and summary["executor"] == "ray" and [f["input"] for f in summary["failed"]] == [str(src / "broken.png")]
    assert "broken.png" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@ray_quirks
def test_raylet_messages_go_to_stderr_while_a_run_is_open(ray_local, capsys, tmp_path):
    """Ray's driver prints the raylet's messages to sys.stdout from its own thread, whatever
    log_to_driver says: while the executor is open they go to stderr; the caller's own prints
    stay on stdout, and stdout is the caller's again after close."""
    import time

    import ray._private.utils as ray_utils
    import ray._private.worker as ray_worker

    from sdk import ray_executor

    (tmp_path / "a.png").write_bytes(b"")
    executor = ray_executor.RayExecutor("colorize", quiet=True)
    out = err = ""
    executor.open(folder.plan([str(tmp_path / "a.png")], str(tmp_path / "out")))
    try:
        print("the caller's line")
        ray_utils.publish_error_to_driver("chromaforge_test", "a message from the raylet", ray_worker.global_worker.gcs_client)
        for _ in range(600):  # wait for Ray's listener thread to print it (it polls the GCS)
            cap = capsys.readouterr()
            out, err = out + cap.out, err + cap.err
            if "a message from the raylet" in out + err:
                break
            time.sleep(0.1)
    finally:
        executor.close()
    assert "a message from the raylet" in err and "a message from the raylet" not in out, (out, err)
    assert out == "the caller's line\n"
    print("after")
    assert capsys.readouterr().out == "after\n"
