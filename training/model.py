"""Generator and discriminator.

The generator is one network for colorization and every painting style. It reads luminance and a
style-weight vector ``s`` (one-hot selects a style, other vectors blend them) and predicts
full-range YCbCr (see :mod:`sdk.contract`).

- **Encoder**: an ImageNet MobileNetV2 (:mod:`training.encoder`), frozen, gives the semantics a
  network trained on a few thousand photos cannot learn (what grass, sky and skin are).
- **Decoder**: upsample-then-convolve with skips from the encoder at strides 16, 8 and 4. Style
  enters through FiLM: every block scales and shifts its channels by ``1 + s @ W_gamma`` and
  ``s @ W_beta`` (conditional instance norm's conditioning without per-image statistics, so
  blending styles blends the vectors and the whole thing is a MatMul in ONNX).
- **Colour head** (stride 4): logits over quantised CbCr bins, read out as the annealed mean
  ``softmax(logits / T) @ bin_centres`` (Zhang et al. 2016) inside the graph, so the model still
  outputs chroma. Classification with class rebalancing avoids the sepia mean that L1 regression
  gives; ``T`` trades colourfulness against safety (1 = mean, to 0 = mode).
- **Style branch**: its own small decoder from the encoder's stride-8 and stride-4 features (with
  the style weights as constant planes) up to full working resolution (with the input luminance
  concatenated for detail), ending in one output layer per style mixed by the style weights. It
  paints Y (a residual on the input luminance) and CbCr. The output is
  ``(1 - g) * natural + g * styled`` with ``g = 1 - s_natural``: natural colorization is exactly
  the colour head, full style is exactly the style branch, and ``strength`` blends linearly.
  Colour and style share only the frozen encoder, so they train as separate runs (in parallel)
  and ``python -m export onnx --style-checkpoint`` joins them.

Layout (working resolution H x W, both multiples of 32)::

    luma [N,1,H,W] -> encoder -> f4 [N,24,H/4], f8 [N,32,H/8], f16 [N,96,H/16], f32 [N,320,H/32]
    f32 -> lat32 [N,c16,H/32] (-> multi-modal attention, optional)
        -> up16 [N,c16,H/16] + lat16(f16) -> up8 [N,c8,H/8] + lat8(f8) -> up4 [N,c4,H/4] + lat4(f4)
    colour: colour_head [N,Q,H/4] -> annealed mean [N,2,H/4] -> bilinear x4 [N,2,H,W]
    style:  cat(f8, style planes) -> style_in [N,s8,H/8] -> style_up4 [N,s4,H/4] + style_lat4(f4)
        -> style_up2 [N,c2,H/2] -> cat(upsample, luma) -> style_up1 [N,c1,H,W]
        -> style_head [N,3*S,H,W] -> sum_k s_k * head_k = (dY, C) [N,3,H,W]
    out = (1 - g) * (luma, CbCr) + g * (luma + tanh(dY), tanh(C) / 2), g = 1 - s_natural, clamped

Decoders upsample then convolve (no transposed convolutions, no checkerboards).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sdk import contract
from training.encoder import FEATURE_CHANNELS, SEMANTIC_CHANNELS, MobileNetV2Encoder

INK_VOTE_SOFTNESS = 0.05
"""Temperature of the ink vote's softmax over voted shares (~0..1): a 60/40 vote is ~98 % the
majority's ink, a tie stays a blend (continuous, so ONNX Runtime and PyTorch agree at field edges)."""

KEY_LINE_SCALE = 1.6
"""Ratio of the two Gaussians of the key lines' difference of Gaussians (Marr & Hildreth's 1.6)."""

STYLE_FEATURE_STRIDE = 8
"""The style branch reads the encoder's features at strides 4 and 8 only (:meth:`Generator.styled`):
the layers past them serve the colour decoder alone and may be fine-tuned for it."""

CHROMA_GAIN_LIMITS = (0.5, 2.0)
"""Range of the per-image chroma gain (``GeneratorConfig.chroma_gain``): at most halves or doubles an image's chroma."""


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian [2r+1], r = ceil(3 sigma)."""
    r = max(1, int(np.ceil(3.0 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t * t / (2.0 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable blur of [N,1,H,W] by a 1-D kernel [2r+1], edges replicated."""
    r = kernel.numel() // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kernel.view(1, 1, -1, 1))


def guided_coefficients(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """He & Sun's (fast) guided filter at one size: guide [N,1,h,w], src [N,C,h,w] -> (A, b), each [N,C,h,w].

    Each (2r+1)^2 window (edges replicated) fits ``src = A * guide + b`` by least squares with ridge
    ``eps`` (a guide variance); A and b are then averaged over the windows covering each pixel. The
    caller upsamples them and applies them to a finer guide (``A * guide + b``): the result follows
    the guide's edges where the window varies by more than ``eps``, and is the window mean elsewhere.
    """
    r, c = radius, src.shape[1]

    def box(x: torch.Tensor) -> torch.Tensor:  # separable window mean, edges replicated
        x = F.avg_pool2d(F.pad(x, (r, r, 0, 0), mode="replicate"), (1, 2 * r + 1), stride=1)
        return F.avg_pool2d(F.pad(x, (0, 0, r, r), mode="replicate"), (2 * r + 1, 1), stride=1)

    m = box(torch.cat([guide, guide * guide, src, guide * src], dim=1))  # [N,2+2C,h,w]: window means, one pass
    mg, mgg, ms, mgs = m[:, :1], m[:, 1:2], m[:, 2 : 2 + c], m[:, 2 + c :]
    a = (mgs - mg * ms) / (mgg - mg * mg + eps)  # [N,C,h,w]
    ab = box(torch.cat([a, ms - a * mg], dim=1))  # [N,2C,h,w]
    return ab[:, :c], ab[:, c:]


def chroma_bins(step: float) -> np.ndarray:
    """Centres [Q,2] (Cb, Cr) of a ``step`` grid over [-0.5, 0.5]^2, kept where some Y in [0, 1] gives valid RGB.

    Example:
        >>> chroma_bins(0.05).shape[1]
        2
    """
    n = int(round(1.0 / step))
    centres = (np.arange(n) + 0.5) * step - 0.5
    cb, cr = np.meshgrid(centres, centres, indexing="ij")
    # RGB = Y + (1.402 cr, -0.344 cb - 0.714 cr, 1.772 cb): each must fit in [0, 1] for one Y.
    m = np.asarray(contract.YCBCR_TO_RGB)
    offs = np.stack([m[i, 1] * cb + m[i, 2] * cr for i in range(3)])  # [3,n,n]
    lo = np.maximum(0.0, (-offs).max(axis=0))
    hi = np.minimum(1.0, (1.0 - offs).min(axis=0))
    keep = lo <= hi
    return np.stack([cb[keep], cr[keep]], axis=1).astype(np.float32)


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes of the generator.

    Args:
        widths: colour decoder channels at 1/16, 1/8, 1/4, then the style branch's at 1/2 and 1/1.
        style_widths: the style branch's channels at 1/8 and 1/4.
        n_styles: length of the style-weight vector.
        attention: include the multi-modal attention block at the 1/32 bottleneck (see the model
            card's ablation).
        semantic: also feed the colour decoder the encoder's own 1x1 head (MobileNetV2's 1280
            class features at 1/32, pretrained and frozen like the rest of the encoder): as a
            lateral at 1/32 and as its image-wide mean, both zero-initialised, so a colour run
            initialised from one without them starts from the same output.
        padding: decoder convolution padding mode. "replicate" (ONNX Pad mode=edge): zero padding
            gave the Gram-trained styles bright streaks along the borders.
        upsample: the decoder's 2x upsampling before each convolution, "nearest" or "bilinear".
        bin_step: CbCr grid step of the colour classes (0.05: about 300 in-gamut bins).
        temperature: annealed-mean temperature of the colour read-out (Zhang et al.: 0.38).
        chroma_blur: side of a box filter over the read-out chroma at 1/4 resolution (0 or 1: none);
            a read-out choice like the temperature, settable at export.
        chroma_scale: factor on the read-out chroma (1: none). The rebalanced classes favour
            saturated colours; a factor < 1 trades colourfulness for fewer strong wrong colours.
        chroma_gain: exponent b of a per-image **chroma gain** ``(chroma_gain_ref / e) ** b``
            (clamped to ``CHROMA_GAIN_LIMITS``; 0: none), where ``e`` is the image's mean expected
            chroma magnitude under the read-out's class distribution: images the decoder paints in
            strong colours are toned down, those it paints dull are lifted, toward one common
            colour budget. Strong predicted colour is more often wrong colour (model card: at
            equal colourfulness it raises colour accuracy and brings each image's colourfulness
            nearer its truth's). A read-out choice, settable at export.
        chroma_gain_ref: ``e`` of a typical photo (export measures the median on the colour run's
            training photos), in CbCr units.
        prior_correction: how much of the class rebalancing to take back at read-out (0: none,
            1: all). Training weights each pixel's loss by its true bin's rebalancing weight w, so
            the logits learn ``log p + log w``; subtracting ``a * log w`` (the buffer
            ``class_log_weights``, set at export from the training photos' colour prior) moves
            the read-out toward the unweighted posterior, whose mean is the accurate but duller one.
        ink_style: a painting style whose output is printed in a few flat inks ("" : none), as a
            woodblock print is: each pixel takes the nearest of ``inks`` colours, the school's
            palette (the buffer ``ink_palette``, set at export, or by the trainer, from its
            paintings). Weighted by that style's weight, so blends and strengths ink partly.
        inks: number of ink colours.
        ink_saturation: how the palette is found: k-means over the school's pixels with each pixel
            weighted by ``(|CbCr| + 0.02) ** ink_saturation`` in its cluster's mean (0: plain
            k-means, whose means drift toward the school's average beige; 2: the strong vermilion
            and indigo of the prints hold; model card, "Release 13"). Read by whoever computes the
            palette (export, the trainer); the graph holds only the palette.
        ink_softness: temperature of the pixel-to-ink softmax, in squared YCbCr distance (inks lie
            ~0.01-0.1 apart: nearly hard fields, continuous at their edges).
        chroma_guide: radius, at the read-out's 1/4 size, of a guided filter that upsamples the
            chroma along the input's own luminance edges (He et al.'s fast guided filter; 0: plain
            bilinear): colour stops at the edges it belongs to instead of bleeding across them.
        chroma_guide_eps: the guided filter's regulariser (a luminance variance: below it a
            window's chroma stays flat, above it chroma follows luminance).
        ink_fields: radius of the window, at half the working size, in which neighbouring pixels
            vote for an ink (0: no vote), weighted along the input's luminance edges (a guided
            filter over the inks' shares, as ``chroma_guide`` for colour): specks and photo grain
            merge into flat fields, while fields keep the outlines of the photo's shapes.
        ink_fields_eps: the vote's regulariser, a luminance variance: where a window varies less,
            its majority wins outright; where more, the vote follows the luminance edges.
        ink_lines: strength (0..1; 0: none) of the **key lines** drawn over the inked style in its
            darkest ink, as a woodblock print's key block outlines its colour fields: a difference
            of Gaussians of the input luminance (sigma ``ink_lines_sigma`` and 1.6 sigma, at the
            working size), a line where it falls below ``-ink_lines_threshold`` (fully drawn at
            twice that): the dark side of the photo's edges and its thin dark lines.
        ink_lines_sigma: the smaller Gaussian's sigma in working-size pixels (line width).
        ink_lines_threshold: the luminance step (0..1) below which no line is drawn.
    """

    widths: tuple[int, int, int, int, int] = (128, 64, 48, 32, 16)
    style_widths: tuple[int, int] = (32, 24)
    n_styles: int = len(contract.STYLES)
    attention: bool = False
    semantic: bool = False
    padding: str = "replicate"
    upsample: str = "bilinear"
    bin_step: float = 0.05
    temperature: float = 0.38
    chroma_blur: int = 0
    chroma_scale: float = 1.0
    chroma_gain: float = 0.0
    chroma_gain_ref: float = 0.064
    prior_correction: float = 0.0
    ink_style: str = ""
    inks: int = 8
    ink_saturation: float = 0.0
    ink_softness: float = 0.002
    ink_fields: int = 0
    ink_fields_eps: float = 0.0009
    ink_lines: float = 0.0
    ink_lines_sigma: float = 1.0
    ink_lines_threshold: float = 0.04
    chroma_guide: int = 0
    chroma_guide_eps: float = 0.004

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        """From a manifest's or checkpoint's ``generator`` entry (JSON lists back to tuples).

        Raises:
            ValueError: the entry has fields this design does not know (an older generator).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"generator fields {unknown} belong to an older design")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def __post_init__(self) -> None:
        if self.upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample is {self.upsample!r}; expected 'nearest' or 'bilinear'")
        if len(self.widths) != 5:
            raise ValueError(f"widths has {len(self.widths)} entries; expected 5 (strides 16, 8, 4, 2, 1)")
        if self.chroma_blur < 0 or (self.chroma_blur > 1 and self.chroma_blur % 2 == 0):
            raise ValueError(f"chroma_blur is {self.chroma_blur}; expected 0 or an odd kernel side")
        if not 0.0 < self.chroma_scale <= 2.0:
            raise ValueError(f"chroma_scale is {self.chroma_scale}; expected a value in (0, 2]")
        if not 0.0 <= self.chroma_gain <= 2.0 or not self.chroma_gain_ref > 0.0:
            raise ValueError(f"chroma_gain {self.chroma_gain} with reference {self.chroma_gain_ref}; expected an exponent "
                             "in [0, 2] and a reference magnitude > 0")
        if not 0.0 <= self.prior_correction <= 1.0:
            raise ValueError(f"prior_correction is {self.prior_correction}; expected a value in [0, 1]")
        if not 0.0 < self.temperature <= 1.0:
            raise ValueError(f"temperature is {self.temperature}; expected a value in (0, 1]")
        if self.ink_style and (self.ink_style not in contract.PAINTING_STYLES or self.inks < 2 or self.ink_softness <= 0):
            raise ValueError(f"ink_style {self.ink_style!r} with {self.inks} inks, softness {self.ink_softness}; expected one of "
                             f"{contract.PAINTING_STYLES} (or '' for none), at least 2 inks, softness > 0")
        if not 0.0 <= self.ink_saturation <= 4.0:
            raise ValueError(f"ink_saturation is {self.ink_saturation}; expected a weighting exponent in [0, 4] (0: plain k-means)")
        if self.chroma_guide < 0 or self.chroma_guide_eps <= 0:
            raise ValueError(f"chroma_guide {self.chroma_guide} with eps {self.chroma_guide_eps}; expected a radius >= 0 and eps > 0")
        if not 0.0 <= self.ink_lines <= 1.0 or self.ink_lines_sigma <= 0 or self.ink_lines_threshold <= 0:
            raise ValueError(f"ink_lines {self.ink_lines} with sigma {self.ink_lines_sigma}, threshold {self.ink_lines_threshold}; "
                             "expected a strength in [0, 1], sigma > 0 and threshold > 0")
        if self.ink_lines and not self.ink_style:
            raise ValueError("ink_lines draws key lines in the inked style's darkest ink; it needs an ink_style")
        if self.ink_fields < 0 or self.ink_fields_eps <= 0:
            raise ValueError(f"ink_fields {self.ink_fields} with eps {self.ink_fields_eps}; expected a radius >= 0 and eps > 0")


class FiLM(nn.Module):
    """Style-conditioned channel scale and shift: ``x * (1 + s W_g) + s W_b``."""

    def __init__(self, n_styles: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(n_styles, channels, bias=False)
        self.beta = nn.Linear(n_styles, channels, bias=False)
        # Small random init: every style gets its own scale/shift from step one.
        nn.init.normal_(self.gamma.weight, std=0.05)
        nn.init.normal_(self.beta.weight, std=0.05)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        g = self.gamma(s)[:, :, None, None]  # [N,C,1,1]
        b = self.beta(s)[:, :, None, None]  # [N,C,1,1]
        return x * (1.0 + g) + b


def _up2(x: torch.Tensor, mode: str) -> torch.Tensor:
    """2x upsampling: nearest, or bilinear with half-pixel centres (ONNX Resize linear)."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ConvBlock(nn.Module):
    """3x3 conv -> FiLM(style) -> LeakyReLU, optionally preceded by a 2x upsample."""

    def __init__(self, cin: int, cout: int, n_styles: int, stride: int = 1, upsample: str | None = None, pad: str = "zeros"):
        super().__init__()
        self.upsample = upsample  # None, "nearest" or "bilinear"
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode=pad)
        self.film = FiLM(n_styles, cout)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = _up2(x, self.upsample)
        return F.leaky_relu(self.film(self.conv(x), s), 0.2)


class MultiModalAttention(nn.Module):
    """Parallel colour / texture / shape branches mixed by softmax weights.

    - colour: 1x1 convolutions (per-position channel mixing, i.e. palette decisions);
    - texture: 3x3 convolution (local patterns);
    - shape: 3x3 convolution with dilation 2 (wider structure).

    The mixing weights come from the globally pooled features and the style vector, one softmax
    over the three branches per image: ``out = x + sum_k w_k * branch_k(x)``.
    """

    def __init__(self, channels: int, n_styles: int) -> None:
        super().__init__()
        self.colour = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 1)
        )
        self.texture = nn.Conv2d(channels, channels, 3, padding=1)
        self.shape = nn.Conv2d(channels, channels, 3, padding=2, dilation=2)
        self.gate = nn.Sequential(
            nn.Linear(channels + n_styles, 32), nn.LeakyReLU(0.2), nn.Linear(32, 3)
        )

    def branch_weights(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # [N,C]
        return torch.softmax(self.gate(torch.cat([pooled, s], dim=1)), dim=1)  # [N,3]

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        w = self.branch_weights(x, s)[:, :, None, None, None]  # [N,3,1,1,1]
        branches = torch.stack([self.colour(x), self.texture(x), self.shape(x)], dim=1)
        return x + (w * branches).sum(dim=1)  # [N,C,h,w]


class Generator(nn.Module):
    """Unified colorization + style generator: (luma, style) -> YCbCr."""

    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        c16, c8, c4, c2, c1 = cfg.widths
        ns, pad, up = cfg.n_styles, cfg.padding, cfg.upsample
        self.encoder = MobileNetV2Encoder(head=cfg.semantic)
        self.lat32 = nn.Conv2d(FEATURE_CHANNELS[32], c16, 1)
        self.lat16 = nn.Conv2d(FEATURE_CHANNELS[16], c16, 1)
        self.lat8 = nn.Conv2d(FEATURE_CHANNELS[8], c8, 1)
        self.lat4 = nn.Conv2d(FEATURE_CHANNELS[4], c4, 1)
        self.attention = MultiModalAttention(c16, ns) if cfg.attention else None
        if cfg.semantic:  # the class features, per position and image-wide; zero: no change until trained
            self.lat_sem = nn.Conv2d(SEMANTIC_CHANNELS, c16, 1)
            self.global_sem = nn.Linear(SEMANTIC_CHANNELS, c16)
            for m in (self.lat_sem, self.global_sem):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        self.up16 = ConvBlock(c16, c16, ns, upsample=up, pad=pad)
        self.up8 = ConvBlock(c16, c8, ns, upsample=up, pad=pad)
        self.up4 = ConvBlock(c8, c4, ns, upsample=up, pad=pad)
        bins = torch.from_numpy(chroma_bins(cfg.bin_step))  # [Q,2]
        self.register_buffer("bins", bins, persistent=False)
        # log rebalancing weight per bin, for the read-out's prior correction (set at export; not in checkpoints)
        self.register_buffer("class_log_weights", torch.zeros(len(bins)), persistent=False)
        self.colour_head = nn.Conv2d(c4, len(bins), 1)
        s8, s4 = cfg.style_widths
        self.style_in = ConvBlock(FEATURE_CHANNELS[8] + ns, s8, ns, pad=pad)  # + one constant plane per style weight
        self.style_up4 = ConvBlock(s8, s4, ns, upsample=up, pad=pad)
        self.style_lat4 = nn.Conv2d(FEATURE_CHANNELS[4], s4, 1)
        self.style_up2 = ConvBlock(s4, c2, ns, upsample=up, pad=pad)
        self.style_up1 = ConvBlock(c2 + 1, c1, ns, pad=pad)  # + the luma plane at full working resolution
        self.style_head = nn.Conv2d(c1, 3 * ns, 3, padding=1, padding_mode=pad)  # one output layer per style
        nn.init.zeros_(self.style_head.weight)  # styles start as the grey input
        nn.init.zeros_(self.style_head.bias)
        # the inked style's starting palette, YCbCr [K,3] (set at export; not in checkpoints)
        self.register_buffer("ink_palette", torch.zeros(cfg.inks if cfg.ink_style else 0, 3), persistent=False)
        if cfg.ink_lines:  # the key lines' two Gaussians (constants)
            self.register_buffer("line_fine", gaussian_kernel(cfg.ink_lines_sigma), persistent=False)
            self.register_buffer("line_coarse", gaussian_kernel(KEY_LINE_SCALE * cfg.ink_lines_sigma), persistent=False)

    def freeze_encoder(self, frozen: bool = True, from_stride: int = 2) -> None:
        """Stop gradients into the pretrained encoder, or (``frozen=False``) let them into its layers
        at ``from_stride`` and coarser only (2: all of it; 16: what only the colour decoder reads,
        see :data:`STYLE_FEATURE_STRIDE`)."""
        self.encoder.requires_grad_(False)
        if not frozen:
            for layer in self.encoder.layers_from(from_stride):
                layer.requires_grad_(True)

    def style_parameter_masks(self, style: int) -> dict[str, torch.Tensor]:
        """The weights only style ``style`` reads, as 0/1 masks by parameter name: the column of
        every FiLM (bias-free, so a one-hot style vector reads its own column alone), the style's
        output layer (its 3 rows and biases) and the style-branch input's weights on its constant
        plane. Training only these (``TrainConfig.tune_style``) leaves every other style, every blend
        without it, and colorization bit-identical.

        Raises:
            ValueError: ``style`` is not a painting style's index in :data:`sdk.contract.STYLES`.

        Example:
            >>> g = Generator(GeneratorConfig())
            >>> m = g.style_parameter_masks(contract.STYLES.index("rococo"))
            >>> int(m["style_head.bias"].sum())
            3
        """
        ns = self.cfg.n_styles
        if not 0 < style < ns:
            raise ValueError(f"style must index a painting style in {contract.STYLES[1:]} (1..{ns - 1}); got {style}")
        masks: dict[str, torch.Tensor] = {}
        for name, mod in self.named_modules():
            if isinstance(mod, FiLM):
                for part in ("gamma", "beta"):
                    m = torch.zeros_like(getattr(mod, part).weight)  # [C, S]
                    m[:, style] = 1.0
                    masks[f"{name}.{part}.weight"] = m
        head_w, head_b = torch.zeros_like(self.style_head.weight), torch.zeros_like(self.style_head.bias)
        head_w[3 * style:3 * style + 3], head_b[3 * style:3 * style + 3] = 1.0, 1.0  # rows of head_k
        masks["style_head.weight"], masks["style_head.bias"] = head_w, head_b
        plane = torch.zeros_like(self.style_in.conv.weight)  # [C, f8 + S, 3, 3]
        plane[:, FEATURE_CHANNELS[8] + style] = 1.0  # the style's constant plane
        masks["style_in.conv.weight"] = plane
        return masks

    def encoder_keys_read_by_style(self) -> list[str]:
        """State-dict keys of the encoder weights the style branch's features depend on (strides up to
        :data:`STYLE_FEATURE_STRIDE`): two runs join at export only if these are equal."""
        tuned = {id(p) for layer in self.encoder.layers_from(2 * STYLE_FEATURE_STRIDE) for p in layer.parameters()}
        return [f"encoder.{n}" for n, p in self.encoder.named_parameters() if id(p) not in tuned]

    def colour_logits(self, feats: list[torch.Tensor], style: torch.Tensor) -> torch.Tensor:
        """Colour decoder: encoder features -> colour logits [N,Q,H/4,W/4]."""
        f4, f8, f16, f32 = feats
        h = self.lat32(f32)  # [N,c16,H/32]
        if self.cfg.semantic:  # the head runs here, not in the encoder: only calls that colorize pay for it
            sem = self.encoder.head(f32)  # [N,1280,H/32]
            h = h + self.lat_sem(sem) + self.global_sem(sem.mean(dim=(2, 3)))[:, :, None, None]  # [N,c16,H/32]
        if self.attention is not None:
            h = self.attention(h, style)
        h = self.up16(h, style) + self.lat16(f16)  # [N,c16,H/16]
        h = self.up8(h, style) + self.lat8(f8)  # [N,c8,H/8]
        h = self.up4(h, style) + self.lat4(f4)  # [N,c4,H/4]
        return self.colour_head(h)

    def annealed_mean(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N,Q,h,w] -> (annealed-mean CbCr [N,2,h,w], each image's mean expected chroma magnitude [N]).

        p = softmax((logits - a log w) / T) per pixel; the chroma is ``sum_q p_q centre_q`` and the
        magnitude ``mean_xy sum_q p_q |centre_q|`` (how strongly the decoder would colour the image,
        were it sure of each hue: the chroma gain's measure), both from one product.
        """
        # Softmax over the last axis (ONNX Runtime's Softmax on axis 1 of NCHW is ~10x slower).
        z = logits.permute(0, 2, 3, 1)  # [N,h,w,Q]
        if self.cfg.prior_correction:
            z = z - self.cfg.prior_correction * self.class_log_weights
        p = torch.softmax(z / self.cfg.temperature, dim=-1)  # [N,h,w,Q]
        m = p @ torch.cat([self.bins, self.bins.norm(dim=1, keepdim=True)], dim=1)  # [N,h,w,3]: centres, |centres|
        return m[..., :2].permute(0, 3, 1, 2), m[..., 2].mean(dim=(1, 2))

    def chroma(self, logits: torch.Tensor) -> torch.Tensor:
        """Annealed-mean read-out: logits [N,Q,h,w] -> CbCr [N,2,h,w]."""
        c, e = self.annealed_mean(logits)  # [N,2,h,w], [N]
        if self.cfg.chroma_gain:
            gain = (self.cfg.chroma_gain_ref / e.clamp_min(1e-4)) ** self.cfg.chroma_gain  # [N]
            c = c * gain.clamp(*CHROMA_GAIN_LIMITS)[:, None, None, None]
        k = self.cfg.chroma_blur
        if k > 1:  # box filter, edges replicated: less speckle from the stride-4 features
            c = F.avg_pool2d(F.pad(c, (k // 2,) * 4, mode="replicate"), k, stride=1)
        if self.cfg.chroma_scale != 1.0:
            c = c * self.cfg.chroma_scale
        return c

    def styled(self, feats: list[torch.Tensor], luma: torch.Tensor, style: torch.Tensor, ink: bool = True) -> torch.Tensor:
        """Style branch: encoder features -> the styled image's (Y, Cb, Cr) [N,3,H,W].

        ``ink=False`` leaves out the ink read-out: the same numbers for inputs without weight on
        ``ink_style`` (the exported graph switches to it for the other styles).
        """
        f4, f8 = feats[0], feats[1]
        planes = style[:, :, None, None].expand(-1, -1, f8.shape[2], f8.shape[3])  # [N,S,H/8,W/8]
        x = self.style_in(torch.cat([f8, planes], dim=1), style)  # [N,s8,H/8]
        x = self.style_up4(x, style) + self.style_lat4(f4)  # [N,s4,H/4]
        x = self.style_up2(x, style)  # [N,c2,H/2]
        x = self.style_up1(torch.cat([_up2(x, self.cfg.upsample), luma * 2.0 - 1.0], dim=1), style)  # [N,c1,H,W]
        heads = self.style_head(x)  # [N,3*S,H,W]
        n, _, hh, ww = heads.shape
        o = (heads.view(n, -1, 3, hh, ww) * style[:, :, None, None, None]).sum(dim=1)  # [N,3,H,W]: sum_k s_k head_k
        y = (luma + torch.tanh(o[:, :1])).clamp(0.0, 1.0)
        out = torch.cat([y, 0.5 * torch.tanh(o[:, 1:])], dim=1)  # [N,3,H,W]
        if self.cfg.ink_style and ink:
            w = style[:, contract.STYLES.index(self.cfg.ink_style)][:, None, None, None]  # [N,1,1,1]
            printed = self.inked(out, luma)  # [N,3,H,W]
            if self.cfg.ink_lines:  # the key block over the colour blocks
                key = self.ink_palette[self.ink_palette[:, 0].argmin()][None, :, None, None]  # [1,3,1,1]: the darkest ink
                printed = printed + self.cfg.ink_lines * self.key_lines(luma) * (key - printed)
            out = out + w * (printed - out)
        return out

    def key_lines(self, luma: torch.Tensor) -> torch.Tensor:
        """Luma [N,1,H,W] -> where to draw a key line [N,1,H,W] in [0, 1] (``GeneratorConfig.ink_lines``).

        A difference of Gaussians is negative on the dark side of an edge and along thin dark
        lines; below ``-threshold`` a line starts, fully drawn at ``-2 threshold``.
        """
        dog = gaussian_blur(luma, self.line_fine) - gaussian_blur(luma, self.line_coarse)  # [N,1,H,W]
        t = self.cfg.ink_lines_threshold
        return ((-dog - t) / t).clamp(0.0, 1.0)

    def inked(self, ycbcr: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] -> the same printed in ``inks`` flat colours (see ``GeneratorConfig.ink_style``).

        Each pixel takes a softmax over the inks at a low temperature, ~1 at its nearest. Not a hard
        argmin: a pixel on the boundary of two inks must not flip on rounding (ONNX Runtime vs
        PyTorch), so the output stays continuous. The softmax runs over the last axis (as in
        :meth:`chroma`: ONNX Runtime's Softmax on an inner axis is much slower). With
        ``ink_fields`` the pixels' ink shares are then voted over a window along ``luma``
        [N,1,H,W] (:meth:`voted`).
        """
        n, _, h, w = ycbcr.shape
        ink = self.ink_palette  # [K,3]
        a = self.ink_shares(ycbcr.flatten(2).transpose(1, 2))  # [N,P,K]
        if self.cfg.ink_fields > 0:
            a = self.voted(a.transpose(1, 2).reshape(n, -1, h, w), luma)  # [N,P,K]
        return (a @ ink).transpose(1, 2).reshape(n, 3, h, w)

    def ink_shares(self, f: torch.Tensor) -> torch.Tensor:
        """Pixels [N,P,3] (YCbCr) -> [N,P,K]: each one's softmax over the inks by squared distance."""
        ink = self.ink_palette  # [K,3]
        d = (ink * ink).sum(dim=1) - 2.0 * (f @ ink.T)  # [N,P,K]: squared distance less |f|^2
        return torch.softmax(d / -self.cfg.ink_softness, dim=-1)

    def voted(self, shares: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:
        """Edge-aware ink vote: shares [N,K,H,W] (each pixel's softmax over the inks), luma [N,1,H,W] -> [N,H*W,K].

        A fast guided filter (:func:`guided_coefficients`) at half size, guided by the input
        luminance: each window fits share = A * luma + b per ink, so a field's majority fills flat
        parts of the image while a luminance edge inside the window splits the vote along it. The
        voted shares are sharpened by a softmax (``INK_VOTE_SOFTNESS``) into the pixel's ink.
        """
        k = shares.shape[1]
        a, b = guided_coefficients(F.avg_pool2d(luma, 2), F.avg_pool2d(shares, 2), self.cfg.ink_fields, self.cfg.ink_fields_eps)
        ab = torch.cat([a, b], dim=1) / INK_VOTE_SOFTNESS  # [N,2K,H/2,W/2] (the softmax's scale folded in)
        ab = F.interpolate(ab, scale_factor=2.0, mode="bilinear", align_corners=False)  # [N,2K,H,W]
        v = (ab[:, :k] * luma + ab[:, k:]).flatten(2).transpose(1, 2)  # [N,P,K]: voted shares / softness
        return torch.softmax(v, dim=-1)

    def guided_up4(self, c: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:
        """Fast guided upsampling: chroma [N,2,h,w] -> [N,2,4h,4w] following luma [N,1,4h,4w].

        At 1/4 size each window fits chroma = A * luma + b (:func:`guided_coefficients`, ridge
        ``chroma_guide_eps``); A and b are upsampled bilinearly and applied to the full-size luma.
        """
        a, b = guided_coefficients(F.avg_pool2d(luma, 4), c, self.cfg.chroma_guide, self.cfg.chroma_guide_eps)  # [N,2,h,w] each
        ab = F.interpolate(torch.cat([a, b], dim=1), scale_factor=4.0, mode="bilinear", align_corners=False)  # [N,4,H,W]
        return ab[:, :2] * luma + ab[:, 2:]  # [N,2,H,W]

    def natural(self, feats: list[torch.Tensor], luma: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour decoder: encoder features -> (natural colorization (Y, Cb, Cr) [N,3,H,W], logits [N,Q,H/4,W/4]).

        Already inside the output box (Y is the input, the chroma a mean of in-gamut bin centres).
        """
        logits = self.colour_logits(feats, style)
        c = self.chroma(logits)  # [N,2,H/4,W/4]
        if self.cfg.chroma_guide > 0:
            cbcr = self.guided_up4(c, luma)  # [N,2,H,W]
        else:
            cbcr = F.interpolate(c, scale_factor=4.0, mode="bilinear", align_corners=False)  # [N,2,H,W]
        return torch.cat([luma, cbcr], dim=1), logits

    def forward(self, luma: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """(luma [N,1,H,W] in [0,1], H and W multiples of 32; style [N,S]) -> YCbCr [N,3,H,W]."""
        return self.decode(self.encoder(luma), luma, style)

    def decode(self, feats: list[torch.Tensor], luma: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Everything after the encoder: both decoders, blended by the style weights."""
        natural, _ = self.natural(feats, luma, style)
        g = (1.0 - style[:, :1])[:, :, None, None]  # [N,1,1,1]: 0 for natural colorization
        return output_box((1.0 - g) * natural + g * self.styled(feats, luma, style))  # exact at both ends

    def decode_natural(self, feats: list[torch.Tensor], luma: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` for inputs whose style is natural alone (g = 0): the colour decoder only,
        the same numbers without the style branch (the exported graph switches to it)."""
        return output_box(self.natural(feats, luma, style)[0])

    def decode_styled(self, feats: list[torch.Tensor], luma: torch.Tensor, style: torch.Tensor, ink: bool = True) -> torch.Tensor:
        """:meth:`decode` for inputs with no natural weight (g = 1): the style branch only, the same
        numbers without the colour decoder (the exported graph switches to it for painting styles);
        ``ink=False`` also without the ink read-out, for inputs with no weight on ``ink_style``."""
        return output_box(self.styled(feats, luma, style, ink))


def output_box(ycbcr: torch.Tensor) -> torch.Tensor:
    """Clamp [N,3,H,W] YCbCr to the output's range: Y in [0, 1], Cb and Cr in [-0.5, 0.5]."""
    return torch.cat([ycbcr[:, :1].clamp(0.0, 1.0), ycbcr[:, 1:].clamp(-0.5, 0.5)], dim=1)


STYLE_PREFIX = "style_"
"""State-dict keys of the style branch start with this; everything else is encoder or colour."""


class Discriminator(nn.Module):
    """PatchGAN with spectral norm, conditioned on the style by projection.

    ``D(x, k) = psi(phi(x)) + <embed(k), phi(x)>`` per patch, where class 0 is "real photo"
    and classes 1.. are the painting styles. Input: RGB in [0, 1], [N,3,H,W].

    ``border`` drops that many patches along every edge of the logit map: their receptive fields
    (38 px) reach the zero padding, so they know where the image ends and could judge a generator's
    edges by the composition of real crops' edges. (Measured on the style bands: dropping them
    alone did not change the bands, which the Gram loss paints; model card, "Edge bands".)
    """

    def __init__(self, n_styles: int = len(contract.STYLES), width: int = 32, border: int = 0) -> None:
        super().__init__()
        if border < 0:
            raise ValueError(f"border counts logit patches dropped along each edge: 0 or more; got {border}")
        self.border = border
        sn = nn.utils.spectral_norm
        w = width
        self.features = nn.Sequential(
            sn(nn.Conv2d(3, w, 4, 2, 1)), nn.LeakyReLU(0.2),  # H/2
            sn(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2),  # H/4
            sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2),  # H/8
            sn(nn.Conv2d(4 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2),  # H/8
        )
        self.psi = sn(nn.Conv2d(4 * w, 1, 1))
        self.embed = sn(nn.Embedding(n_styles, 4 * w))

    def forward(self, rgb: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        phi = self.features(rgb * 2.0 - 1.0)  # [N,4w,H/8,W/8]
        proj = (self.embed(label)[:, :, None, None] * phi).sum(dim=1, keepdim=True)
        logits = self.psi(phi) + proj  # [N,1,H/8,W/8] patch logits
        b = self.border
        if b:
            if min(logits.shape[-2:]) <= 2 * b:
                raise ValueError(f"a {tuple(rgb.shape[-2:])} input gives {tuple(logits.shape[-2:])} patches, none inside a border of {b}; "
                                 "use larger crops or a smaller border")
            logits = logits[..., b:-b, b:-b]
        return logits


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] YCbCr -> RGB in [0,1] (clamped), with the contract's matrix."""
    m = torch.tensor(contract.YCBCR_TO_RGB, dtype=ycbcr.dtype, device=ycbcr.device)
    return torch.einsum("ij,njhw->nihw", m, ycbcr).clamp(0.0, 1.0)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] RGB in [0,1] -> YCbCr, with the contract's matrix."""
    m = torch.tensor(contract.RGB_TO_YCBCR, dtype=rgb.dtype, device=rgb.device)
    return torch.einsum("ij,njhw->nihw", m, rgb)


def one_hot_style(index: torch.Tensor, n_styles: int = len(contract.STYLES)) -> torch.Tensor:
    """Style indices [N] -> one-hot style weights [N,S] (float32)."""
    return F.one_hot(index, n_styles).float()
