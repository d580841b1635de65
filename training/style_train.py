"""Train the style path (:mod:`training.stylenet`): VGG content, Gram style and total-variation losses.

Each style is defined by a few exemplar paintings (``training/exemplars.json``: typical works of
the school with its brushwork, chosen by eye from ``styles/<style>/train``), not by a whole
school's averaged statistics, which wash out into one generic texture. A style's target is the
mean Gram matrix of its exemplars, at the paintings' own scale and at half of it (the larger
strokes and fields that VGG's relu3_1, the deepest layer here, cannot see at full size).

Every batch draws photos (made grey: the network reads luminance only) and gives each one a
style, in turn, so every style gets the same share of steps. ``last.pt`` is rewritten every
``ckpt_every`` steps with the optimiser and random state, and a rerun with the same ``--out``
resumes from it; ``config.json`` beside it holds the resolved config.

Example:
    python -m training.style_train --out runs/stylenet --steps 3000
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdk import contract
from training import losses
from training.data import ImageBank, list_images
from training.stylenet import StyleNet, StyleNetConfig

log = logging.getLogger(__name__)

EXEMPLARS = Path(__file__).with_name("exemplars.json")
"""The shipped styles' exemplar paintings: ``{style: [file name in styles/<style>/train, ...]}``."""

PAINTING_SIZE = 224
"""Side the paintings are read at for their Gram targets (the shared paintings' own size)."""


@dataclass(frozen=True)
class StyleTrainConfig:
    """Everything a style run depends on; saved as ``config.json`` beside ``last.pt``."""

    photos: tuple[str, ...] = ("../shared/datasets/photos/train", "../shared/datasets/photos_extra")
    styles_root: str = "../shared/datasets/styles"
    styles: tuple[str, ...] = contract.PAINTING_STYLES
    exemplars: str = str(EXEMPLARS)
    vgg: str = "../shared/weights/vgg19_relu3_1_caffe.safetensors"
    out: str = "runs/stylenet"
    init: str = ""
    """Start from these style-path weights (a run's ``last.pt``, or a model folder read back with
    :mod:`export.from_onnx`) instead of random ones; ignored when ``out/last.pt`` exists (resume)."""
    widths: tuple[int, int, int] = StyleNetConfig.widths
    res_blocks: int = StyleNetConfig.res_blocks
    size: int = 192
    load_size: int = 256
    batch: int = 4
    steps: int = 3000
    lr: float = 1e-3
    w_content: float = 1.0
    w_style: float = 4.0
    w_coarse: float = 0.5
    w_tv: float = 1e-5
    w_tone: float = 0.0
    tone_cell: int = 16
    style_layers: tuple[float, float, float] = (1.0, 1.0, 1.0)
    photo_limit: int = 0
    ckpt_every: int = 100
    keep_every: int = 0
    threads: int = 0
    seed: int = 0
    progress: bool = True


def _rgb_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def luma_of(rgb: torch.Tensor) -> torch.Tensor:
    """RGB [N,3,H,W] -> Y [N,1,H,W] with the contract's weights."""
    w = torch.tensor(contract.LUMA_WEIGHTS, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True)


def read_paintings(files: Sequence[Path], size: int = PAINTING_SIZE) -> list[np.ndarray]:
    """Paintings as RGB uint8 arrays resized to ``size`` x ``size``.

    Raises:
        OSError / PIL.UnidentifiedImageError: a file cannot be decoded (callers that take user
        files check them first: :func:`sdk.style_add.check_paintings`).
    """
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC)))
    return out


@torch.no_grad()
def style_target(vgg: losses.VGGFeatures, paintings: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Mean Gram matrices of ``paintings`` (and their mirror images): relu1_1, relu2_1, relu3_1 at
    full size, then the same three at half size. Returns six [C,C] tensors."""
    acc: list[torch.Tensor] | None = None
    for start in range(0, len(paintings), 8):
        x = _rgb_tensor(paintings[start : start + 8])
        x = torch.cat([x, x.flip(3)])
        grams = [losses.gram(f).sum(0) for f in vgg(x)] + [losses.gram(f).sum(0) for f in vgg(F.avg_pool2d(x, 2))]
        acc = grams if acc is None else [a + g for a, g in zip(acc, grams)]
    assert acc is not None
    return [a / (2 * len(paintings)) for a in acc]


def exemplar_files(cfg: StyleTrainConfig) -> dict[str, list[Path]]:
    """The exemplar paintings of each style in ``cfg.styles``.

    Raises:
        FileNotFoundError: an exemplar file is missing. KeyError: a style has no exemplars listed.
    """
    table = json.loads(Path(cfg.exemplars).read_text())
    files = {}
    for style in cfg.styles:
        if style not in table:
            raise KeyError(f"{cfg.exemplars} lists no exemplars for {style!r} (it has {sorted(table)})")
        files[style] = [Path(cfg.styles_root) / style / "train" / name for name in table[style]]
        missing = [str(p) for p in files[style] if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"exemplar paintings not found: {missing}")
    return files


class PhotoBank:
    """Colour photos of several folders (short side at most ``load_size``) with random square crops."""

    def __init__(self, roots: Sequence[str], load_size: int, size: int, limit: int = 0) -> None:
        files = [f for r in roots for f in list_images(r)]
        if limit:
            files = [files[i] for i in np.linspace(0, len(files) - 1, min(limit, len(files))).astype(int)]
        self.bank = ImageBank(roots[0], load_size=load_size, files=files)
        self.size = size

    def __len__(self) -> int:
        return len(self.bank)

    def batch(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        """[n,3,size,size] RGB in [0, 1]: the short side rescaled to 1-1.35 ``size`` and cropped, so a
        160-px crop sees a photo about as large as the 256-px working size shows it."""
        return _rgb_tensor(self.bank.batch(rng, n, self.size, scale=(1.0, 1.35)))


@dataclass
class Trainable:
    """What a run optimises: the parameters, and for each a mask of the entries it may change (None: all)."""

    params: list[torch.nn.Parameter]
    masks: list[torch.Tensor | None]


def fit(net: StyleNet, vgg: losses.VGGFeatures, targets: dict[int, list[torch.Tensor]], photos: PhotoBank, cfg: StyleTrainConfig,
        trainable: Trainable, out: Path, extra: dict | None = None,
        on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> dict:
    """Optimise ``trainable`` for ``cfg.steps`` steps, resuming from ``out/last.pt`` when it exists.

    Args:
        targets: style index (row of the normalisations) -> its six Gram targets.
        extra: saved in every checkpoint (e.g. the style names).
        on_step: called after each step with (step, total steps, losses).

    Returns:
        The last step's losses and timing.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    opt = torch.optim.Adam(trainable.params, lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    step = 0
    stats: dict[str, float] = {}
    ck_path = out / "last.pt"
    if ck_path.is_file():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["rng"]
        step = ck["step"]
        stats = ck.get("last_stats", {})
        log.info("resumed %s at step %d", ck_path, step)
    order = sorted(targets)
    history: list[dict] = []
    t0, s0 = time.perf_counter(), step
    while step < cfg.steps:
        rgb = photos.batch(rng, cfg.batch)  # [B,3,s,s]
        luma = luma_of(rgb)
        idx = [order[(step * cfg.batch + i) % len(order)] for i in range(cfg.batch)]
        p = F.one_hot(torch.tensor(idx), net.cfg.n_styles).float()
        styled = net(luma, p)  # [B,3,s,s]
        feats = vgg(styled)
        coarse = vgg(F.avg_pool2d(styled, 2))
        with torch.no_grad():
            content = vgg(luma.expand(-1, 3, -1, -1))[2]
        tgt = [torch.stack([targets[i][k] for i in idx]) for k in range(6)]
        l_content = losses.content_loss(feats[2], content)
        l_style = losses.gram_loss(feats, tgt[:3], cfg.style_layers)
        l_coarse = losses.gram_loss(coarse, tgt[3:], cfg.style_layers)
        l_tv = losses.total_variation(styled)
        # the photo's tonal layout: cell-averaged luminance (a night stays dark, a white dog white)
        l_tone = (F.avg_pool2d(luma_of(styled), cfg.tone_cell) - F.avg_pool2d(luma, cfg.tone_cell)).abs().mean()
        loss = (cfg.w_content * l_content + cfg.w_style * (l_style + cfg.w_coarse * l_coarse) + cfg.w_tv * l_tv
                + cfg.w_tone * l_tone)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        for prm, m in zip(trainable.params, trainable.masks):
            if m is not None and prm.grad is not None:
                prm.grad.mul_(m)
        opt.step()
        step += 1
        stats = {k: float(v.detach()) for k, v in (("loss", loss), ("content", l_content), ("style", l_style), ("coarse", l_coarse),
                                                   ("tv", l_tv), ("tone", l_tone))}
        if on_step is not None:
            on_step(step, cfg.steps, stats)
        if step % 20 == 0:
            history.append({"step": step, **stats})
            rate = (time.perf_counter() - t0) / (step - s0)
            log.info("step %d/%d loss %.4f content %.4f style %.4f coarse %.4f tone %.4f (%.2f s/step)", step, cfg.steps, stats["loss"],
                     stats["content"], stats["style"], stats["coarse"], stats["tone"], rate)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save(ck_path, net, opt, rng, step, cfg, {**(extra or {}), "last_stats": stats})
            if cfg.keep_every and step % cfg.keep_every == 0:  # snapshots to choose a checkpoint from later
                shutil.copyfile(ck_path, out / f"step{step:06d}.pt")
    elapsed = time.perf_counter() - t0
    return {**stats, "steps": step, "seconds": elapsed, "s_per_step": elapsed / max(1, step - s0)}


def save(path: Path, net: StyleNet, opt, rng: np.random.Generator, step: int, cfg: StyleTrainConfig, extra: dict | None) -> None:
    """Write the checkpoint atomically (a crash mid-write leaves the previous one)."""
    ck = {"net": net.state_dict(), "net_config": dataclasses.asdict(net.cfg), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
          "step": step, "config": dataclasses.asdict(cfg), **(extra or {})}
    tmp = path.with_suffix(".tmp")
    torch.save(ck, tmp)
    tmp.replace(path)


def load_net(path: str | Path) -> tuple[StyleNet, dict]:
    """A style network and its checkpoint from ``last.pt`` of a run."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ck["net_config"]
    net = StyleNet(StyleNetConfig(widths=tuple(cfg["widths"]), res_blocks=cfg["res_blocks"], n_styles=cfg["n_styles"]))
    net.load_state_dict(ck["net"])
    return net.eval(), ck


def initial_weights(path: str | Path, work: Path) -> dict[str, torch.Tensor]:
    """Style-path weights of a run's ``last.pt`` or of a model folder (read back into ``work``).

    Raises:
        FileNotFoundError: ``path`` is neither. export.from_onnx.RecoveryError: a model folder that
        cannot be read back.
    """
    path = Path(path)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=False)["net"]
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"--init {path}: expected a style run's last.pt or a model folder with manifest.json")
    from export.from_onnx import RecoverConfig, recover
    from training.model import STYLE_PREFIX

    ck_path = work / "init_recovered.pt"
    if not ck_path.is_file():
        recover(RecoverConfig(model_dir=str(path), out=str(ck_path), parity_images=""))
    g = torch.load(ck_path, map_location="cpu", weights_only=False)["G"]
    return {k[len(STYLE_PREFIX):]: v for k, v in g.items() if k.startswith(STYLE_PREFIX)}


def main(argv: list[str] | None = None) -> int:
    from training.config import parse_config

    p, cfg = parse_config(StyleTrainConfig, argv, "python -m training.style_train", __doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    torch.manual_seed(cfg.seed)
    vgg = losses.VGGFeatures(cfg.vgg)
    files = exemplar_files(cfg)
    targets = {i: style_target(vgg, read_paintings(files[s])) for i, s in enumerate(cfg.styles)}
    net = StyleNet(StyleNetConfig(widths=tuple(cfg.widths), res_blocks=cfg.res_blocks, n_styles=len(cfg.styles)))
    if cfg.init and not (Path(cfg.out) / "last.pt").is_file():
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        net.load_state_dict(initial_weights(cfg.init, Path(cfg.out)))
        log.info("initialised from %s", cfg.init)
    photos = PhotoBank(cfg.photos, cfg.load_size, cfg.size, cfg.photo_limit)
    log.info("%d photos, styles %s, %d parameters", len(photos), cfg.styles, sum(t.numel() for t in net.parameters()))
    params = list(net.parameters())
    report = fit(net.train(), vgg, targets, photos, cfg, Trainable(params, [None] * len(params)), Path(cfg.out),
                 extra={"styles": list(cfg.styles), "exemplars": {s: [f.name for f in fs] for s, fs in files.items()}})
    log.info("done: %s", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
