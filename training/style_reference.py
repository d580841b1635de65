"""Optimisation-based style transfer with the training losses: what those losses can reach.

Gatys et al. (2016) optimise the image itself instead of a generator. Run with the losses and
targets of a style run (content on the output's luminance, Gram and log channel statistics
against the mean over crops of the run's exemplar paintings), it shows whether a target is
reachable at all and whether :mod:`training.style_eval`'s classifier recognises an image that
meets it, separating "the losses do not describe the style" from "the generator cannot meet
the losses". Each photo is rendered in every painting style at once (one batch), and scored
with the classifier at the size the image was optimised at.

Example:
    python -m training.style_reference --exemplars runs/style5/exemplars.json --photos 2 --steps 100 \\
        --short-side 224 --out runs/style_reference
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training import losses
from training.data import list_images
from training.model import rgb_to_ycbcr
from training.config import parse_config
from training.style_eval import CLASSES, DEFAULT_DATASETS, DEFAULT_VGG, PAINTING_STYLES, ClassifierConfig, StyleClassifier, evenly_spaced, get_classifier, vgg_style_features

log = logging.getLogger("chromaforge.style_reference")


@dataclass(frozen=True)
class ReferenceConfig:
    """Settings of an optimisation run (saved as ``config.json`` beside its outputs).

    Attributes:
        exemplars: a style run's ``exemplars.json`` (style -> painting file names).
        datasets: folder with ``styles/<style>/train`` and ``photos/val``.
        vgg: VGG19 safetensors file.
        out: folder for the PNGs (input, then one column per style) and ``summary.json``.
        photos: validation photos (evenly spaced over ``photos/val``).
        short_side: the photo's short side when optimised (``0``: long side ``long_side``).
        long_side: long side when ``short_side`` is 0.
        steps: Adam steps on the pixels.
        lr: Adam learning rate.
        w_content, w_style, w_stats: loss weights, as in :class:`training.train.TrainConfig`.
        margin: pixels each side left out of the style losses, as ``--loss-margin``.
        crop: side of the painting crops the targets are averaged over (at the paintings' own size).
        threads: torch threads (0: torch's default).
    """

    exemplars: str
    datasets: str = str(DEFAULT_DATASETS)
    vgg: str = str(DEFAULT_VGG)
    out: str = "runs/style_reference"
    photos: int = 2
    short_side: int = 224
    long_side: int = 256
    steps: int = 100
    lr: float = 0.02
    w_content: float = 2.0
    w_style: float = 5.0
    w_stats: float = 1.0
    margin: int = 16
    crop: int = 128
    threads: int = 0


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [1,3,H,W] float in [0,1]."""
    return torch.from_numpy(np.array(rgb, np.float32, copy=True)).permute(2, 0, 1)[None] / 255.0


def style_targets(cfg: ReferenceConfig, vgg: losses.VGGFeatures) -> dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Per style: (mean Gram per layer, mean log channel statistics per layer) over five crops
    (corners and centre) of each exemplar painting at its own size."""
    names = json.loads(Path(cfg.exemplars).read_text())
    out = {}
    with torch.no_grad():
        for style in PAINTING_STYLES:
            grams, stats = [], []
            for name in names[style]:
                a = np.asarray(Image.open(Path(cfg.datasets) / "styles" / style / "train" / name).convert("RGB"))
                h, w = a.shape[:2]
                c = min(cfg.crop, h, w)
                corners = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
                feats = vgg(torch.cat([_tensor(a[y : y + c, x : x + c]) for y, x in corners]))
                grams.append([losses.gram(f).mean(0) for f in feats])
                stats.append([losses.channel_stats(f).mean(0) for f in feats])
            out[style] = ([torch.stack(g).mean(0) for g in zip(*grams)], [torch.stack(s).mean(0) for s in zip(*stats)])
    return out


def optimise(cfg: ReferenceConfig, luma: torch.Tensor, targets, vgg: losses.VGGFeatures) -> tuple[np.ndarray, dict[str, float]]:
    """Every painting style for one photo's luminance [1,1,H,W]: (uint8 [S,H,W,3], final losses)."""
    with torch.no_grad():
        content = vgg(luma.expand(-1, 3, -1, -1))[-1]
    grams = [torch.stack([targets[s][0][li] for s in PAINTING_STYLES]) for li in range(3)]
    stats = [torch.stack([targets[s][1][li] for s in PAINTING_STYLES]) for li in range(3)]
    x = luma.expand(len(PAINTING_STYLES), 3, -1, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    m = cfg.margin
    for _ in range(cfg.steps):
        img = x.clamp(0.0, 1.0)
        feats = vgg(img)
        mine = vgg(rgb_to_ycbcr(img)[:, :1].expand(-1, 3, -1, -1))[-1]
        l_content = losses.content_loss(mine, content)
        feats = losses.crop_margin(feats, m)
        l_style = losses.gram_loss(feats, grams)
        l_stats = losses.stats_loss(feats, stats)
        loss = cfg.w_content * l_content + cfg.w_style * l_style + cfg.w_stats * l_stats
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = (x.detach().clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
    return out, {"content": l_content.item(), "style": l_style.item(), "stats": l_stats.item()}


def run(cfg: ReferenceConfig, clf: StyleClassifier | None = None) -> dict:
    """Optimise ``cfg.photos`` photos in every style; write PNGs and ``summary.json``; return the summary.

    Args:
        cfg: settings.
        clf: the style classifier (None: :func:`training.style_eval.get_classifier`'s cached default).
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    vgg = losses.VGGFeatures(cfg.vgg)
    if clf is None:
        clf, _ = get_classifier(ClassifierConfig(datasets=cfg.datasets, vgg=cfg.vgg), vgg=vgg)
    size = int(clf.meta["config"]["size"])
    targets = style_targets(cfg, vgg)
    photos = evenly_spaced(list_images(Path(cfg.datasets) / "photos" / "val"), cfg.photos)
    hits = np.zeros(len(PAINTING_STYLES))
    rows = []
    for path in photos:
        t0 = time.time()
        im = Image.open(path).convert("RGB")
        s = cfg.short_side / min(im.size) if cfg.short_side else cfg.long_side / max(im.size)
        im = im.resize((max(32, round(im.width * s)), max(32, round(im.height * s))), Image.BICUBIC)
        rgb = _tensor(np.asarray(im))
        images, final = optimise(cfg, rgb_to_ycbcr(rgb)[:, :1], targets, vgg)
        proba = clf.predict_proba(vgg_style_features(list(images), vgg, size))
        verdict = [CLASSES[i] for i in proba.argmax(1)]
        hits += [v == s for v, s in zip(verdict, PAINTING_STYLES)]
        Image.fromarray(np.concatenate([np.asarray(im), *images], axis=1)).save(out / f"{path.stem}.png")
        rows.append({"photo": path.name, "size": list(im.size), "verdict": verdict, "losses": final, "seconds": round(time.time() - t0, 1)})
        log.info("%s %s %s", path.name, verdict, {k: round(v, 3) for k, v in final.items()})
    summary = {"config": asdict(cfg), "recognised": dict(zip(PAINTING_STYLES, (hits / max(len(photos), 1)).tolist())), "photos": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(ReferenceConfig, argv, "python -m training.style_reference", __doc__)[1]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run(cfg)
    log.info("recognised: %s", summary["recognised"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
