"""Multi-process (DDP) training through torchrun: 2 CPU processes, gloo, a few real steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training import distributed
from training.distributed import Dist

from conftest import MOBILENET, TINY


def test_single_process_dist_is_a_no_op():
    d = Dist()
    t = torch.tensor([1.0, 2.0])
    assert not d.enabled and d.is_main
    assert d.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert d.gather_objects("x") == ["x"]
    assert distributed.shard(list("abc"), d) == ["a", "b", "c"]


def test_shards_cover_every_item_once():
    """Each rank's share (DistributedSampler, no shuffling) is disjoint apart from the padding repeats; together they cover all."""
    items = list(range(11))
    parts = [distributed.shard(items, Dist(r, 3, r)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4]
    assert sorted(set().union(*parts)) == items
    assert sum(len(p) for p in parts) - len(items) == 1  # one padding repeat


def test_setup_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.setup("cpu")
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.setup("cpu") == (Dist(), torch.device("cpu"))


def _tiny_flags() -> list[str]:
    """The flags of the tiny generator (conftest.TINY)."""
    out: list[str] = []
    for k, v in TINY.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, tuple):
            out.extend([flag, *map(str, v)])
        else:
            out.extend([flag, str(v)])
    return out


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, datasets: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """``torchrun --nproc-per-node 2 -m training`` on 16 real photos (8 per rank), 40 colour steps with the
    adversarial loss and the exported read-out's chroma gain and prior correction."""
    root = tmp_path_factory.mktemp("ddp")
    photos = root / "photos"
    photos.mkdir()
    for sub in ("bsds500", "urban100"):
        for f in sorted((datasets / "photos" / "train" / sub).iterdir())[:8]:
            shutil.copy(f, photos / f.name)
    out = root / "run"
    args = ["--photos", str(photos), "--val-photos", str(photos), "--out", str(out), "--size", "64", "--batch", "4",
            "--steps", "40", "--load-size", "96", *_tiny_flags(), "--chroma-gain", "1", "--prior-correction", "0.5",
            "--val-every", "20", "--ckpt-every", "20", "--val-images", "2", "--no-progress", "--lr-g", "2e-3",
            "--w-adv-color", "0.05", "--mobilenet", str(MOBILENET), "--threads", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "training", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


def test_ddp_run_syncs_and_logs_on_rank_0(ddp_run):
    """Both ranks train on their own half; losses fall; the final weights agree across ranks; only
    rank 0 logs, validates, measures the chroma gain's reference and writes checkpoints."""
    out, proc = ddp_run
    err = proc.stderr
    assert "training on cpu x 2 processes: 16 photos (per rank [8, 8])" in err
    assert "generator weights identical on 2 ranks at step 40" in err
    assert "[rank 1]" not in err.replace("[rank 1]:[W", "")  # rank 1 logs warnings only (and there are none of ours)
    assert err.count("chroma gain reference on") == 2  # rank 0, at its two saves
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 41))  # one writer
    ce = [r["ce"] for r in rows]
    assert np.mean(ce[-5:]) < 0.8 * np.mean(ce[:5]), ce
    assert all({"d", "adv_c", "g"} <= set(r) for r in rows)  # every step trains the discriminator too
    assert "val_psnr" in rows[19] and (out / "samples_000040.png").is_file()
    assert sorted(p.name for p in out.glob("*.pt")) == ["last.pt"]


def test_ddp_checkpoint_resumes_and_exports_in_one_process(ddp_run, tmp_path: Path):
    """The checkpoint holds the unwrapped generator and what export needs: a single process resumes
    it and exports it with parity (reference measured by the run, class weights saved)."""
    from export.onnx_export import ExportConfig, export_onnx
    from training.train import Trainer, parse_args

    out, _ = ddp_run
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert ck["step"] == 40 and not any(k.startswith("module.") for k in ck["G"])
    assert ck["generator"]["chroma_gain_ref"] != ck["config"]["generator"]["chroma_gain_ref"] and "class_weights" in ck
    cfg = parse_args(["--photos", ck["config"]["photos"], "--val-photos", "", "--out", str(tmp_path / "resumed"), "--size", "64", "--batch", "2",
                      "--steps", "41", "--load-size", "96", *_tiny_flags(), "--mobilenet", str(MOBILENET), "--resume", str(out / "last.pt"),
                      "--w-adv-color", "0.05", "--no-progress", "--threads", "1"])
    tr = Trainer(cfg)
    assert tr.step == 40
    tr.fit()
    assert tr.step == 41
    model = tmp_path / "model"
    report = export_onnx(ExportConfig(checkpoint=str(out / "last.pt"), out=str(model), name="ddp-test"))
    assert (model / "manifest.json").is_file()
    assert report["parity"]["max_abs"] < 1e-4
    assert report["generator"]["chroma_gain_ref"] == ck["generator"]["chroma_gain_ref"]
