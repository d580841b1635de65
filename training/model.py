"""Generator and discriminator.

The generator is one network for colorization and every painting style. It reads luminance and a
style-weight vector ``s`` (one-hot selects a style, other vectors blend them) and predicts
full-range YCbCr (see :mod:`sdk.contract`). Style enters through FiLM: every block scales and
shifts its channels by ``1 + s @ W_gamma`` and ``s @ W_beta``. That is conditional instance
norm's conditioning without the per-image statistics, so blending styles blends the vectors, the
whole thing is a MatMul in ONNX, and no normalisation layer runs at inference except at the
cheap 1/16-resolution bottleneck. The style weights also enter the stem as constant planes, so
the very first convolution already sees which style is asked for.

Layout (working resolution H x W, both multiples of 16)::

    luma [N,1,H,W] + style planes [N,S,H,W] -> stem (s2)  [N,c0,H/2]  -> down1 (s2) [N,c1,H/4] -> down2 (s2) [N,c2,H/8]
                   -> down3 (s2) [N,c3,H/16] -> bottleneck: res blocks + multi-modal attention
                   -> up3 [N,c2,H/8] (+ skip) -> up2 [N,c1,H/4] (+ skip) -> up1 [N,c0,H/2] (+ skip)
                   -> head: upsample, conv -> [N,3,H,W] (Y residual on input luma, Cb, Cr)

Decoders upsample then convolve (no transposed convolutions, no checkerboards).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdk import contract


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes of the generator.

    Args:
        widths: channels at 1/2, 1/4, 1/8 and 1/16 of the working resolution.
        n_res: residual blocks in the bottleneck.
        n_styles: length of the style-weight vector.
        padding: convolution padding mode. "replicate" (ONNX Pad mode=edge): zero padding gave the
            Gram-trained styles bright streaks along the borders.
        attention: include the multi-modal attention block. Off by default: the ablation in the
            model card (colour only, 600 steps at 64x64) did not show it helping validation PSNR.
        upsample: the decoder's 2x upsampling before each convolution, "nearest" or "bilinear"
            (smoother; ONNX Resize linear). Checkpoints without the field used "nearest".
    """

    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    n_res: int = 3
    n_styles: int = len(contract.STYLES)
    attention: bool = False
    padding: str = "replicate"
    upsample: str = "nearest"

    def __post_init__(self) -> None:
        if self.upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample is {self.upsample!r}; expected 'nearest' or 'bilinear'")


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


class ResBlock(nn.Module):
    """Residual block with conditional instance norm (bottleneck only, where it is cheap)."""

    def __init__(self, channels: int, n_styles: int, pad: str = "zeros") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=pad)
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)
        self.film1 = FiLM(n_styles, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=pad)
        self.norm2 = nn.InstanceNorm2d(channels, affine=True)
        self.film2 = FiLM(n_styles, channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.film1(self.norm1(self.conv1(x)), s), 0.2)
        h = self.film2(self.norm2(self.conv2(h)), s)
        return x + h


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
        c0, c1, c2, c3 = cfg.widths
        ns, pad = cfg.n_styles, cfg.padding
        self.stem = ConvBlock(1 + ns, c0, ns, stride=2, pad=pad)  # luma + one constant plane per style weight
        self.down1 = ConvBlock(c0, c1, ns, stride=2, pad=pad)
        self.down2 = ConvBlock(c1, c2, ns, stride=2, pad=pad)
        self.down3 = ConvBlock(c2, c3, ns, stride=2, pad=pad)
        self.res = nn.ModuleList(ResBlock(c3, ns, pad=pad) for _ in range(cfg.n_res))
        self.attention = MultiModalAttention(c3, ns) if cfg.attention else None
        self.up3 = ConvBlock(c3, c2, ns, upsample=cfg.upsample, pad=pad)
        self.up2 = ConvBlock(c2, c1, ns, upsample=cfg.upsample, pad=pad)
        self.up1 = ConvBlock(c1, c0, ns, upsample=cfg.upsample, pad=pad)
        self.head = nn.Conv2d(c0, 3, 3, padding=1, padding_mode=pad)

    def forward(self, luma: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        # luma: [N,1,H,W] in [0,1]; style: [N,S]
        x = luma * 2.0 - 1.0
        planes = style[:, :, None, None].expand(-1, -1, luma.shape[2], luma.shape[3])  # [N,S,H,W]
        e0 = self.stem(torch.cat([x, planes], dim=1), style)  # [N,c0,H/2,W/2]
        e1 = self.down1(e0, style)  # [N,c1,H/4,W/4]
        e2 = self.down2(e1, style)  # [N,c2,H/8,W/8]
        h = self.down3(e2, style)  # [N,c3,H/16,W/16]
        for block in self.res:
            h = block(h, style)
        if self.attention is not None:
            h = self.attention(h, style)
        h = self.up3(h, style) + e2  # [N,c2,H/8,W/8]
        h = self.up2(h, style) + e1  # [N,c1,H/4,W/4]
        h = self.up1(h, style) + e0  # [N,c0,H/2,W/2]
        o = self.head(_up2(h, self.cfg.upsample))  # [N,3,H,W]
        y = (luma + 0.5 * torch.tanh(o[:, 0:1])).clamp(0.0, 1.0)
        cbcr = 0.5 * torch.tanh(o[:, 1:3])
        return torch.cat([y, cbcr], dim=1)  # [N,3,H,W]: Y, Cb, Cr


class Discriminator(nn.Module):
    """PatchGAN with spectral norm, conditioned on the style by projection.

    ``D(x, k) = psi(phi(x)) + <embed(k), phi(x)>`` per patch, where class 0 is "real photo"
    and classes 1.. are the painting styles. Input: RGB in [0, 1], [N,3,H,W].
    """

    def __init__(self, n_styles: int = len(contract.STYLES), width: int = 32) -> None:
        super().__init__()
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
        return self.psi(phi) + proj  # [N,1,H/8,W/8] patch logits


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
