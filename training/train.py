"""Trainer for the unified generator.

Every step trains on one batch of colour photos (colorization: class-rebalanced cross-entropy over
quantised chroma bins, optionally L1 / colourfulness / adversarial terms) and, with probability
``style_fraction``, one batch of photos rendered in random painting styles (unpaired: VGG content
loss on the input luminance, Gram style losses at relu1_1..relu3_1 against the style's mean Gram,
optionally adversarial against that style's paintings). One projection discriminator judges
both when its weights are non-zero: class 0 is "real photo", class k style k. The MobileNetV2
encoder is frozen unless ``lr_encoder`` > 0.

Run ``python -m training --help`` for the flags; each is a field of :class:`TrainConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdk import contract, metrics, processing
from training import losses
from training.data import ImageBank, list_images
from training.model import Discriminator, Generator, GeneratorConfig, one_hot_style, rgb_to_ycbcr, ycbcr_to_rgb

log = logging.getLogger(__name__)

PAINTING_STYLES = tuple(s for s in contract.STYLES if s != contract.NATURAL)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` beside each checkpoint.

    ``last.pt`` is rewritten every ``ckpt_every`` steps; ``keep_every`` > 0 also keeps
    ``step_NNNNNN.pt`` snapshots for choosing a checkpoint on validation metrics afterwards.
    """

    photos: str = "../shared/datasets/photos/train"
    val_photos: str = "../shared/datasets/photos/val"
    styles_root: str = "../shared/datasets/styles"
    style_split: str = "train"
    vgg: str = "../shared/weights/vgg19_relu3_1_caffe.safetensors"
    mobilenet: str = "../shared/weights/mobilenet_v2_100.safetensors"
    out: str = "runs/default"
    size: int = 128
    batch: int = 8
    style_batch: int = 4
    steps: int = 2000
    style_fraction: float = 0.5
    colour: bool = True
    style_exemplars: int = 0
    loss_margin: int = 0
    load_size: int = 256
    crop_scale: tuple[float, float] = (1.0, 2.0)
    photo_limit: int = 0
    style_limit: int = 0
    lr_g: float = 5e-4
    lr_encoder: float = 0.0
    lr_d: float = 2e-4
    w_ce: float = 1.0
    rebalance_lambda: float = 0.5
    w_l1: float = 0.0
    rebalance: float = 10.0
    w_adv_color: float = 0.0
    w_cf: float = 0.0
    w_content: float = 1.0
    w_style: float = 5.0
    style_layers: tuple[float, float, float] = (1.0, 1.0, 1.0)
    w_adv_style: float = 0.0
    w_tv: float = 0.0
    gram_samples: int = 64
    painting_scale: float = 1.75
    ema: float = 0.999
    widths: tuple[int, int, int, int, int] = (96, 64, 32, 24, 12)
    style_widths: tuple[int, int] = GeneratorConfig.style_widths
    attention: bool = GeneratorConfig.attention
    padding: str = GeneratorConfig.padding
    upsample: str = GeneratorConfig.upsample
    bin_step: float = GeneratorConfig.bin_step
    temperature: float = GeneratorConfig.temperature
    val_every: int = 500
    val_images: int = 32
    ckpt_every: int = 500
    keep_every: int = 0
    init: str = ""
    resume: str = ""
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    progress: bool = True

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(widths=tuple(self.widths), style_widths=tuple(self.style_widths), attention=self.attention, padding=self.padding,
                               upsample=self.upsample, bin_step=self.bin_step, temperature=self.temperature)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from kebab-case flags (``--style-fraction 0.5``)."""
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            p.add_argument(flag, type=type(default[0]), nargs=len(default), default=default, metavar="N")
        else:
            p.add_argument(flag, type=type(default), default=default)
    ns = p.parse_args(argv)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()}
    return TrainConfig(**values)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_tensor(batch_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    """[N,H,W,3] uint8 -> [N,3,H,W] float in [0,1]."""
    return torch.from_numpy(np.require(batch_u8, requirements="W")).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class Trainer:
    """Holds the models, optimisers, data and state of one run."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)

        self.G = Generator(cfg.generator_config()).to(self.device)
        if cfg.mobilenet:
            self.G.encoder.load_pretrained(cfg.mobilenet)
        self.G.freeze_encoder(cfg.lr_encoder <= 0)
        self.G_ema = Generator(cfg.generator_config()).to(self.device).eval().requires_grad_(False)
        self.D = Discriminator().to(self.device)
        self.use_d = cfg.w_adv_color > 0 or cfg.w_adv_style > 0
        enc = [p for p in self.G.encoder.parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in self.G.named_parameters() if not n.startswith("encoder.")]}]
        if enc:
            groups.append({"params": enc, "lr": cfg.lr_encoder})
        self.opt_g = torch.optim.Adam(groups, lr=cfg.lr_g, betas=(0.5, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.99))
        self.step = 0
        self.history: list[dict[str, float]] = []

        limit = cfg.photo_limit or None
        self.photos = ImageBank(cfg.photos, cfg.load_size, limit)
        self.bins = self.G.bins
        prior = losses.chroma_prior(self.photos.images, self.bins.cpu(), seed=cfg.seed)
        self.class_weights = losses.rebalance_weights(prior, self.bins.cpu(), cfg.rebalance_lambda, cfg.bin_step).to(self.device)
        self.val_files = list_images(cfg.val_photos)[: cfg.val_images] if cfg.val_photos else []
        self.paintings: dict[int, ImageBank] = {}
        self.vgg: losses.VGGFeatures | None = None
        self.style_grams: dict[int, list[torch.Tensor]] = {}
        if cfg.style_fraction > 0:
            self.vgg = losses.VGGFeatures(cfg.vgg).to(self.device)
            for name in PAINTING_STYLES:
                idx = contract.STYLES.index(name)
                folder = Path(cfg.styles_root) / name / cfg.style_split
                self.paintings[idx] = ImageBank(folder, cfg.load_size, cfg.style_limit or None)
            self._style_targets()

        self.G_ema.load_state_dict(self.G.state_dict())
        if cfg.resume:
            self._load(cfg.resume, full=True)
        elif cfg.init:
            self._load(cfg.init, full=False)
        self.amp = self.device.type == "cuda"

    # ---------------------------------------------------------------- setup
    @torch.no_grad()
    def _style_targets(self) -> None:
        """Mean Gram matrices per style over random crops of its paintings (or of its exemplars)."""
        assert self.vgg is not None
        if self.cfg.style_exemplars:
            self._pick_exemplars()
        for idx, bank in self.paintings.items():
            acc = None
            n = self.cfg.gram_samples
            for start in range(0, n, 16):
                scale = (self.cfg.painting_scale, self.cfg.painting_scale)  # 1.75 x 128 = the paintings' own 224 px
                crops = to_tensor(bank.batch(self.rng, min(16, n - start), self.cfg.size, scale), self.device)
                grams = [losses.gram(f).sum(0) for f in self.vgg(crops)]
                acc = grams if acc is None else [a + g for a, g in zip(acc, grams)]
            self.style_grams[idx] = [a / n for a in acc]

    @torch.no_grad()
    def _pick_exemplars(self) -> None:
        """Keep, per style, the ``style_exemplars`` paintings nearest the school's mean Gram.

        A mean Gram over a whole school averages its textures away (palette and wash, no strokes);
        the paintings nearest that mean are typical of the school and carry real brushwork.
        """
        size = round(self.cfg.size * self.cfg.painting_scale)
        cache = self.out / "exemplars.json"
        picked = json.loads(cache.read_text()) if cache.is_file() else {}
        for idx, bank in self.paintings.items():
            name = contract.STYLES[idx]
            index = {p.name: i for i, p in enumerate(bank.files)}
            if len(picked.get(name, [])) == self.cfg.style_exemplars and all(f in index for f in picked[name]):
                order = [index[f] for f in picked[name]]
                bank.images = [bank.images[i] for i in order]
                bank.files = [bank.files[i] for i in order]
                log.info("%s exemplars (from %s): %s", name, cache, picked[name])
                continue
            feats = []
            cand = np.linspace(0, len(bank.images) - 1, min(256, len(bank.images))).astype(int).tolist()  # candidates, evenly spaced
            for start in range(0, len(cand), 32):
                chunk = [np.asarray(Image.fromarray(bank.images[i]).resize((size, size), Image.BILINEAR)) for i in cand[start : start + 32]]
                grams = [losses.gram(f) for f in self.vgg(to_tensor(np.stack(chunk), self.device))]
                feats.append(torch.cat([g.flatten(1) / g.flatten(1).norm(dim=1, keepdim=True) for g in grams], dim=1))
            f = torch.cat(feats)
            order = [cand[i] for i in (f - f.mean(0)).norm(dim=1).argsort()[: self.cfg.style_exemplars].tolist()]
            log.info("%s exemplars: %s", contract.STYLES[idx], [bank.files[i].name for i in order])
            bank.images = [bank.images[i] for i in order]
            bank.files = [bank.files[i] for i in order]
            picked[name] = [p.name for p in bank.files]
        cache.write_text(json.dumps(picked, indent=1))

    def _load(self, path: str, full: bool) -> None:
        """Resume (everything) or init (generator and discriminator weights; the EMA restarts from G).

        An init may come from an earlier design: tensors whose shape changed are left as initialised.
        """
        ck = torch.load(path, map_location=self.device, weights_only=False)
        if full:
            self.G.load_state_dict(ck["G"])
            self.G_ema.load_state_dict(ck["G_ema"])
        else:
            own = self.G.state_dict()
            fit = {k: v for k, v in ck["G"].items() if k in own and own[k].shape == v.shape}
            skipped = sorted(set(own) - set(fit))
            if skipped:
                log.info("init: %d tensors keep their fresh initialisation (shape changed): %s", len(skipped), skipped)
            self.G.load_state_dict(fit, strict=False)
            self.G_ema.load_state_dict(self.G.state_dict())
        if "D" in ck:
            self.D.load_state_dict(ck["D"])
        if full:
            self.opt_g.load_state_dict(ck["opt_g"])
            self.opt_d.load_state_dict(ck["opt_d"])
            self.step = ck["step"]
            self.history = ck.get("history", [])
            self.rng = np.random.default_rng(self.cfg.seed + self.step)
        log.info("loaded %s (%s) at step %d", path, "resume" if full else "init", ck["step"])

    def save(self, name: str = "last.pt") -> Path:
        """Write the checkpoint and the resolved config beside it."""
        path = self.out / name
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "G": self.G.state_dict(),
                "G_ema": self.G_ema.state_dict(),
                "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(),
                "step": self.step,
                "history": self.history,
                "config": dataclasses.asdict(self.cfg),
                "generator": dataclasses.asdict(self.cfg.generator_config()),
            },
            tmp,
        )
        tmp.replace(path)
        (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2))
        return path

    # ---------------------------------------------------------------- steps
    def _encode(self, luma: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features; no autograd graph through the encoder while it is frozen."""
        with torch.set_grad_enabled(self.cfg.lr_encoder > 0):
            return self.G.encoder(luma)

    def _colour_losses(self, rgb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        cfg = self.cfg
        ycc = rgb_to_ycbcr(rgb)
        luma = ycc[:, :1]
        style = one_hot_style(torch.zeros(len(rgb), dtype=torch.long, device=self.device))
        pred, logits = self.G.natural(self._encode(luma), luma, style)  # the style branch is weighted 0 here: skip it
        fake_rgb = ycbcr_to_rgb(pred)
        true4 = F.avg_pool2d(ycc[:, 1:], 4)  # [N,2,H/4,W/4]: the colour head's resolution
        ce = losses.colour_ce(logits, true4, self.bins, self.class_weights, 0.5 * cfg.bin_step)
        total = cfg.w_ce * ce
        stats = {"ce": ce.item()}
        if cfg.w_l1:
            l1 = losses.rebalanced_l1(pred[:, 1:], ycc[:, 1:], cfg.rebalance)
            total = total + cfg.w_l1 * l1
            stats["l1"] = l1.item()
        if cfg.w_adv_color:
            adv = losses.g_hinge(self.D(fake_rgb, torch.zeros(len(rgb), dtype=torch.long, device=self.device)))
            total = total + cfg.w_adv_color * adv
            stats["adv_c"] = adv.item()
        if cfg.w_cf:
            # Against washed-out colour: match each image's colourfulness (DDColor's |dCF|), 0..255 scale / 100.
            l_cf = (losses.colourfulness(fake_rgb.float()) - losses.colourfulness(rgb)).abs().mean() / 100.0
            total = total + cfg.w_cf * l_cf
            stats["cf"] = l_cf.item()
        return total, stats, fake_rgb

    def _style_losses(self, rgb: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        cfg = self.cfg
        assert self.vgg is not None
        luma = rgb_to_ycbcr(rgb)[:, :1]
        style = one_hot_style(labels)
        pred = self.G.styled(self._encode(luma), luma, style)
        fake_rgb = ycbcr_to_rgb(pred)
        feats = self.vgg(fake_rgb)
        with torch.no_grad():
            content = self.vgg(luma.expand(-1, 3, -1, -1))[-1]
        l_content = F.mse_loss(feats[-1], content) / (content.pow(2).mean() + 1e-8)  # whole image, borders too
        m = cfg.loss_margin
        if m:  # style statistics of the centre only: the borders cannot buy Gram statistics with frames
            feats = [f[..., m // k : -(m // k), m // k : -(m // k)] for f, k in zip(feats, (1, 2, 4))]
        l_style = fake_rgb.new_zeros(())
        for li, f in enumerate(feats):
            g = losses.gram(f.float())
            target = torch.stack([self.style_grams[int(k)][li] for k in labels])
            rel = ((g - target) ** 2).sum(dim=(1, 2)).div(target.pow(2).sum(dim=(1, 2))).mean()
            l_style = l_style + cfg.style_layers[li] * rel
        total = cfg.w_content * l_content + cfg.w_style * l_style
        stats = {"content": l_content.item(), "style": l_style.item()}
        if cfg.w_tv:
            total = total + cfg.w_tv * losses.total_variation(fake_rgb)
        if cfg.w_adv_style:
            adv = losses.g_hinge(self.D(fake_rgb, labels))
            total = total + cfg.w_adv_style * adv
            stats["adv_s"] = adv.item()
        return total, stats, fake_rgb

    def train_step(self) -> dict[str, float]:
        """One generator and one discriminator update; returns the losses."""
        cfg = self.cfg
        rgb = to_tensor(self.photos.batch(self.rng, cfg.batch, cfg.size, cfg.crop_scale), self.device)
        do_style = self.paintings and self.rng.random() < cfg.style_fraction
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if cfg.colour:
                loss_g, stats, fake_c = self._colour_losses(rgb)
            else:
                loss_g, stats, fake_c = rgb.new_zeros(()), {}, None
            if do_style:
                labels_np = self.rng.choice(sorted(self.paintings), size=cfg.style_batch)
                labels = torch.from_numpy(labels_np).to(self.device)
                size_s = cfg.size + 2 * cfg.loss_margin  # 32-multiple sizes keep the encoder exact
                rgb_s = to_tensor(self.photos.batch(self.rng, cfg.style_batch, size_s, cfg.crop_scale), self.device)
                loss_s, stats_s, fake_s = self._style_losses(rgb_s, labels)
                loss_g = loss_g + loss_s
                stats.update(stats_s)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        if self.use_d:
            stats["d"] = self._d_step(rgb, fake_c, labels_np if do_style else None, fake_s if do_style else None)
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                pe.lerp_(p, 1.0 - cfg.ema)
            for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
                be.copy_(b)
        self.step += 1
        stats["g"] = loss_g.item()
        return stats

    def _d_step(self, rgb: torch.Tensor, fake_c: torch.Tensor, labels_np, fake_s) -> float:
        """Discriminator update: real photos vs colorized, real paintings vs stylized."""
        cfg = self.cfg
        do_style = labels_np is not None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            zeros = torch.zeros(cfg.batch, dtype=torch.long, device=self.device)
            loss_d = losses.d_hinge(self.D(rgb, zeros), self.D(fake_c.detach(), zeros))
            if do_style:
                labels = torch.from_numpy(labels_np).to(self.device)
                real_p = torch.cat([to_tensor(self.paintings[int(k)].batch(self.rng, 1, cfg.size, (1.0, 1.0)), self.device) for k in labels_np])
                loss_d = loss_d + losses.d_hinge(self.D(real_p, labels), self.D(fake_s.detach(), labels))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return loss_d.item()

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR / SSIM / colourfulness of EMA colorization at the working size, vs the grey baseline."""
        rows = []
        for f in self.val_files:
            rgb = _load_work_size(f)
            x = to_tensor(rgb[None], self.device)
            ycc = rgb_to_ycbcr(x)
            pred = self.G_ema(ycc[:, :1], one_hot_style(torch.zeros(1, dtype=torch.long, device=self.device)))
            pred = torch.cat([ycc[:, :1], pred[:, 1:]], 1)  # colour onto the true luminance, as the SDK does
            out = (ycbcr_to_rgb(pred)[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            grey = np.repeat((ycc[0, 0].cpu().numpy()[..., None] * 255).round().clip(0, 255).astype(np.uint8), 3, 2)
            rows.append((metrics.psnr(out, rgb), metrics.psnr(grey, rgb), metrics.colourfulness(out), metrics.colourfulness(rgb)))
        if not rows:
            return {}
        a = np.mean(rows, axis=0)
        return {"val_psnr": a[0], "val_psnr_grey": a[1], "val_cf": a[2], "val_cf_true": a[3]}

    @torch.no_grad()
    def sample_grid(self, path: Path, n: int = 4) -> None:
        """Rows: validation photos; columns: grey input, each style, ground truth."""
        tiles = []
        for f in self.val_files[:n]:
            rgb = _load_work_size(f, square=True)
            x = to_tensor(rgb[None], self.device)
            luma = rgb_to_ycbcr(x)[:, :1]
            row = [np.repeat((luma[0, 0].cpu().numpy()[..., None] * 255).astype(np.uint8), 3, 2)]
            for k in range(len(contract.STYLES)):
                out = ycbcr_to_rgb(self.G_ema(luma, one_hot_style(torch.tensor([k], device=self.device))))
                row.append((out[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
            row.append(rgb)
            tiles.append(np.concatenate(row, axis=1))
        if tiles:
            Image.fromarray(np.concatenate(tiles, axis=0)).save(path)

    # ---------------------------------------------------------------- loop
    def fit(self) -> None:
        cfg = self.cfg
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress, dynamic_ncols=True)
        t0 = time.time()
        logf = (self.out / "log.jsonl").open("a")
        while self.step < cfg.steps:
            stats = self.train_step()
            bar.update(1)
            if self.step % 10 == 0:
                bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items()})
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                stats.update(self.validate())
                self.sample_grid(self.out / f"samples_{self.step:06d}.png")
                log.info("step %d %s", self.step, {k: round(v, 4) for k, v in stats.items()})
            stats.update(step=self.step, time=time.time() - t0)
            logf.write(json.dumps(stats) + "\n")
            if self.step % 50 == 0:
                logf.flush()
            self.history.append(stats)
            self.history = self.history[-1000:]
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                self.save()
            if cfg.keep_every and self.step % cfg.keep_every == 0:
                self.save(f"step_{self.step:06d}.pt")  # kept for checkpoint selection
        logf.close()
        bar.close()


def _load_work_size(path: Path, square: bool = False) -> np.ndarray:
    """A validation photo at the default working size: long side WORK_SIZE, sides multiples of SIZE_MULTIPLE."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if square:
            s = min(im.size)
            im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))
        h, w = processing.work_shape(im.height, im.width, contract.WORK_SIZE, contract.SIZE_MULTIPLE)
        return np.asarray(im.resize((w, h), Image.BILINEAR))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = parse_args(argv)
    trainer = Trainer(cfg)
    log.info("training on %s: %d photos, %s", trainer.device, len(trainer.photos), {contract.STYLES[k]: len(v) for k, v in trainer.paintings.items()})
    trainer.fit()
    return 0

