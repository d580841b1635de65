"""Folder jobs (sdk.folder): batches through the pipeline, skip existing, atomic save, per-file
errors collected, and the CLI on top of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdk import cli, folder
from sdk.errors import InvalidArgumentError


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
