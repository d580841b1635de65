"""The PyTorch half of ``chromaforge style add`` (:mod:`sdk.style_add` checks the request first).

The base model is read back into PyTorch (:mod:`export.from_onnx`), its style path gets one more
row in every normalisation, only that row trains (:func:`training.style_train.fit`), and the
result is exported to a new model folder, moved into place only when complete.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from export.from_onnx import RecoverConfig, RecoveryError, recover
from export.onnx_export import ExportConfig, export_onnx
from sdk import contract
from sdk.errors import InvalidArgumentError, ModelCorruptError, OutputExistsError
from sdk.style_add import MIN_PHOTOS, StyleAddConfig
from training import losses
from training.model import STYLE_PREFIX
from training.style_train import PhotoBank, StyleTrainConfig, Trainable, fit, read_paintings, style_target
from training.stylenet import StyleNet, StyleNetConfig


def learn(cfg: StyleAddConfig, base, base_dir: Path, files: list[Path], photos: Path, job: str,
          progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train style ``cfg.name`` on the checked request and write the model folder; see :func:`sdk.style_add.add_style`."""
    out = Path(cfg.out)
    work = out.with_name(out.name + ".partial")
    resumed = work.is_dir()
    if resumed:
        state = json.loads((work / "job.json").read_text()) if (work / "job.json").is_file() else {}
        if state.get("job") != job:
            raise OutputExistsError(f"{work} holds the state of another style job (other name, paintings, base model or settings); "
                                    "remove it, or choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    (work / "job.json").write_text(json.dumps({"job": job, "name": cfg.name, "paintings": [str(f) for f in files]}, indent=1))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    base_ck = work / "base.pt"
    if not base_ck.is_file():
        try:
            recover(RecoverConfig(model_dir=str(base_dir), out=str(base_ck), parity_images=""))
        except RecoveryError as e:
            raise ModelCorruptError(f"the base model {base_dir} cannot be read back for training: {e}") from None
    ck = torch.load(base_ck, map_location="cpu", weights_only=False)
    g = ck["generator"]
    net = StyleNet(StyleNetConfig(widths=tuple(g["style_widths"]), res_blocks=g["style_res_blocks"], n_styles=len(g["styles"]) - 1))
    net.load_state_dict({k[len(STYLE_PREFIX):]: v for k, v in ck["G"].items() if k.startswith(STYLE_PREFIX)})
    index = net.add_style()
    net.requires_grad_(False)
    params = net.style_parameters()
    masks = []
    for prm in params:
        prm.requires_grad_(True)
        m = torch.zeros_like(prm)
        m[index] = 1.0  # the new style's row only: every other style stays bit-identical
        masks.append(m)
    vgg = losses.VGGFeatures(cfg.vgg)
    target = style_target(vgg, read_paintings(files))
    try:
        bank = PhotoBank([str(photos)], 256, cfg.size)
    except ValueError as e:
        raise InvalidArgumentError(f"--photos {photos}: {e}; give a folder of {MIN_PHOTOS} or more colour photos") from None
    if len(bank) < MIN_PHOTOS:
        raise InvalidArgumentError(f"--photos {photos} has {len(bank)} usable colour photos; expected at least {MIN_PHOTOS}")
    train_cfg = StyleTrainConfig(photos=(str(photos),), styles=(cfg.name,), vgg=cfg.vgg, out=str(work), size=cfg.size, batch=cfg.batch,
                                 steps=cfg.steps, lr=cfg.lr, ckpt_every=cfg.ckpt_every, seed=cfg.seed, threads=cfg.threads)
    styles = list(g["styles"][1:]) + [cfg.name]
    report = fit(net.train(), vgg, {index: target}, bank, train_cfg, Trainable(params, masks), work,
                 extra={"styles": styles, "exemplars": {cfg.name: [f.name for f in files]}}, on_step=progress)
    model_tmp = work / "model"
    if model_tmp.exists():
        shutil.rmtree(model_tmp)
    export_onnx(ExportConfig(checkpoint=str(base_ck), out=str(model_tmp), style_checkpoint=str(work / "last.pt"),
                             work_size=base.work_size, style_work_size=base.style_work_size, style_pad=base.style_pad,
                             name=f"{base.name}+{cfg.name}"))
    seconds = time.perf_counter() - t0
    card = base_dir / "MODEL_CARD.md"
    entry = (f"\n\n## Added style: {cfg.name}\n\nLearned with `chromaforge style add` from {len(files)} paintings "
             f"({', '.join(f.name for f in files[:5])}{', ...' if len(files) > 5 else ''}) on top of {base.name} "
             f"(sha256 {base.sha256[:12]}): {cfg.steps} steps of the new style's normalisation scales and shifts only "
             f"(batch {cfg.batch}, {cfg.size} px crops of {photos}, lr {cfg.lr}), everything else frozen, so the other styles "
             f"and colorization give the base model's outputs. Final losses: style {report['style']:.3f}, content "
             f"{report['content']:.3f}. Not evaluated beyond those losses: look at its outputs.\n")
    (model_tmp / "MODEL_CARD.md").write_text((card.read_text() if card.is_file() else f"# {base.name}\n") + entry)
    out.parent.mkdir(parents=True, exist_ok=True)
    model_tmp.replace(out)
    shutil.rmtree(work, ignore_errors=True)
    return {"out": str(out), "styles": [contract.NATURAL, *styles], "paintings": len(files), "steps": report["steps"],
            "seconds": round(seconds, 1), "resumed": resumed, "loss_style": round(report["style"], 4), "loss_content": round(report["content"], 4)}
