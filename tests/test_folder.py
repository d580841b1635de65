"""Folder jobs (sdk.folder): batches through the pipeline, skip existing, atomic save, per-file
errors collected, Ctrl-C, special files, -o inside the input folder, and the CLI on top of them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdk import cli, folder
from sdk.errors import InvalidArgumentError, JobInterrupted, OutputExistsError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path, astronaut) -> Path:
    """Five photos of two sizes (so batches hold two working shapes) and one unreadable .png."""
    root = tmp_path / "in"
    root.mkdir()
    for i in range(5):
        size = (64, 48) if i % 2 else (48, 64)
        Image.fromarray(np.roll(astronaut, 40 * i, axis=1)).convert("L").resize(size).save(root / f"p{i}.png")
    (root / "broken.png").write_text("not a png")
    return root


def test_folder_run_batches_and_collects_per_file_errors(tiny_pipeline, tree, tmp_path):
    """Batches of 2 through the pipeline give the per-image API's pixels; the unreadable file is
    reported in `failed` and does not stop the others; a rerun skips what exists."""
    items = folder.plan([str(tree)], str(tmp_path / "out"), "png")
    calls = []

    def process(sources):
        calls.append(len(sources))
        return folder.pipeline_process(tiny_pipeline, "colorize")(sources)

    notes = []
    summary = folder.run(items, process, batch_size=2, progress=notes.append)
    assert calls == [2, 2, 2] and len(notes) == 6
    assert summary.written == 5 and summary.skipped_existing == 0
    assert [(p.name, "broken.png" in msg) for p, msg in summary.failed] == [("broken.png", True)]
    for it in items:
        if it.source.name != "broken.png":
            np.testing.assert_array_equal(np.asarray(Image.open(it.target)), np.asarray(tiny_pipeline.colorize(it.source)))
    again = folder.run(items, process, batch_size=2)
    assert again.as_dict() == {"written": 0, "skipped_existing": 5, "failed": [{"input": str(tree / "broken.png"), "error": summary.failed[0][1]}]}


def test_folder_run_collects_write_errors(tiny_pipeline, tree, tmp_path):
    """A target that cannot be written (its folder is a file) is a per-file error; no temp files are left."""
    items = folder.plan([str(tree)], str(tmp_path / "out"), "png")
    blocked = next(it for it in items if it.source.name == "p2.png")
    blocked.target.parent.mkdir(parents=True)
    (blocked.target.parent / "p2").write_text("a file where a folder is needed")
    items = [folder.Item(it.source, it.relative, it.target.parent / "p2" / "x.png") if it is blocked else it for it in items]
    summary = folder.run(items, folder.pipeline_process(tiny_pipeline, "colorize"))
    assert summary.written == 4 and {p.name for p, _ in summary.failed} == {"p2.png", "broken.png"}
    assert "could not write" in dict((p.name, m) for p, m in summary.failed)["p2.png"]
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_folder_run_checks_its_options(tree, tmp_path):
    items = folder.plan([str(tree)], str(tmp_path / "out"), "png")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        folder.run(items, folder.each_file(lambda p: p), batch_size=0)


def test_cli_folder_reports_failed_files_and_exits_2(tiny_model_dir, tiny_pipeline, tree, tmp_path, capsys):
    """The CLI writes every readable file, lists the broken one in its summary and on stderr, exits 2."""
    out = tmp_path / "out"
    args = ["--model-dir", str(tiny_model_dir), "--backend", "onnxruntime-cpu", "--threads", "1", "--quiet",
            "--batch-size", "3", "colorize", str(tree), "-o", str(out)]
    assert cli.main(args) == 2
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["written"] == 5 and summary["backend"] == "onnxruntime-cpu"
    assert [f["input"] for f in summary["failed"]] == [str(tree / "broken.png")]
    assert "broken.png" in cap.err
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}.png" for i in range(5)]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "p3.png")), np.asarray(tiny_pipeline.colorize(tree / "p3.png")))


def test_cli_rejects_bad_batch_size(tiny_model_dir, tree, tmp_path, capsys):
    assert cli.main(["--batch-size", "0", "fuse", str(tree / "p0.png"), str(tree / "p1.png"), "-o", str(tmp_path / "f.png")]) == 2
    assert "--batch-size" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the shared runner
class _Scripted(folder.Executor):
    """An executor whose outcomes come in reverse order, one of them a failure."""

    def results(self, pending):
        for i in reversed(range(len(pending))):
            yield i, ("no luck" if i == 1 else None)


def test_run_job_counts_whatever_order_the_executor_reports_in(tmp_path):
    """The runner, not the executor, owns skipping, counting, failure order and the plan's skipped files."""
    items = folder.Plan([folder.Item(tmp_path / f"{n}.png", Path(f"{n}.png"), tmp_path / "out" / f"{n}.png") for n in "abcd"],
                        skipped=[(tmp_path / "fifo.png", "not a regular file: a FIFO (named pipe)")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"done before")
    notes = []
    summary = folder.run_job(items, _Scripted(), progress=notes.append)
    assert summary.as_dict() == {"written": 2, "skipped_existing": 1, "failed": [{"input": str(tmp_path / "c.png"), "error": "no luck"}],
                                 "skipped": [{"input": str(tmp_path / "fifo.png"), "reason": "not a regular file: a FIFO (named pipe)"}]}
    assert notes == ["skip a.png", "d.png", "failed c.png", "b.png"]
    assert folder.run_job(items[1:], _Scripted(), overwrite=True).as_dict()["written"] == 2  # a slice: no skipped list


# ------------------------------------------------------------------------------------- Ctrl-C
INTERRUPT = """
import json, os, signal, sys
import sdk
from sdk import folder
from sdk.errors import JobInterrupted

src, out, model_dir = sys.argv[1:4]
pipe = sdk.load(model_dir, backend="onnxruntime-cpu", threads=1)
items = folder.plan([src], out)
sent = []

def progress(note):  # Ctrl-C as a terminal sends it, once the first file is done
    if not sent:
        sent.append(note)
        os.kill(os.getpid(), signal.SIGINT)

try:
    folder.run(items, folder.pipeline_process(pipe, "colorize"), batch_size=2, progress=progress)
except JobInterrupted as e:
    print(json.dumps({"summary": e.summary.as_dict(), "items": len(items), "is_keyboard_interrupt": isinstance(e, KeyboardInterrupt)}))
    sys.exit(0)
sys.exit("the job was not interrupted")
"""


@pytest.mark.skipif(os.name != "posix", reason="sends itself SIGINT")
def test_ctrl_c_finishes_saves_in_flight_and_raises_job_interrupted(tiny_model_dir, tiny_pipeline, tmp_path):
    """A real SIGINT after the first file: JobInterrupted (a KeyboardInterrupt) with the summary;
    every output on disk is a whole image and counted, no temporary file is left, and a rerun
    finishes the rest."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo = (REPO / "sdk" / "examples" / "astronaut.jpg").read_bytes()
    for i in range(20):
        (src / f"photo{i:02d}.jpg").write_bytes(photo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", INTERRUPT, str(src), str(out), str(tiny_model_dir)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    summary = got["summary"]
    assert got["is_keyboard_interrupt"] and summary["interrupted"] is True and summary["failed"] == []
    assert 1 <= summary["written"] < got["items"] == 20
    written = sorted(out.glob("*.png"))
    assert len(written) == summary["written"]
    for f in written:
        with Image.open(f) as im:
            im.load()
            assert im.size == (512, 512)
    assert not [p.name for p in out.iterdir() if p.suffix != ".png"]  # no .tmp, nothing else

    again = folder.run(folder.plan([str(src)], str(out)), folder.pipeline_process(tiny_pipeline, "colorize"), batch_size=4)
    assert (again.written, again.skipped_existing, again.interrupted) == (20 - summary["written"], summary["written"], False)
    assert "interrupted" not in again.as_dict() and len(list(out.glob("*.png"))) == 20


def test_keyboard_interrupt_in_a_batch_stops_the_local_executor(tiny_pipeline, tree, tmp_path):
    """Ctrl-C while a batch is being processed (not between files): the batches before it are
    saved and counted, nothing after it is started."""
    items = folder.plan([str(tree)], str(tmp_path / "out"))
    calls = []

    def process(sources):
        calls.append(len(sources))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return folder.pipeline_process(tiny_pipeline, "colorize")(sources)

    caught = None
    try:
        folder.run(items, process, batch_size=2)
    except KeyboardInterrupt as e:  # pytest stops on a bare KeyboardInterrupt: catch it to check its type
        caught = e
    assert isinstance(caught, JobInterrupted) and caught.summary.interrupted
    done = caught.summary.as_dict()  # the first batch: broken.png (sorted first) and p0.png
    assert calls == [2, 2] and done["interrupted"] is True and done["written"] == 1
    assert [Path(f["input"]).name for f in done["failed"]] == ["broken.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png"]


# ------------------------------------------------------------------------------ special files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symbolic links (POSIX)")
def test_special_files_in_a_folder_are_reported_not_read(tiny_model_dir, tree, tmp_path, capsys):
    """A FIFO, a socket, a broken link and a link loop with image names are listed in the
    summary's `skipped` with what they are (the FIFO is never opened: the run does not hang);
    the job still exits 0 for them and writes every real image."""
    os.mkfifo(tree / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "sock.png"))
    (tree / "gone.jpg").symlink_to(tree / "nowhere.jpg")
    (tree / "loop.jpg").symlink_to(tree / "loop.jpg")
    (tree / "notes.txt").symlink_to(tree / "nowhere.txt")  # not an image name: not mentioned
    (tree / "broken.png").unlink()
    try:
        items = folder.plan([str(tree)], str(tmp_path / "out"))
        assert [it.source.name for it in items] == [f"p{i}.png" for i in range(5)]
        reasons = {p.name: why for p, why in items.skipped}
        assert sorted(reasons) == ["gone.jpg", "loop.jpg", "pipe.png", "sock.png"]
        assert reasons["pipe.png"] == "not a regular file: a FIFO (named pipe); only regular image files are read"
        assert "a socket" in reasons["sock.png"] and "a symbolic link loop" in reasons["loop.jpg"]
        assert f"a broken symbolic link (to {tree / 'nowhere.jpg'})" in reasons["gone.jpg"]

        args = ["--model-dir", str(tiny_model_dir), "--backend", "onnxruntime-cpu", "--threads", "1", "--quiet",
                "colorize", str(tree), "-o", str(tmp_path / "out")]
        assert cli.main(args) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["written"] == 5 and summary["failed"] == []
        assert {Path(s["input"]).name: s["reason"] for s in summary["skipped"]} == reasons
    finally:
        sock.close()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symbolic links (POSIX)")
def test_a_fifo_named_as_input_is_called_what_it_is(tmp_path):
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgumentError) as ei:
        folder.plan([str(fifo)], str(tmp_path / "out"))
    msg = str(ei.value)
    assert "is a FIFO (named pipe), not a regular file; only regular image files are read" in msg and "does not exist" not in msg
    (tmp_path / "link.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(InvalidArgumentError, match="is a broken symbolic link"):
        folder.plan([str(tmp_path / "link.png")], str(tmp_path / "out"))
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        folder.plan([str(tmp_path / "missing.png")], str(tmp_path / "out"))
    with pytest.raises(InvalidArgumentError, match=r"no images or videos found .*\(2 with an image name are not a regular file; .*camera.jpg: a FIFO"):
        folder.plan([str(tmp_path)], str(tmp_path / "out"))  # a folder holding only the FIFO and the broken link


# --------------------------------------------------------------------- -o inside the input folder
def test_output_inside_the_input_folder_resumes(tiny_model_dir, tree, tmp_path, capsys):
    """`colorize in/ -o in/out`: a rerun takes the earlier results for outputs (skipped), not inputs;
    an original placed inside -o stays an input, and its own result is recognised on the next run."""
    (tree / "broken.png").unlink()
    out = tree / "out"
    args = ["--model-dir", str(tiny_model_dir), "--backend", "onnxruntime-cpu", "--threads", "1", "--quiet",
            "colorize", str(tree), "-o", str(out)]
    assert cli.main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["written"] == 5 and sorted(p.name for p in out.iterdir()) == [f"p{i}.png" for i in range(5)]
    assert cli.main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["written"], again["skipped_existing"], again["failed"]) == (0, 5, [])

    (tree / "p0.png").replace(out / "original.png")  # an original that lives inside -o
    (out / "p0.png").unlink()
    items = folder.plan([str(tree)], str(out))
    assert sorted(str(it.relative) for it in items) == ["out/original.png", "p1.png", "p2.png", "p3.png", "p4.png"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == 1  # out/out/original.png
    assert len(folder.plan([str(tree)], str(out))) == 5  # out/out/original.png is its result, not an input


def test_output_file_inside_the_input_folder_and_output_equal_to_it(tiny_pipeline, tmp_path):
    """-o FILE inside the folder: its earlier result is not a second input. -o equal to the input
    folder stays refused where a result would replace an input (there is no telling them apart)."""
    src = tmp_path / "in"
    src.mkdir()
    Image.new("L", (40, 30), 90).save(src / "a.png")
    items = folder.plan([str(src)], str(src / "a_colour.png"))
    assert folder.run(items, folder.pipeline_process(tiny_pipeline, "colorize")).written == 1
    again = folder.plan([str(src)], str(src / "a_colour.png"))
    assert [(it.source.name, it.target.name) for it in again] == [("a.png", "a_colour.png")]
    with pytest.raises(OutputExistsError, match="is also an input"):
        folder.plan([str(src)], str(src))
