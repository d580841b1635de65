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
- **Style path** (:mod:`training.stylenet`): a feed-forward painting network of its own on the
  luminance, with conditional instance normalisation (Dumoulin et al. 2017): all convolutions are
  shared, a style is one row of every normalisation's scale and shift, and the painting weights
  mix those rows. The output is ``(1 - g) * natural + g * styled`` with ``g = 1 - s_natural``:
  natural colorization is exactly the colour head, full style is exactly the style path, and
  ``strength`` blends linearly toward the colorization. Colour and style share nothing, so they
  train as separate runs (``python -m training`` and ``python -m training.style_train``) and
  ``python -m export onnx --style-checkpoint`` joins them.

Layout (working resolution H x W, both multiples of 32)::

    luma [N,1,H,W] -> encoder -> f4 [N,24,H/4], f8 [N,32,H/8], f16 [N,96,H/16], f32 [N,320,H/32]
    f32 -> lat32 [N,c16,H/32] (-> multi-modal attention, optional)
        -> up16 [N,c16,H/16] + lat16(f16) -> up8 [N,c8,H/8] + lat8(f8) -> up4 [N,c4,H/4] + lat4(f4)
    colour: colour_head [N,Q,H/4] -> annealed mean [N,2,H/4] -> bilinear x4 [N,2,H,W]
    style:  luma, painting weights p = s[1:] / sum(s[1:]) -> style_net -> RGB [N,3,H,W] -> YCbCr
    out = (1 - g) * (luma, CbCr) + g * styled, g = 1 - s_natural, clamped

The colour decoder's FiLM layers read a constant (the natural style's column): colorization does
not depend on the painting styles, so adding a style leaves it bit-identical.

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
from training.stylenet import StyleNet, StyleNetConfig, painting_weights

CHROMA_GAIN_LIMITS = (0.5, 2.0)
"""Range of the per-image chroma gain (``GeneratorConfig.chroma_gain``): at most halves or doubles an image's chroma."""


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
        widths: colour decoder channels at 1/16, 1/8, 1/4 (two more entries, unused: the
            layout of releases up to 13, kept so their colour checkpoints load).
        styles: the style names, in the order of the style-weight vector (index 0 ``natural``).
        style_widths: the style network's channels at 1/1, 1/2 and 1/4 (:class:`StyleNetConfig`).
        style_res_blocks: its residual blocks.
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
        chroma_gain_ref: ``e`` of a typical photo (the colour trainer measures the median on its
            training photos), in CbCr units.
        prior_correction: how much of the class rebalancing to take back at read-out (0: none,
            1: all). Training weights each pixel's loss by its true bin's rebalancing weight w, so
            the logits learn ``log p + log w``; subtracting ``a * log w`` (the buffer
            ``class_log_weights``, set at export from the training photos' colour prior) moves
            the read-out toward the unweighted posterior, whose mean is the accurate but duller one.
        chroma_guide: radius, at the read-out's 1/4 size, of a guided filter that upsamples the
            chroma along the input's own luminance edges (He et al.'s fast guided filter; 0: plain
            bilinear): colour stops at the edges it belongs to instead of bleeding across them.
        chroma_guide_eps: the guided filter's regulariser (a luminance variance: below it a
            window's chroma stays flat, above it chroma follows luminance).
    """

    widths: tuple[int, int, int, int, int] = (128, 64, 48, 32, 16)
    styles: tuple[str, ...] = contract.STYLES
    style_widths: tuple[int, int, int] = StyleNetConfig.widths
    style_res_blocks: int = StyleNetConfig.res_blocks
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
        if not self.styles or self.styles[0] != contract.NATURAL or len(set(self.styles)) != len(self.styles):
            raise ValueError(f"styles is {self.styles}; expected distinct names starting with {contract.NATURAL!r}")
        if self.chroma_guide < 0 or self.chroma_guide_eps <= 0:
            raise ValueError(f"chroma_guide {self.chroma_guide} with eps {self.chroma_guide_eps}; expected a radius >= 0 and eps > 0")

    @property
    def n_styles(self) -> int:
        """Length of the style-weight vector."""
        return len(self.styles)

    def style_net_config(self) -> StyleNetConfig:
        return StyleNetConfig(widths=tuple(self.style_widths), res_blocks=self.style_res_blocks, n_styles=self.n_styles - 1)

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
        c16, c8, c4 = cfg.widths[:3]
        ns, pad, up = 1, cfg.padding, cfg.upsample  # the colour decoder's FiLMs read one constant column (natural)
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
        self.style_net = StyleNet(cfg.style_net_config())

    def freeze_encoder(self, frozen: bool = True, from_stride: int = 2) -> None:
        """Stop gradients into the pretrained encoder, or (``frozen=False``) let them into its layers
        at ``from_stride`` and coarser only (2: all of it; 16: its stride-16/32 blocks and head)."""
        self.encoder.requires_grad_(False)
        if not frozen:
            for layer in self.encoder.layers_from(from_stride):
                layer.requires_grad_(True)

    def colour_logits(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Colour decoder: encoder features -> colour logits [N,Q,H/4,W/4]."""
        f4, f8, f16, f32 = feats
        style = f4.new_ones(f4.shape[0], 1)  # [N,1]: the FiLMs' natural column
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

    def styled(self, luma: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Style path: (luma [N,1,H,W], style weights [N,S]) -> the painted image's (Y, Cb, Cr) [N,3,H,W]."""
        return rgb_to_ycbcr(self.style_net(luma, painting_weights(style)))

    def guided_up4(self, c: torch.Tensor, luma: torch.Tensor) -> torch.Tensor:
        """Fast guided upsampling: chroma [N,2,h,w] -> [N,2,4h,4w] following luma [N,1,4h,4w].

        At 1/4 size each window fits chroma = A * luma + b (:func:`guided_coefficients`, ridge
        ``chroma_guide_eps``); A and b are upsampled bilinearly and applied to the full-size luma.
        """
        a, b = guided_coefficients(F.avg_pool2d(luma, 4), c, self.cfg.chroma_guide, self.cfg.chroma_guide_eps)  # [N,2,h,w] each
        ab = F.interpolate(torch.cat([a, b], dim=1), scale_factor=4.0, mode="bilinear", align_corners=False)  # [N,4,H,W]
        return ab[:, :2] * luma + ab[:, 2:]  # [N,2,H,W]

    def natural(self, feats: list[torch.Tensor], luma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour decoder: encoder features -> (natural colorization (Y, Cb, Cr) [N,3,H,W], logits [N,Q,H/4,W/4]).

        Already inside the output box (Y is the input, the chroma a mean of in-gamut bin centres).
        """
        logits = self.colour_logits(feats)
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
        """Everything after the encoder: both paths, blended by the style weights."""
        return self.blend(self.natural(feats, luma)[0], self.decode_styled(luma, style), style)

    def blend(self, natural: torch.Tensor, styled: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``(1 - g) natural + g styled`` with ``g = 1 - s_natural`` [N,3,H,W]: exact at both ends."""
        g = (1.0 - style[:, :1])[:, :, None, None]  # [N,1,1,1]: 0 for natural colorization
        return output_box((1.0 - g) * natural + g * styled)

    def decode_natural(self, feats: list[torch.Tensor], luma: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` for inputs whose style is natural alone (g = 0): the colour decoder only,
        the same numbers without the style path (the exported graph switches to it)."""
        return output_box(self.natural(feats, luma)[0])

    def decode_styled(self, luma: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` for inputs with no natural weight (g = 1): the style path only, the same
        numbers without the encoder and colour decoder (the exported graph switches to it)."""
        return output_box(self.styled(luma, style))


def output_box(ycbcr: torch.Tensor) -> torch.Tensor:
    """Clamp [N,3,H,W] YCbCr to the output's range: Y in [0, 1], Cb and Cr in [-0.5, 0.5]."""
    return torch.cat([ycbcr[:, :1].clamp(0.0, 1.0), ycbcr[:, 1:].clamp(-0.5, 0.5)], dim=1)


STYLE_PREFIX = "style_net."
"""State-dict keys of the style path start with this; everything else is encoder or colour."""


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
