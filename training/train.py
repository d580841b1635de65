"""Trainer for the unified generator.

Every step trains on one batch of colour photos (colorization: class-rebalanced cross-entropy over
quantised chroma bins, optionally L1 / colourfulness / adversarial terms on the output, which
passes through the read-out the export bakes in when its flags are given: ``--prior-correction``,
``--chroma-gain``, ``--chroma-scale``, ``--chroma-guide``) and, with probability
``style_fraction``, one batch of photos rendered in random painting styles (unpaired: VGG content
loss on the input luminance, Gram style losses at relu1_1..relu3_1 against the style's mean Gram,
optionally adversarial against that style's paintings). One projection discriminator judges
both when its weights are non-zero: class 0 is "real photo", class k style k. The MobileNetV2
encoder is frozen unless ``lr_encoder`` > 0.

Run ``python -m training --help`` for the flags; each is a field of :class:`TrainConfig`. The same
command runs on several processes with ``torchrun --nproc-per-node N -m training ...`` (DDP; see
:mod:`training.distributed`): ``batch`` and ``style_batch`` are then per process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from sdk import contract, metrics, processing
from training import distributed, losses
from training.data import ImageBank, list_images, select_files
from training.encoder import STAGE_STRIDES
from training.model import Discriminator, Generator, GeneratorConfig, one_hot_style, rgb_to_ycbcr, ycbcr_to_rgb

log = logging.getLogger(__name__)

PAINTING_STYLES = contract.PAINTING_STYLES

INK_CHROMA_FLOOR = 0.02
"""Added to a pixel's chroma magnitude before ``ink_palette``'s saturation weighting, so grey pixels still count."""


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
    whole_school: str = ""  # comma-separated styles whose targets and real crops use every painting, not exemplars
    ink_style: str = GeneratorConfig.ink_style  # train through the ink read-out of this style (export bakes it in)
    inks: int = GeneratorConfig.inks
    ink_saturation: float = GeneratorConfig.ink_saturation  # the palette's k-means weights pixels by chroma (see GeneratorConfig)
    ink_fields: int = GeneratorConfig.ink_fields  # radius of the edge-aware ink vote (0: none; export bakes it in)
    ink_fields_eps: float = GeneratorConfig.ink_fields_eps
    loss_margin: int = 0
    load_size: int = 256
    crop_scale: tuple[float, float] = (1.0, 2.0)
    photo_limit: int = 0
    style_limit: int = 0
    lr_g: float = 5e-4
    lr_encoder: float = 0.0
    # With lr_encoder > 0: fine-tune the encoder's layers at this stride and coarser (2: all of it;
    # 16: the stride-16/32 blocks and the head, which only the colour decoder reads, so a style run
    # on the pretrained encoder still joins at export).
    encoder_tune_stride: int = 2
    lr_d: float = 2e-4
    w_ce: float = 1.0
    rebalance_lambda: float = 0.5
    w_l1: float = 0.0
    rebalance: float = 10.0
    w_adv_color: float = 0.0
    w_cf: float = 0.0
    w_content: float = 1.0
    content_luma: bool = True
    content_layer: int = 2
    w_style: float = 5.0
    w_stats: float = 0.0
    w_border: float = 0.0
    # Translation consistency of the styled output: a crop's output must equal the same region of
    # the output of the photo around it (shift_margin px more on every side, a multiple of 32 so
    # that the encoder's grid stays aligned). Only the borders differ, so it holds the edges to
    # what the interior would paint; against the Gram loss's edge bands it works together with
    # loss_margin (style statistics over the centre; model card, "Edge bands").
    w_shift: float = 0.0
    shift_margin: int = 32
    # Tonal layout of the styled output: mean |Y| difference between the output's and the photo's
    # luminance averaged over tone_cell x tone_cell cells (a night sky stays dark; what the SDK's
    # ``tone`` fusion does after the fact). tone_cell 16 is the SDK's 16-cell grid at the 256 working size.
    w_tone: float = 0.0
    tone_cell: int = 16
    # The first d_warmup steps train the discriminator alone (the generator is left as loaded): for
    # an --init without discriminator state (e.g. weights read back by training.from_onnx).
    d_warmup: int = 0
    # Train only the weights this painting style alone reads (Generator.style_parameter_masks: its
    # FiLM columns, its output layer, its input plane's weights); the other styles, blends without
    # it and colorization stay bit-identical. --style-probs decides what the discriminator sees: only
    # that style spends no generator steps on the others (their gradients are masked to zero).
    tune_style: str = ""
    d_border: int = 0  # discriminator patches dropped along each edge (see Discriminator: no judging at the edges)
    style_layers: tuple[float, float, float] = (1.0, 1.0, 1.0)
    w_adv_style: float = 0.0
    w_tv: float = 0.0
    style_tv: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    style_probs: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # relative draw weight per painting style
    style_adv: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # multiplier of w_adv_style per painting style
    gram_samples: int = 64
    painting_scale: float = 1.75
    ema: float = 0.999
    widths: tuple[int, int, int, int, int] = (96, 64, 32, 24, 12)
    style_widths: tuple[int, int] = GeneratorConfig.style_widths
    attention: bool = GeneratorConfig.attention
    semantic: bool = GeneratorConfig.semantic
    padding: str = GeneratorConfig.padding
    upsample: str = GeneratorConfig.upsample
    bin_step: float = GeneratorConfig.bin_step
    temperature: float = GeneratorConfig.temperature
    # The colour read-out the export bakes in, trained through when the colour losses read the
    # output (w_l1, w_cf); see GeneratorConfig. The prior correction uses this run's class weights.
    prior_correction: float = GeneratorConfig.prior_correction
    chroma_scale: float = GeneratorConfig.chroma_scale
    chroma_gain: float = GeneratorConfig.chroma_gain
    chroma_gain_ref: float = GeneratorConfig.chroma_gain_ref
    chroma_guide: int = GeneratorConfig.chroma_guide
    chroma_guide_eps: float = GeneratorConfig.chroma_guide_eps
    val_every: int = 500
    val_images: int = 32
    ckpt_every: int = 500
    keep_every: int = 0
    init: str = ""
    init_ema: bool = False
    resume: str = ""
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    progress: bool = True

    @property
    def school_styles(self) -> tuple[str, ...]:
        """Styles of ``whole_school`` (comma-separated): their targets and real crops come from every
        painting of the school, not from ``style_exemplars`` exemplars."""
        return tuple(n.strip() for n in self.whole_school.split(",") if n.strip())

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(widths=tuple(self.widths), style_widths=tuple(self.style_widths), attention=self.attention,
                               semantic=self.semantic, padding=self.padding, upsample=self.upsample, bin_step=self.bin_step,
                               temperature=self.temperature, ink_style=self.ink_style, inks=self.inks, ink_saturation=self.ink_saturation, ink_fields=self.ink_fields,
                               ink_fields_eps=self.ink_fields_eps, prior_correction=self.prior_correction,
                               chroma_scale=self.chroma_scale, chroma_gain=self.chroma_gain, chroma_gain_ref=self.chroma_gain_ref,
                               chroma_guide=self.chroma_guide, chroma_guide_eps=self.chroma_guide_eps)


def config_flags(p: argparse.ArgumentParser, cls) -> None:
    """One kebab-case flag per field of the frozen dataclass ``cls`` (``style_fraction`` ->
    ``--style-fraction``): booleans as ``--x/--no-x``, tuples as N values, fields without a
    default required."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if default is dataclasses.MISSING:
            p.add_argument(flag, type=str, required=True)
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            p.add_argument(flag, type=type(default[0]), nargs=len(default), default=default, metavar="N")
        else:
            p.add_argument(flag, type=type(default), default=default)


def config_from_args(cls, ns: argparse.Namespace):
    """The ``cls`` instance of parsed :func:`config_flags` (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()})


def parse_config(cls, argv: list[str] | None, prog: str, doc: str | None):
    """(parser, ``cls`` instance) from kebab-case flags (:func:`config_flags`); the parser's
    description is the first paragraph of ``doc`` (a module's docstring). The parser stays at hand
    for ``p.error`` on errors found later."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    config_flags(p, cls)
    return p, config_from_args(cls, p.parse_args(argv))


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from kebab-case flags (``--style-fraction 0.5``)."""
    return parse_config(TrainConfig, argv, "python -m training", __doc__)[1]


def colour_class_weights(config: dict, bins: torch.Tensor) -> torch.Tensor:
    """A colour run's class-rebalancing weights [Q], recomputed from its resolved config (the
    ``config`` entry of a checkpoint) as a single-process run computes them; for checkpoints
    written before they were saved (``class_weights``).

    Raises:
        FileNotFoundError: the run's training photos are not where its config says.
    """
    photos = Path(config["photos"])
    if not photos.is_dir():
        raise FileNotFoundError(f"the colour run's training photos {photos} are not there; the class weights are "
                                "recomputed from them (run from the folder the run was started in, beside ../shared)")
    bank = ImageBank(photos, config["load_size"], files=select_files(photos, config.get("photo_limit") or None))
    prior = losses.chroma_prior(bank.images, bins, seed=config.get("seed", 0))
    return losses.rebalance_weights(prior, bins, config["rebalance_lambda"], config["bin_step"])


def ink_palette(styles_root: str | Path, style: str, inks: int, split: str = "train", paintings: int = 200,
                per_painting: int = 256, iters: int = 30, seed: int = 0, saturation: float = 0.0) -> torch.Tensor:
    """A school's ``inks`` colours, YCbCr [K,3]: k-means over pixels of its paintings (for the
    generator's ink read-out, ``GeneratorConfig.ink_style``). Deterministic for a given folder.

    Args:
        styles_root: folder with ``<style>/<split>/`` paintings.
        style: the school.
        inks: colours.
        paintings: paintings sampled (evenly spaced), each shrunk to 64x64.
        per_painting: pixels drawn from each.
        saturation: each pixel weighs ``(|CbCr| + 0.02) ** saturation`` in its cluster's mean (0:
            plain k-means; see ``GeneratorConfig.ink_saturation``).

    Raises:
        FileNotFoundError: the school's paintings are not there.
    """
    folder = Path(styles_root) / style / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{style} paintings {folder} are not there; the ink palette is computed from them "
                                "(run from the folder the style run was started in, beside ../shared)")
    files = select_files(folder, None)
    rng = np.random.default_rng(seed)
    pix = []
    for i in np.linspace(0, len(files) - 1, min(paintings, len(files))).astype(int):
        a = np.asarray(Image.open(files[i]).convert("RGB").resize((64, 64), Image.BILINEAR)).reshape(-1, 3)
        pix.append(a[rng.choice(len(a), per_painting, replace=False)])
    x = rgb_to_ycbcr(torch.from_numpy(np.concatenate(pix)).float().div(255.0).T[None, :, :, None])[0, :, :, 0].T  # [P,3]
    c = x[torch.from_numpy(rng.choice(len(x), inks, replace=False))]
    w = (x[:, 1:].norm(dim=1) + INK_CHROMA_FLOOR) ** saturation if saturation else None  # [P]
    for _ in range(iters):
        label = torch.cdist(x, c).argmin(dim=1)
        if w is None:  # plain means, kept apart so saturation 0 gives the pre-release-13 palette to the bit
            c = torch.stack([x[label == k].mean(0) if (label == k).any() else c[k] for k in range(inks)])
        else:
            c = torch.stack([(x[label == k] * w[label == k, None]).sum(0) / w[label == k].sum() if (label == k).any() else c[k]
                             for k in range(inks)])
    return c


def _per_style(values: tuple[float, ...], labels: torch.Tensor) -> torch.Tensor:
    """[N] the value of each sample's painting style from a per-style tuple in PAINTING_STYLES order
    (labels are style-vector indices, 1 = the first painting style)."""
    return torch.tensor(values, dtype=torch.float32, device=labels.device)[labels - 1]


def to_tensor(batch_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    """[N,H,W,3] uint8 -> [N,3,H,W] float in [0,1]."""
    return torch.from_numpy(np.require(batch_u8, requirements="W")).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class GeneratorStep(nn.Module):
    """The generator's part of one training step as a single forward: DDP averages gradients for
    what one forward used, so the colour batch and the style batch go through one call.

    Args:
        G: the generator (its frozen encoder runs without an autograd graph).
        train_encoder: build the graph through the encoder too (``lr_encoder`` > 0).
    """

    def __init__(self, G: Generator, train_encoder: bool) -> None:
        super().__init__()
        self.G = G
        self.train_encoder = train_encoder

    def _encode(self, luma: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            return self.G.encoder(luma)

    def forward(self, luma_c: torch.Tensor | None, luma_s: torch.Tensor | None, style_s: torch.Tensor | None):
        """Returns (natural YCbCr [N,3,H,W], colour logits [N,H/4,W/4,Q], styled YCbCr [M,3,H',W']),
        None for a batch not given. ``luma_c`` [N,1,H,W] runs the natural output only (the style
        branch is weighted 0 there); ``luma_s`` [M,1,H',W'] with ``style_s`` [M,S] the styled one."""
        pred_c = logits = pred_s = None
        if luma_c is not None:
            natural = one_hot_style(torch.zeros(len(luma_c), dtype=torch.long, device=luma_c.device))
            pred_c, logits = self.G.natural(self._encode(luma_c), luma_c, natural)
        if luma_s is not None:
            pred_s = self.G.styled(self._encode(luma_s), luma_s, style_s)
        return pred_c, logits, pred_s


class DiscriminatorStep(nn.Module):
    """The discriminator's hinge loss of one step as a single forward (real and fake, photos and
    paintings), for the same reason as :class:`GeneratorStep`."""

    def __init__(self, D: Discriminator) -> None:
        super().__init__()
        self.D = D

    def forward(self, real_c: torch.Tensor, fake_c: torch.Tensor | None, real_p: torch.Tensor | None,
                fake_p: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        loss = real_c.new_zeros(())
        if fake_c is not None:
            zeros = torch.zeros(len(real_c), dtype=torch.long, device=real_c.device)
            loss = loss + losses.d_hinge(self.D(real_c, zeros), self.D(fake_c, zeros[: len(fake_c)]))
        if real_p is not None:
            loss = loss + losses.d_hinge(self.D(real_p, labels), self.D(fake_p, labels))
        return loss


class Trainer:
    """Holds the models, optimisers, data and state of one run.

    Args:
        cfg: the run's configuration.
        dist: this process's place in a torchrun job (:func:`training.distributed.setup`); None
            for a single process.
        device: the device from :func:`training.distributed.setup`; None resolves ``cfg.device``.
    """

    def __init__(self, cfg: TrainConfig, dist: distributed.Dist | None = None, device: torch.device | None = None) -> None:
        if not 0 <= cfg.content_layer < len(losses.VGG_LAYERS):
            raise ValueError(f"content_layer must index {losses.VGG_LAYERS} (0..{len(losses.VGG_LAYERS) - 1}), got {cfg.content_layer}")
        if cfg.init_ema and not cfg.init:
            raise ValueError("init_ema takes the EMA weights of --init's checkpoint, but no --init was given; "
                             "add --init PATH (a --resume restores the EMA anyway)")
        if any(w < 0 for w in cfg.style_probs) or not sum(cfg.style_probs) > 0:
            raise ValueError(f"style_probs are relative sampling weights per style {PAINTING_STYLES}: none negative, "
                             f"at least one positive; got {cfg.style_probs}")
        if cfg.w_shift and (cfg.shift_margin <= 0 or cfg.shift_margin % 32):
            raise ValueError(f"shift_margin must be a positive multiple of 32 (the encoder's stride, so the crop's features "
                             f"align with the larger photo's); got {cfg.shift_margin}")
        if cfg.w_tone and not (cfg.tone_cell > 0 and (cfg.size + 2 * cfg.loss_margin) % cfg.tone_cell == 0):
            raise ValueError(f"tone_cell must be a positive divisor of the style crop's side {cfg.size + 2 * cfg.loss_margin} "
                             f"(size + 2 x loss_margin: whole cells in every crop); got {cfg.tone_cell}")
        if cfg.d_warmup < 0:
            raise ValueError(f"d_warmup counts steps of discriminator-only training; expected >= 0, got {cfg.d_warmup}")
        if cfg.tune_style and cfg.tune_style not in PAINTING_STYLES:
            raise ValueError(f"tune_style must be one of the painting styles {PAINTING_STYLES}; got {cfg.tune_style!r}")
        if cfg.tune_style and cfg.lr_encoder > 0:
            raise ValueError(f"tune_style trains only {cfg.tune_style}'s own weights, but lr_encoder={cfg.lr_encoder} "
                             "would train the encoder too (shared by every style); leave --lr-encoder at 0")
        if cfg.encoder_tune_stride not in STAGE_STRIDES:
            raise ValueError(f"encoder_tune_stride must be one of {STAGE_STRIDES} (the encoder's stages); got {cfg.encoder_tune_stride}")
        unknown = sorted(set(cfg.school_styles) - set(PAINTING_STYLES))
        if unknown:
            raise ValueError(f"whole_school names styles (comma-separated) among {PAINTING_STYLES}; got {unknown} in {cfg.whole_school!r}")
        self.cfg = cfg
        self.dist = dist or distributed.Dist()
        # Style labels drawn uniformly (None: the default draw) or by the relative weights of --style-probs.
        probs = np.asarray(cfg.style_probs, dtype=np.float64)
        self.style_p = None if np.all(probs == probs[0]) else probs / probs.sum()
        self.device = device or distributed.resolve_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.rng = self._rank_rng(0)
        self.shared_rng = self._shared_rng(0)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)

        self.G = Generator(cfg.generator_config()).to(self.device)
        if cfg.mobilenet:
            self.G.encoder.load_pretrained(cfg.mobilenet)
        self.G.freeze_encoder(cfg.lr_encoder <= 0, cfg.encoder_tune_stride)
        if cfg.tune_style:  # everything else frozen; gradients masked to the style's own entries
            masks = self.G.style_parameter_masks(contract.STYLES.index(cfg.tune_style))
            for name, param in self.G.named_parameters():
                param.requires_grad_(name in masks)
                if name in masks:
                    param.register_hook(lambda g, m=masks[name]: g * m)
        self.G_ema = Generator(cfg.generator_config()).to(self.device).eval().requires_grad_(False)
        if cfg.ink_style:  # train through the ink read-out the export will bake in (same palette, recomputed there)
            palette = ink_palette(cfg.styles_root, cfg.ink_style, cfg.inks, saturation=cfg.ink_saturation)
            self.G.ink_palette.copy_(palette)
            self.G_ema.ink_palette.copy_(palette)
        self.D = Discriminator(border=cfg.d_border).to(self.device)
        self.use_d = cfg.w_adv_color > 0 or cfg.w_adv_style > 0
        enc = [p for p in self.G.encoder.parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in self.G.named_parameters() if not n.startswith("encoder.")]}]
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
        self.class_weights = losses.rebalance_weights(prior, self.bins.cpu(), cfg.rebalance_lambda, cfg.bin_step).to(self.device)
        if cfg.prior_correction > 0:  # the read-out takes back part of the rebalancing, as the export's does
            for g in (self.G, self.G_ema):
                g.class_log_weights.copy_(torch.log(self.class_weights))
        self.val_files = list_images(cfg.val_photos)[: cfg.val_images] if cfg.val_photos and self.dist.is_main else []
        self.paintings: dict[int, ImageBank] = {}
        self.vgg: losses.VGGFeatures | None = None
        self.style_grams: dict[int, list[torch.Tensor]] = {}
        self.style_stats: dict[int, list[torch.Tensor]] = {}  # per style, per layer: mean log channel stats [2,C]
        if cfg.style_fraction > 0:
            self.vgg = losses.VGGFeatures(cfg.vgg).to(self.device)
            for name in PAINTING_STYLES:
                idx = contract.STYLES.index(name)
                folder = Path(cfg.styles_root) / name / cfg.style_split
                files = distributed.shard(select_files(folder, cfg.style_limit or None), self.dist)
                self.paintings[idx] = ImageBank(folder, cfg.load_size, files=files)
            self._style_targets()

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
            from torch.nn.parallel import DistributedDataParallel as DDP

            import inspect

            # find_unused_parameters: a colour step leaves the style branch unused and a style step the colour decoder.
            # No buffer sync per forward: the only buffers are constants (the chroma bins).
            no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
            kw = {"device_ids": [self.device.index] if self.device.type == "cuda" else None, "find_unused_parameters": True, no_sync: False}
            self.g_step = DDP(self.g_step, **kw)
            if self.use_d:
                self.d_step = DDP(self.d_step, **kw)

    def _rank_rng(self, step: int) -> np.random.Generator:
        """This rank's generator for crops and style labels at ``step``: rank 0 draws what a
        single-process run draws; other ranks have their own seeds."""
        seed = self.cfg.seed + step
        return np.random.default_rng(seed if self.dist.rank == 0 else (seed, self.dist.rank))

    def _shared_rng(self, step: int) -> np.random.Generator:
        """A generator identical on every rank, for decisions all ranks must take together (style step or not)."""
        return np.random.default_rng((self.cfg.seed, step, 7))

    # ---------------------------------------------------------------- setup
    @torch.no_grad()
    def _style_targets(self) -> None:
        """Mean Gram matrices and log channel statistics per style over random crops of its
        paintings (or of its exemplars).

        Under DDP each rank takes its share of the crops from its own paintings; the sums are
        all-reduced, so every rank gets the same targets (checked below).
        """
        assert self.vgg is not None
        if self.cfg.style_exemplars:
            self._pick_exemplars()
        n = math.ceil(self.cfg.gram_samples / self.dist.world_size)  # this rank's crops
        for idx, bank in self.paintings.items():
            acc = None
            for start in range(0, n, 16):
                feats = self.vgg(self._painting_crops(bank, min(16, n - start)))
                sums = [losses.gram(f).sum(0) for f in feats] + [losses.channel_stats(f).sum(0) for f in feats]
                acc = sums if acc is None else [a + g for a, g in zip(acc, sums)]
            means = [self.dist.all_reduce_sum(a) / (n * self.dist.world_size) for a in acc]
            self.style_grams[idx], self.style_stats[idx] = means[:3], means[3:]
        if self.dist.enabled:
            sums = self.dist.gather_objects([float(g.double().sum()) for k in sorted(self.style_grams) for g in self.style_grams[k] + self.style_stats[k]])
            if any(s != sums[0] for s in sums):
                raise RuntimeError(f"style targets differ between ranks: {sums}")
            log.info("style targets identical on %d ranks", self.dist.world_size)

    def _painting_crops(self, bank: ImageBank, n: int) -> torch.Tensor:
        """``n`` random crops [n,3,size,size] of a style's paintings at their own scale (1.75 x 128 =
        the paintings' 224 px): the style targets and the discriminator's real samples both use them."""
        scale = (self.cfg.painting_scale, self.cfg.painting_scale)
        return to_tensor(bank.batch(self.rng, n, self.cfg.size, scale), self.device)

    @torch.no_grad()
    def _pick_exemplars(self) -> None:
        """Keep, per style, the ``style_exemplars`` paintings nearest the school's mean Gram.

        A mean Gram over a whole school averages its textures away (palette and wash, no strokes);
        the paintings nearest that mean are typical of the school and carry real brushwork. The
        pick is cached in ``exemplars.json`` (written by rank 0). Under DDP each rank scores the
        candidates of its own share against the mean over all ranks, the scores are gathered and
        every rank takes the same exemplars, loading those files itself.
        """
        cache = self.out / "exemplars.json"
        picked = json.loads(cache.read_text()) if cache.is_file() and self.dist.is_main else {}
        picked = self.dist.gather_objects(picked)[0]  # rank 0's cache for everyone (nodes need not share --out)
        for idx, bank in self.paintings.items():
            name = contract.STYLES[idx]
            if name in self.cfg.school_styles:
                log.info("%s: the whole school (%d paintings), no exemplars", name, len(bank.files))
                continue
            folder = Path(self.cfg.styles_root) / name / self.cfg.style_split
            by_name = {p.name: p for p in select_files(folder, self.cfg.style_limit or None)}
            names = picked.get(name, [])
            if len(names) == self.cfg.style_exemplars and all(f in by_name for f in names):
                log.info("%s exemplars (from %s): %s", name, cache, names)
            else:
                names = self._nearest_mean(bank)
                log.info("%s exemplars: %s", name, names)
                picked[name] = names
            self.paintings[idx] = ImageBank(folder, self.cfg.load_size, files=[by_name[f] for f in names])
        if self.dist.is_main:
            cache.write_text(json.dumps(picked, indent=1))

    def _nearest_mean(self, bank: ImageBank) -> list[str]:
        """Names of the ``style_exemplars`` candidates whose normalised Grams lie nearest the mean
        over all candidates (of all ranks); the same list on every rank."""
        size = round(self.cfg.size * self.cfg.painting_scale)
        feats = []
        per_rank = math.ceil(256 / self.dist.world_size)
        cand = np.linspace(0, len(bank.images) - 1, min(per_rank, len(bank.images))).astype(int).tolist()  # candidates, evenly spaced
        for start in range(0, len(cand), 32):
            chunk = [np.asarray(Image.fromarray(bank.images[i]).resize((size, size), Image.BILINEAR)) for i in cand[start : start + 32]]
            grams = [losses.gram(f) for f in self.vgg(to_tensor(np.stack(chunk), self.device))]
            feats.append(torch.cat([g.flatten(1) / g.flatten(1).norm(dim=1, keepdim=True) for g in grams], dim=1))
        f = torch.cat(feats)
        total = self.dist.all_reduce_sum(torch.cat([f.sum(0), f.new_tensor([len(f)])]))
        mean = total[:-1] / total[-1]
        scores = [(float(d), bank.files[i].name) for d, i in zip((f - mean).norm(dim=1).tolist(), cand)]
        everyone = sorted({s for part in self.dist.gather_objects(scores) for s in part})
        return [name for _, name in everyone[: self.cfg.style_exemplars]]

    def _load(self, path: str, full: bool) -> None:
        """Resume (everything) or init (generator and discriminator weights; the EMA restarts from G).

        An init takes the checkpoint's raw generator, or its EMA with ``init_ema`` (to fine-tune the
        weights a release shipped: the raw weights of a long run validate worse than its EMA).

        An init may come from an earlier design: tensors whose shape changed are left as initialised.
        """
        ck = torch.load(path, map_location=self.device, weights_only=False)
        if full:
            self.G.load_state_dict(ck["G"])
            self.G_ema.load_state_dict(ck["G_ema"])
        else:
            own = self.G.state_dict()
            src = ck["G_ema"] if self.cfg.init_ema else ck["G"]
            fit = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
            skipped = sorted(set(own) - set(fit))
            if skipped:  # new in this design, or reshaped (pretrained encoder parts keep their ImageNet weights)
                log.info("init: %d tensors not taken from the checkpoint (absent or reshaped there): %s", len(skipped), skipped)
            self.G.load_state_dict(fit, strict=False)
            self.G_ema.load_state_dict(self.G.state_dict())
        if "D" in ck:
            self.D.load_state_dict(ck["D"])
        if full:
            self.opt_g.load_state_dict(ck["opt_g"])
            self.opt_d.load_state_dict(ck["opt_d"])
            self.step = ck["step"]
            self.history = ck.get("history", [])
            self.rng = self._rank_rng(self.step)
            self.shared_rng = self._shared_rng(self.step)
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
                "class_weights": self.class_weights.cpu(),  # the read-out's prior correction uses them at export
                "config": dataclasses.asdict(self.cfg),
                "generator": dataclasses.asdict(self.cfg.generator_config()),
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

    def _style_losses(self, rgb: torch.Tensor, labels: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """Content and style losses of the styled output ``pred`` for photos ``rgb`` and style ``labels``."""
        cfg = self.cfg
        assert self.vgg is not None
        luma = rgb_to_ycbcr(rgb)[:, :1]
        fake_rgb = ycbcr_to_rgb(pred)
        feats = self.vgg(fake_rgb)
        with torch.no_grad():
            content = self.vgg(luma.expand(-1, 3, -1, -1))[cfg.content_layer]
        # Content of the output's own luminance (default) or of its colours: the latter holds the
        # output near a grey image and mutes every palette toward beige.
        mine = self.vgg(rgb_to_ycbcr(fake_rgb)[:, :1].expand(-1, 3, -1, -1))[cfg.content_layer] if cfg.content_luma else feats[cfg.content_layer]
        l_content = losses.content_loss(mine, content)  # whole image, borders too
        m = cfg.loss_margin
        feats = losses.crop_margin(feats, m)  # style statistics of the centre only (0: the whole image)
        l_style = losses.gram_loss(feats, [torch.stack([self.style_grams[int(k)][li] for k in labels]) for li in range(len(feats))], cfg.style_layers)
        total = cfg.w_content * l_content + cfg.w_style * l_style
        stats = {"content": l_content.item(), "style": l_style.item()}
        if cfg.w_border and m:  # the margin the style losses leave free: its chroma may not jump (no coloured streaks)
            band = torch.ones_like(pred[:1, :1])
            band[..., m:-m, m:-m] = 0.0
            c = pred[:, 1:]
            tv = ((c[..., 1:, :] - c[..., :-1, :]).abs() * band[..., 1:, :]).sum() + ((c[..., :, 1:] - c[..., :, :-1]).abs() * band[..., :, 1:]).sum()
            l_border = tv / (band.sum() * c.shape[0] * c.shape[1])
            total = total + cfg.w_border * l_border
            stats["border"] = l_border.item()
        if cfg.w_stats:  # log mean/std per channel (weak channels count too; a Gram loss sees the strong ones)
            l_stats = losses.stats_loss(feats, [torch.stack([self.style_stats[int(k)][li] for k in labels]) for li in range(len(feats))], cfg.style_layers)
            total = total + cfg.w_stats * l_stats
            stats["stats"] = l_stats.item()
        if cfg.w_tv:
            total = total + cfg.w_tv * losses.total_variation(fake_rgb)
        if cfg.w_tone:  # the photo's tonal layout, cell by cell (whole image: the layout is the picture's)
            l_tone = (F.avg_pool2d(pred[:, :1], cfg.tone_cell) - F.avg_pool2d(luma, cfg.tone_cell)).abs().mean()
            total = total + cfg.w_tone * l_tone
            stats["tone"] = l_tone.item()
        if any(cfg.style_tv):  # flat fields for some styles, dots for others
            l_tv = (_per_style(cfg.style_tv, labels) * losses.total_variation(fake_rgb, per_image=True)).mean()
            total = total + l_tv
            stats["style_tv"] = l_tv.item()
        if cfg.w_adv_style:  # --style-adv: the weight's multiplier per style
            adv = losses.g_hinge(self.D(fake_rgb, labels) * _per_style(cfg.style_adv, labels)[:, None, None, None])
            total = total + cfg.w_adv_style * adv
            stats["adv_s"] = adv.item()
        return total, stats, fake_rgb

    def _shift_loss(self, rgb_big: torch.Tensor, labels: torch.Tensor, pred_s: torch.Tensor) -> torch.Tensor:
        """Mean |YCbCr| difference between the styled crop ``pred_s`` and the same region of the styled
        photo around it ``rgb_big`` (no gradient through the larger one: it is the target)."""
        m = self.cfg.shift_margin
        with torch.no_grad():
            luma = rgb_to_ycbcr(rgb_big)[:, :1]
            ref = self.G.styled(self.G.encoder(luma), luma, one_hot_style(labels))[..., m:-m, m:-m]
        return (pred_s - ref).abs().mean()

    def train_step(self) -> dict[str, float]:
        """One generator and one discriminator update; returns the losses (averaged over ranks)."""
        cfg = self.cfg
        rgb = to_tensor(self.photos.batch(self.rng, cfg.batch, cfg.size, cfg.crop_scale), self.device)
        do_style = bool(self.paintings) and self.shared_rng.random() < cfg.style_fraction  # the same on every rank
        labels_np = labels = rgb_s = None
        if do_style:
            labels_np = self.rng.choice(sorted(self.paintings), size=cfg.style_batch, p=self.style_p)
            labels = torch.from_numpy(labels_np).to(self.device)
            size_s = cfg.size + 2 * cfg.loss_margin  # 32-multiple sizes keep the encoder exact
            if cfg.w_shift:  # the photo around the crop, at the same pixel scale as a plain crop
                m = cfg.shift_margin
                big = size_s + 2 * m
                rgb_big = to_tensor(self.photos.batch(self.rng, cfg.style_batch, big, tuple(c * size_s / big for c in cfg.crop_scale)), self.device)
                rgb_s = rgb_big[..., m:-m, m:-m]
            else:
                rgb_s = to_tensor(self.photos.batch(self.rng, cfg.style_batch, size_s, cfg.crop_scale), self.device)
        stats: dict[str, float] = {}
        fake_c = fake_s = None
        warmup = self.step < cfg.d_warmup  # the generator stays as loaded; only the discriminator learns
        if cfg.colour or do_style:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp), torch.set_grad_enabled(not warmup):
                luma_c = rgb_to_ycbcr(rgb)[:, :1] if cfg.colour else None
                luma_s = rgb_to_ycbcr(rgb_s)[:, :1] if do_style else None
                pred_c, logits, pred_s = self.g_step(luma_c, luma_s, one_hot_style(labels) if do_style else None)
                loss_g = rgb.new_zeros(())
                if cfg.colour:
                    loss_g, stats, fake_c = self._colour_losses(rgb, pred_c, logits)
                if do_style:
                    loss_s, stats_s, fake_s = self._style_losses(rgb_s, labels, pred_s)
                    loss_g = loss_g + loss_s
                    stats.update(stats_s)
                    if cfg.w_shift:
                        l_shift = self._shift_loss(rgb_big, labels, pred_s)
                        loss_g = loss_g + cfg.w_shift * l_shift
                        stats["shift"] = l_shift.item()
            if not warmup:
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()  # under DDP: gradients averaged over ranks here
                self.opt_g.step()
            stats["g"] = loss_g.item()

        if self.use_d and (fake_c is not None or fake_s is not None):
            stats["d"] = self._d_step(rgb, fake_c, labels_np, fake_s)
        if self.dist.is_main:  # the EMA is only read on rank 0 (validation, samples, checkpoints)
            with torch.no_grad():
                for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                    pe.lerp_(p, 1.0 - cfg.ema)
                for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
                    be.copy_(b)
        self.step += 1
        return self._mean_over_ranks(stats)

    def _mean_over_ranks(self, stats: dict[str, float]) -> dict[str, float]:
        """Each loss averaged over ranks (every rank has the same keys: the step kind is shared)."""
        if not self.dist.enabled or not stats:
            return stats
        keys = sorted(stats)
        t = self.dist.all_reduce_sum(torch.tensor([stats[k] for k in keys], dtype=torch.float64)) / self.dist.world_size
        return dict(zip(keys, t.tolist()))

    def _d_step(self, rgb: torch.Tensor, fake_c: torch.Tensor | None, labels_np, fake_s: torch.Tensor | None) -> float:
        """Discriminator update: real photos vs colorized, real paintings vs stylized."""
        cfg = self.cfg
        real_p = labels = None
        if fake_s is not None:
            labels = torch.from_numpy(labels_np).to(self.device)
            real_p = torch.cat([self._painting_crops(self.paintings[int(k)], 1) for k in labels_np])
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss_d = self.d_step(rgb, None if fake_c is None else fake_c.detach(), real_p, None if fake_s is None else fake_s.detach(), labels)
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
            luma = ycc[:, :1]  # natural style: the colour decoder alone (the exported graph's colorize branch)
            pred = self.G_ema.decode_natural(self.G_ema.encoder(luma), luma, one_hot_style(torch.zeros(1, dtype=torch.long, device=self.device)))
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
    cfg = parse_args(argv)
    d, device = distributed.setup(cfg.device)  # a process group under torchrun, else a single process
    logging.basicConfig(level=logging.INFO if d.is_main else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s {f'[rank {d.rank}] ' if d.enabled else ''}%(message)s")
    try:
        trainer = Trainer(cfg, d, device)
        counts = d.gather_objects(len(trainer.photos))
        log.info("training on %s%s: %d photos%s, %s", device, f" x {d.world_size} processes" if d.enabled else "", sum(counts),
                 f" (per rank {counts})" if d.enabled else "", {contract.STYLES[k]: len(v) for k, v in trainer.paintings.items()})
        trainer.fit()
    finally:
        distributed.teardown()
    return 0

