"""Colour trainer: the generator's encoder and colour decoder (``python -m training``).

Every step trains on one batch of colour photos: class-rebalanced cross-entropy over quantised
chroma bins, optionally L1 / colourfulness / adversarial terms on the output, which passes through
the read-out the export bakes in when its flags are given (``--prior-correction``,
``--chroma-gain``, ``--chroma-scale``, ``--chroma-guide``). The adversarial term's discriminator
judges real photos against colorized ones. The MobileNetV2 encoder is frozen unless ``lr_encoder``
> 0. The style path (:mod:`training.stylenet`) is not trained here: ``python -m
training.style_train`` trains it, and ``python -m export onnx --style-checkpoint`` joins the two
runs; this trainer leaves the generator's own style path as initialised (or as ``--init`` loaded it).

Run ``python -m training --help`` for the flags; each is a field of :class:`TrainConfig`, the
generator's settings (``--widths``, ``--temperature``...) those of its nested
:class:`training.model.GeneratorConfig`. The same command runs on several processes with
``torchrun --nproc-per-node N -m training ...`` (DDP; see :mod:`training.distributed`): ``batch``
is then per process.

A checkpoint carries what the export needs, so the export reads nothing but the checkpoint: the
generator's config (``generator``; with ``chroma_gain`` > 0 its ``chroma_gain_ref`` measured on
the training photos at save time, :func:`chroma_gain_reference`) and the class-rebalancing
weights (``class_weights``, for the prior correction).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from sdk import contract, resample
from training import metrics
from training import distributed, losses
from training.config import parse_config
from training.data import ImageBank, list_images, select_files
from training.encoder import STAGE_STRIDES
from training.model import Discriminator, Generator, GeneratorConfig, rgb_to_ycbcr, ycbcr_to_rgb

log = logging.getLogger(__name__)

GAIN_REFERENCE_PHOTOS = 200
"""Training photos (evenly spaced) the chroma gain's reference is measured on."""


def _opt(default, help: str):
    """A config field with its flag's help text."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a colour run depends on; saved as ``config.json`` beside each checkpoint.

    ``last.pt`` is rewritten every ``ckpt_every`` steps; ``keep_every`` > 0 also keeps
    ``step_NNNNNN.pt`` snapshots for choosing a checkpoint on validation metrics afterwards.
    """

    photos: str = _opt("../shared/datasets/photos/train", "folder of colour training photos (searched recursively; grey ones skipped)")
    val_photos: str = _opt("../shared/datasets/photos/val", "folder of validation photos ('': no validation or sample grids)")
    mobilenet: str = _opt("../shared/weights/mobilenet_v2_100.safetensors", "pretrained MobileNetV2 weights for the encoder ('': random)")
    out: str = _opt("runs/default", "run folder: checkpoints, config.json, log.jsonl, sample grids")
    size: int = _opt(128, "training crop side in pixels (a multiple of 32)")
    batch: int = _opt(8, "photos per step (per process under torchrun)")
    steps: int = _opt(2000, "total steps (a --resume continues to this count)")
    load_size: int = _opt(256, "short side photos are reduced to when loaded")
    crop_scale: tuple[float, float] = _opt((1.0, 2.0), "range of the crop's side in units of --size, before resizing to it")
    photo_limit: int = _opt(0, "use at most this many training photos, evenly spaced (0: all)")
    lr_g: float = _opt(5e-4, "Adam learning rate of the colour decoder")
    lr_encoder: float = _opt(0.0, "learning rate of the encoder (0: frozen)")
    encoder_tune_stride: int = _opt(2, f"with --lr-encoder > 0: fine-tune the encoder's stages at this stride and coarser, one of "
                                       f"{STAGE_STRIDES} (2: all of it; 16: its stride-16/32 blocks and head)")
    lr_d: float = _opt(2e-4, "Adam learning rate of the discriminator")
    w_ce: float = _opt(1.0, "weight of the class-rebalanced colour cross-entropy")
    rebalance_lambda: float = _opt(0.5, "class rebalancing: mix of the colour prior with a uniform one (Zhang et al.'s lambda)")
    w_l1: float = _opt(0.0, "weight of the saturation-rebalanced L1 loss on the output chroma")
    rebalance: float = _opt(10.0, "saturation rebalancing of the L1 loss (0: plain L1)")
    w_adv_color: float = _opt(0.0, "weight of the adversarial loss (discriminator: real photos vs colorized)")
    w_cf: float = _opt(0.0, "weight of the colourfulness loss (|colourfulness(output) - colourfulness(photo)| / 100)")
    d_warmup: int = _opt(0, "first steps that train the discriminator alone, the generator left as loaded "
                            "(for an --init without discriminator state); needs --w-adv-color > 0")
    d_border: int = _opt(0, "discriminator patches dropped along each edge (no judging at the edges)")
    ema: float = _opt(0.999, "decay of the generator's exponential moving average (validated, sampled and exported)")
    generator: GeneratorConfig = GeneratorConfig(widths=(96, 64, 32, 24, 12))
    val_every: int = _opt(500, "validate and write a sample grid every this many steps")
    val_images: int = _opt(32, "validation photos (the first of --val-photos)")
    ckpt_every: int = _opt(500, "rewrite last.pt every this many steps")
    keep_every: int = _opt(0, "also keep step_NNNNNN.pt every this many steps (0: none)")
    init: str = _opt("", "start from this checkpoint's generator and discriminator weights (step 0, fresh optimisers); "
                         "tensors absent or reshaped there stay as initialised")
    init_ema: bool = _opt(False, "with --init: take its EMA generator weights instead of the raw ones")
    resume: str = _opt("", "continue this checkpoint's run: weights, EMA, optimisers, step")
    device: str = _opt("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    threads: int = _opt(0, "torch CPU threads (0: torch's default)")
    seed: int = _opt(0, "seed of weights, crops and the colour prior's samples")
    progress: bool = _opt(True, "show a progress bar")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from kebab-case flags (``--photo-limit 50``, ``--temperature 0.5``)."""
    return parse_config(TrainConfig, argv, "python -m training", __doc__)[1]


def colour_class_weights(config: dict, bins: torch.Tensor) -> torch.Tensor:
    """A colour run's class-rebalancing weights [Q], recomputed from its resolved config (the
    ``config`` entry of a checkpoint) as a single-process run computes them; for checkpoints
    written before they were saved (``class_weights``). Reads ``bin_step`` from the config's
    ``generator`` entry, or from the config itself (runs before the nested generator config).

    Raises:
        FileNotFoundError: the run's training photos are not where its config says.
    """
    photos = Path(config["photos"])
    if not photos.is_dir():
        raise FileNotFoundError(f"the colour run's training photos {photos} are not there; the class weights are "
                                "recomputed from them (run from the folder the run was started in, beside ../shared)")
    bin_step = config["generator"]["bin_step"] if isinstance(config.get("generator"), dict) else config["bin_step"]
    bank = ImageBank(photos, config["load_size"], files=select_files(photos, config.get("photo_limit") or None))
    prior = losses.chroma_prior(bank.images, bins, seed=config.get("seed", 0))
    return losses.rebalance_weights(prior, bins, config["rebalance_lambda"], bin_step)


@torch.no_grad()
def chroma_gain_reference(G: Generator, photos: str | Path, work_size: int = contract.WORK_SIZE,
                          limit: int = GAIN_REFERENCE_PHOTOS) -> float:
    """Median over up to ``limit`` photos (evenly spaced, sorted) of the generator's mean expected
    chroma magnitude (:meth:`Generator.annealed_mean`, so with its temperature and prior
    correction), each photo's luminance at ``work_size`` as the SDK runs it: the reference of the
    per-image chroma gain (``GeneratorConfig.chroma_gain_ref``), rounded to 4 decimals.

    Raises:
        FileNotFoundError: ``photos`` is not a folder of images.
    """
    files = select_files(photos, limit) if str(photos) and Path(photos).is_dir() else []
    if not files:
        raise FileNotFoundError(f"no photos in {str(photos)!r} to measure the chroma gain's reference on")
    device = next(G.parameters()).device
    values = []
    for f in files:
        with Image.open(f) as im:
            luma = np.asarray(im.convert("L"))
        x = resample.resize_luma(luma, resample.work_shape(*luma.shape, work_size, contract.SIZE_MULTIPLE))
        logits = G.colour_logits(G.encoder(torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device)))
        values.append(float(G.annealed_mean(logits.float())[1][0]))
    return round(float(np.median(values)), 4)


def to_tensor(batch_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    """[N,H,W,3] uint8 -> [N,3,H,W] float in [0,1]."""
    return torch.from_numpy(np.require(batch_u8, requirements="W")).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class GeneratorStep(nn.Module):
    """The generator's part of one training step as a single forward (the module DDP wraps).

    Args:
        G: the generator (its frozen encoder runs without an autograd graph).
        train_encoder: build the graph through the encoder too (``lr_encoder`` > 0).
    """

    def __init__(self, G: Generator, train_encoder: bool) -> None:
        super().__init__()
        self.G = G
        self.train_encoder = train_encoder

    def forward(self, luma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """luma [N,1,H,W] -> (natural YCbCr [N,3,H,W], colour logits [N,Q,H/4,W/4])."""
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            feats = self.G.encoder(luma)
        return self.G.natural(feats, luma)


class DiscriminatorStep(nn.Module):
    """The discriminator's hinge loss of one step (real photos vs colorized) as a single forward,
    for the same reason as :class:`GeneratorStep`."""

    def __init__(self, D: Discriminator) -> None:
        super().__init__()
        self.D = D

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(len(real), dtype=torch.long, device=real.device)
        return losses.d_hinge(self.D(real, zeros), self.D(fake, zeros[: len(fake)]))


class Trainer:
    """Holds the models, optimisers, data and state of one run.

    Args:
        cfg: the run's configuration.
        dist: this process's place in a torchrun job (:func:`training.distributed.setup`); None
            for a single process.
        device: the device from :func:`training.distributed.setup`; None resolves ``cfg.device``.
    """

    def __init__(self, cfg: TrainConfig, dist: distributed.Dist | None = None, device: torch.device | None = None) -> None:
        if cfg.init_ema and not cfg.init:
            raise ValueError("init_ema takes the EMA weights of --init's checkpoint, but no --init was given; "
                             "add --init PATH (a --resume restores the EMA anyway)")
        if cfg.d_warmup < 0:
            raise ValueError(f"d_warmup counts steps of discriminator-only training; expected >= 0, got {cfg.d_warmup}")
        if cfg.d_warmup and not cfg.w_adv_color > 0:
            raise ValueError(f"d_warmup={cfg.d_warmup} trains the discriminator alone, but w_adv_color is {cfg.w_adv_color}: "
                             "there is no discriminator to train; add --w-adv-color or drop --d-warmup")
        if cfg.encoder_tune_stride not in STAGE_STRIDES:
            raise ValueError(f"encoder_tune_stride must be one of {STAGE_STRIDES} (the encoder's stages); got {cfg.encoder_tune_stride}")
        if cfg.size <= 0 or cfg.size % contract.SIZE_MULTIPLE:
            raise ValueError(f"size must be a positive multiple of {contract.SIZE_MULTIPLE} (the encoder's stride); got {cfg.size}")
        self.cfg = cfg
        self.dist = dist or distributed.Dist()
        self.device = device or distributed.resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.rng = self._rank_rng(0)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)

        self.G = Generator(cfg.generator).to(self.device)
        if cfg.mobilenet:
            self.G.encoder.load_pretrained(cfg.mobilenet)
        self.G.freeze_encoder(cfg.lr_encoder <= 0, cfg.encoder_tune_stride)
        self.G.style_net.requires_grad_(False)  # trained by training.style_train, not here
        self.G_ema = Generator(cfg.generator).to(self.device).eval().requires_grad_(False)
        self.D = Discriminator(n_styles=1, border=cfg.d_border).to(self.device)  # one class: real photo
        self.use_d = cfg.w_adv_color > 0
        enc = [p for p in self.G.encoder.parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in self.G.named_parameters() if p.requires_grad and not n.startswith("encoder.")]}]
        if enc:
            groups.append({"params": enc, "lr": cfg.lr_encoder})
        self.opt_g = torch.optim.Adam(groups, lr=cfg.lr_g, betas=(0.5, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(0.5, 0.99))
        self.step = 0
        self.history: list[dict[str, float]] = []

        # Each rank loads only its share of the photos (a DistributedSampler over the file list).
        self.photos = ImageBank(cfg.photos, cfg.load_size, files=distributed.shard(select_files(cfg.photos, cfg.photo_limit or None), self.dist))
        self.bins = self.G.bins
        prior = losses.chroma_prior(self.photos.images, self.bins.cpu(), seed=cfg.seed + self.dist.rank)
        # The colour-bin prior over all ranks' photos (weighted by their counts): one set of class weights everywhere.
        both = self.dist.all_reduce_sum(torch.cat([prior.double() * len(self.photos), torch.tensor([float(len(self.photos))], dtype=torch.float64)]))
        prior = (both[:-1] / both[-1]).float()
        self.class_weights = losses.rebalance_weights(prior, self.bins.cpu(), cfg.rebalance_lambda, cfg.generator.bin_step).to(self.device)
        if cfg.generator.prior_correction > 0:  # the read-out takes back part of the rebalancing, as the export's does
            for g in (self.G, self.G_ema):
                g.class_log_weights.copy_(torch.log(self.class_weights))
        self.val_files = list_images(cfg.val_photos)[: cfg.val_images] if cfg.val_photos and self.dist.is_main else []

        self.G_ema.load_state_dict(self.G.state_dict())
        if cfg.resume:
            self._load(cfg.resume, full=True)
        elif cfg.init:
            self._load(cfg.init, full=False)
        self.amp = self.device.type == "cuda"
        # The modules the steps call: DDP-wrapped under torchrun (wrapped after loading, so every
        # rank starts from the same weights; checkpoints keep saving the unwrapped self.G / self.D).
        self.g_step: nn.Module = GeneratorStep(self.G, cfg.lr_encoder > 0)
        self.d_step: nn.Module = DiscriminatorStep(self.D)
        if self.dist.enabled:
            import inspect

            from torch.nn.parallel import DistributedDataParallel as DDP

            # Every trainable parameter takes part in every step (the style path is frozen), so no
            # search for unused ones. No buffer sync per forward: the generator's buffers are
            # constants (chroma bins, class weights) and the discriminator's spectral-norm vectors
            # follow its weights, identical on every rank.
            no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
            kw = {"device_ids": [self.device.index] if self.device.type == "cuda" else None, "find_unused_parameters": False, no_sync: False}
            self.g_step = DDP(self.g_step, **kw)
            if self.use_d:
                self.d_step = DDP(self.d_step, **kw)

    def _rank_rng(self, step: int) -> np.random.Generator:
        """This rank's generator for crops at ``step``: rank 0 draws what a single-process run
        draws; other ranks have their own seeds."""
        seed = self.cfg.seed + step
        return np.random.default_rng(seed if self.dist.rank == 0 else (seed, self.dist.rank))

    # ---------------------------------------------------------------- checkpoints
    def _load(self, path: str, full: bool) -> None:
        """Resume (everything) or init (generator and discriminator weights; the EMA restarts from G).

        An init takes the checkpoint's raw generator, or its EMA with ``init_ema`` (to fine-tune the
        weights a release shipped: the raw weights of a long run validate worse than its EMA).

        An init may come from an earlier design: tensors whose shape changed are left as
        initialised (the discriminator's too: one of the style runs had a class per style).
        """
        ck = torch.load(path, map_location=self.device, weights_only=False)
        if full:
            self.G.load_state_dict(ck["G"])
            self.G_ema.load_state_dict(ck["G_ema"])
            if "D" in ck:
                self.D.load_state_dict(ck["D"])
        else:
            src = ck["G_ema"] if self.cfg.init_ema else ck["G"]
            skipped = _load_fitting(self.G, src)
            if skipped:  # new in this design, or reshaped (pretrained encoder parts keep their ImageNet weights)
                log.info("init: %d tensors not taken from the checkpoint (absent or reshaped there): %s", len(skipped), skipped)
            self.G_ema.load_state_dict(self.G.state_dict())
            if "D" in ck:
                skipped = _load_fitting(self.D, ck["D"])
                if skipped:
                    log.info("init: discriminator tensors left as initialised: %s", skipped)
        if full:
            self.opt_g.load_state_dict(ck["opt_g"])
            self.opt_d.load_state_dict(ck["opt_d"])
            self.step = ck["step"]
            self.history = ck.get("history", [])
            self.rng = self._rank_rng(self.step)
        log.info("loaded %s (%s) at step %d", path, "resume" if full else "init", ck["step"])

    def saved_generator_config(self) -> GeneratorConfig:
        """The generator config a checkpoint records: the run's, with ``chroma_gain_ref`` measured
        on the training photos by the EMA generator (the weights export takes by default) when
        ``chroma_gain`` > 0, so the export reads nothing besides the checkpoint."""
        gen = self.cfg.generator
        if gen.chroma_gain > 0:
            ref = chroma_gain_reference(self.G_ema, self.cfg.photos)
            log.info("chroma gain reference on %s: %.4f", self.cfg.photos, ref)
            gen = dataclasses.replace(gen, chroma_gain_ref=ref)
        return gen

    def save(self, name: str = "last.pt") -> Path:
        """Write the checkpoint and the resolved config (``config.json``) beside it."""
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
                "class_weights": self.class_weights.cpu(),  # the read-out's prior correction uses them at export
                "config": dataclasses.asdict(self.cfg),
                "generator": dataclasses.asdict(self.saved_generator_config()),
            },
            tmp,
        )
        tmp.replace(path)
        (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(self.cfg), indent=2))
        return path

    # ---------------------------------------------------------------- steps
    def _colour_losses(self, rgb: torch.Tensor, pred: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """Colour losses of the natural output ``pred`` (and its ``logits``) for photos ``rgb``."""
        cfg = self.cfg
        ycc = rgb_to_ycbcr(rgb)
        fake_rgb = ycbcr_to_rgb(pred)
        true4 = F.avg_pool2d(ycc[:, 1:], 4)  # [N,2,H/4,W/4]: the colour head's resolution
        ce = losses.colour_ce(logits, true4, self.bins, self.class_weights, 0.5 * cfg.generator.bin_step)
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

    def train_step(self) -> dict[str, float]:
        """One generator and (with an adversarial weight) one discriminator update; returns the
        losses (averaged over ranks)."""
        cfg = self.cfg
        rgb = to_tensor(self.photos.batch(self.rng, cfg.batch, cfg.size, cfg.crop_scale), self.device)
        warmup = self.step < cfg.d_warmup  # the generator stays as loaded; only the discriminator learns
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp), torch.set_grad_enabled(not warmup):
            pred, logits = self.g_step(rgb_to_ycbcr(rgb)[:, :1])
            loss_g, stats, fake = self._colour_losses(rgb, pred, logits)
        if not warmup:
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()  # under DDP: gradients averaged over ranks here
            self.opt_g.step()
        stats["g"] = loss_g.item()
        if self.use_d:
            stats["d"] = self._d_step(rgb, fake)
        if self.dist.is_main:  # the EMA is only read on rank 0 (validation, samples, checkpoints)
            with torch.no_grad():
                for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                    pe.lerp_(p, 1.0 - cfg.ema)
                for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
                    be.copy_(b)
        self.step += 1
        return self._mean_over_ranks(stats)

    def _mean_over_ranks(self, stats: dict[str, float]) -> dict[str, float]:
        """Each loss averaged over ranks (every rank has the same keys)."""
        if not self.dist.enabled or not stats:
            return stats
        keys = sorted(stats)
        t = self.dist.all_reduce_sum(torch.tensor([stats[k] for k in keys], dtype=torch.float64)) / self.dist.world_size
        return dict(zip(keys, t.tolist()))

    def _d_step(self, rgb: torch.Tensor, fake: torch.Tensor) -> float:
        """Discriminator update: real photos vs colorized."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss_d = self.d_step(rgb, fake.detach())
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return loss_d.item()

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def _colorize(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(EMA colorization, grey input) of a uint8 photo at its own size, both uint8 RGB: the
        colour decoder alone (the exported graph's colorize branch), colour on the true luminance."""
        x = to_tensor(rgb[None], self.device)
        luma = rgb_to_ycbcr(x)[:, :1]
        pred = self.G_ema.decode_natural(self.G_ema.encoder(luma), luma)
        pred = torch.cat([luma, pred[:, 1:]], 1)  # colour onto the true luminance, as the SDK does
        out = (ycbcr_to_rgb(pred)[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        grey = np.repeat((luma[0, 0].cpu().numpy()[..., None] * 255).round().clip(0, 255).astype(np.uint8), 3, 2)
        return out, grey

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR / colourfulness of EMA colorization at the working size, vs the grey baseline."""
        rows = []
        for f in self.val_files:
            rgb = _load_work_size(f)
            out, grey = self._colorize(rgb)
            rows.append((metrics.psnr(out, rgb), metrics.psnr(grey, rgb), metrics.colourfulness(out), metrics.colourfulness(rgb)))
        if not rows:
            return {}
        a = np.mean(rows, axis=0)
        return {"val_psnr": a[0], "val_psnr_grey": a[1], "val_cf": a[2], "val_cf_true": a[3]}

    @torch.no_grad()
    def sample_grid(self, path: Path, n: int = 4) -> None:
        """Rows: validation photos (centre squares); columns: grey input, colorized (EMA), ground truth."""
        tiles = []
        for f in self.val_files[:n]:
            rgb = _load_work_size(f, square=True)
            out, grey = self._colorize(rgb)
            tiles.append(np.concatenate([grey, out, rgb], axis=1))
        if tiles:
            Image.fromarray(np.concatenate(tiles, axis=0)).save(path)

    # ---------------------------------------------------------------- loop
    def fit(self) -> None:
        """Train to ``cfg.steps``. Under DDP every rank steps; only rank 0 validates, draws sample
        grids, logs and writes checkpoints (the others never wait for it outside the steps)."""
        cfg = self.cfg
        from tqdm import tqdm

        main = self.dist.is_main
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and main), dynamic_ncols=True)
        t0 = time.time()
        logf = (self.out / "log.jsonl").open("a") if main else None
        try:
            while self.step < cfg.steps:
                stats = self.train_step()
                if not main:
                    continue
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
        finally:
            if logf is not None:
                logf.close()
            bar.close()
        if self.dist.enabled:  # gradients were averaged every step: every rank must hold the same weights
            sums = self.dist.gather_objects(float(sum(p.double().sum() for p in self.G.parameters())))
            if any(x != sums[0] for x in sums):
                raise RuntimeError(f"generator weights differ between ranks after step {self.step}: {sums}")
            log.info("generator weights identical on %d ranks at step %d", self.dist.world_size, self.step)
        self.dist.barrier()  # no rank leaves (and closes the group) while rank 0 still writes


def _load_fitting(module: nn.Module, src: dict) -> list[str]:
    """Load the tensors of ``src`` whose names and shapes ``module`` has; returns the names left as they were."""
    own = module.state_dict()
    fit = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(fit, strict=False)
    return sorted(set(own) - set(fit))


def _load_work_size(path: Path, square: bool = False) -> np.ndarray:
    """A validation photo at the default working size: long side WORK_SIZE, sides multiples of SIZE_MULTIPLE."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if square:
            s = min(im.size)
            im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))
        h, w = resample.work_shape(im.height, im.width, contract.WORK_SIZE, contract.SIZE_MULTIPLE)
        return np.asarray(im.resize((w, h), Image.BILINEAR))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    d, device = distributed.setup(cfg.device)  # a process group under torchrun, else a single process
    logging.basicConfig(level=logging.INFO if d.is_main else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s {f'[rank {d.rank}] ' if d.enabled else ''}%(message)s")
    try:
        trainer = Trainer(cfg, d, device)
        counts = d.gather_objects(len(trainer.photos))
        log.info("training on %s%s: %d photos%s", device, f" x {d.world_size} processes" if d.enabled else "", sum(counts),
                 f" (per rank {counts})" if d.enabled else "")
        trainer.fit()
    finally:
        distributed.teardown()
    return 0
