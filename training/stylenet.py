"""The style path: a feed-forward painting network with conditional instance normalisation.

Dumoulin, Shlens & Kudlur 2017 ("A Learned Representation for Artistic Style"), on Johnson et
al.'s transformer network: every convolution is shared by all styles, and a style is only the
scale and shift after each instance normalisation. The style-weight vector picks those: with
painting weights ``p`` (summing to 1), a layer's scale is ``p @ gamma`` and its shift
``p @ beta``, so a blend of styles blends their parameters, and a new style is one more row of
each (trained with everything else frozen: the other rows, and so every other style, stay as
they were; :meth:`StyleNet.add_style`).

It reads luminance only (the SDK's contract input) and paints RGB. It shares nothing with the
colour decoder: :class:`training.model.Generator` blends the two by the natural weight.

Layout (working resolution H x W; any size divisible by 4)::

    luma [N,1,H,W] -> 2 luma - 1
      -> conv_in  5x5, CIN, ReLU                          [N,c1,H,W]
      -> down2    3x3 stride 2, CIN, ReLU                 [N,c2,H/2,W/2]
      -> down4    3x3 stride 2, CIN, ReLU                 [N,c3,H/4,W/4]
      -> res x R  (sep 3x3, CIN, ReLU, sep 3x3, CIN) + skip
      -> up2      nearest x2, sep 3x3, CIN, ReLU          [N,c2,H/2,W/2]
      -> up1      nearest x2, sep 3x3, CIN, ReLU          [N,c1,H,W]
      -> conv_out 3x3 -> sigmoid                          RGB [N,3,H,W] in [0, 1]

"sep 3x3" is a depthwise 3x3 then a pointwise 1x1 convolution (MobileNet's): the residual
blocks and the decoder cost a seventh of full 3x3 convolutions, which keeps stylize inside its
latency target on two CPU cores (full convolutions and reflection padding measured 1.5-2.6x
slower in ONNX Runtime). Upsample-then-convolve in the decoder (no checkerboards). Convolutions
pad with zeros; the SDK runs the network on its input reflect-padded by the manifest's
``style_pad`` and crops that off, so the border the network sees is not the image's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class StyleNetConfig:
    """Sizes of the style network.

    Args:
        widths: channels at full, half and quarter resolution.
        res_blocks: residual blocks at quarter resolution.
        n_styles: painting styles (rows of every normalisation's scale and shift).
    """

    widths: tuple[int, int, int] = (16, 32, 64)
    res_blocks: int = 5
    n_styles: int = 4

    def __post_init__(self) -> None:
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ValueError(f"widths is {self.widths}; expected three positive channel counts (full, half, quarter resolution)")
        if self.res_blocks < 0 or self.n_styles < 1:
            raise ValueError(f"res_blocks {self.res_blocks}, n_styles {self.n_styles}; expected >= 0 and >= 1")


class CondInstanceNorm(nn.Module):
    """Instance normalisation, then a per-style scale and shift mixed by the painting weights.

    ``gamma`` and ``beta`` are [S, C] (a style a row); ``p`` [N, S] mixes them by a MatMul, so one
    graph serves every style and blend (an indexed ModuleList would not export).
    """

    def __init__(self, n_styles: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(n_styles, channels))
        self.beta = nn.Parameter(torch.zeros(n_styles, channels))

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        x = F.instance_norm(x, eps=1e-5)
        return x * (p @ self.gamma)[:, :, None, None] + (p @ self.beta)[:, :, None, None]


class ConvNorm(nn.Module):
    """Convolution (full, or depthwise-then-pointwise with ``separable``), conditional instance
    norm, optional ReLU; optionally a 2x nearest upsample first."""

    def __init__(self, cin: int, cout: int, n_styles: int, kernel: int = 3, stride: int = 1, upsample: bool = False,
                 relu: bool = True, separable: bool = False) -> None:
        super().__init__()
        self.upsample, self.relu = upsample, relu
        if separable:
            self.conv = nn.Sequential(nn.Conv2d(cin, cin, kernel, stride=stride, padding=kernel // 2, groups=cin), nn.Conv2d(cin, cout, 1))
        else:
            self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.norm = CondInstanceNorm(n_styles, cout)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.norm(self.conv(x), p)
        return F.relu(x) if self.relu else x


class ResBlock(nn.Module):
    def __init__(self, channels: int, n_styles: int) -> None:
        super().__init__()
        self.a = ConvNorm(channels, channels, n_styles, separable=True)
        self.b = ConvNorm(channels, channels, n_styles, relu=False, separable=True)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x, p), p)


class StyleNet(nn.Module):
    """(luma [N,1,H,W] in [0, 1], painting weights p [N,S] summing to 1) -> RGB [N,3,H,W] in [0, 1].

    Example:
        >>> net = StyleNet(StyleNetConfig(widths=(4, 8, 8), res_blocks=1, n_styles=2))
        >>> net(torch.rand(1, 1, 32, 32), torch.tensor([[1.0, 0.0]])).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, cfg: StyleNetConfig = StyleNetConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.widths
        s = cfg.n_styles
        self.conv_in = ConvNorm(1, c1, s, kernel=5)
        self.down2 = ConvNorm(c1, c2, s, stride=2)
        self.down4 = ConvNorm(c2, c3, s, stride=2)
        self.res = nn.ModuleList([ResBlock(c3, s) for _ in range(cfg.res_blocks)])
        self.up2 = ConvNorm(c3, c2, s, upsample=True, separable=True)
        self.up1 = ConvNorm(c2, c1, s, upsample=True, separable=True)
        self.conv_out = nn.Conv2d(c1, 3, 3, padding=1)

    def forward(self, luma: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(luma * 2.0 - 1.0, p)  # [N,c1,H,W]
        x = self.down4(self.down2(x, p), p)  # [N,c3,H/4,W/4]
        for block in self.res:
            x = block(x, p)
        x = self.up1(self.up2(x, p), p)  # [N,c1,H,W]
        return torch.sigmoid(self.conv_out(x))  # [N,3,H,W]

    def norms(self) -> list[CondInstanceNorm]:
        return [m for m in self.modules() if isinstance(m, CondInstanceNorm)]

    def style_parameters(self) -> list[nn.Parameter]:
        """Every normalisation's scale and shift: all that differs between styles."""
        return [t for n in self.norms() for t in (n.gamma, n.beta)]

    @torch.no_grad()
    def add_style(self, init: int | None = None) -> int:
        """Append one style (a row to every scale and shift) and return its index.

        Args:
            init: copy this style's row as the starting point (None: the mean of all rows).
        """
        for n in self.norms():
            for name in ("gamma", "beta"):
                old = getattr(n, name)
                row = old.mean(dim=0, keepdim=True) if init is None else old[init : init + 1]
                setattr(n, name, nn.Parameter(torch.cat([old, row.clone()], dim=0)))
        self.cfg = StyleNetConfig(widths=self.cfg.widths, res_blocks=self.cfg.res_blocks, n_styles=self.cfg.n_styles + 1)
        return self.cfg.n_styles - 1


def painting_weights(style: torch.Tensor) -> torch.Tensor:
    """Style-weight vector [N, 1 + S] (index 0 natural) -> painting weights [N, S] summing to 1
    (all zero where the vector has no painting weight: the style path's output is then unused)."""
    w = style[:, 1:]
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-8)
