"""MobileNetV2 1.0 feature encoder (the project's own module for the shared ImageNet weights).

The weights are ``../shared/weights/mobilenet_v2_100.safetensors``: TensorFlow's
``mobilenet_v2_1.0_224_quant`` dequantized to float32, batch norm folded into the convolution
biases (Apache-2.0; attribution in the model card). Key names follow the shared reference loader
(``stem``, ``blocks.N.{expand,dw,project}``); the classifier and the 1x1 head are not used.

Input here is **luminance** ``[N,1,H,W]`` in [0, 1]: the network was trained on RGB in [-1, 1],
and grey RGB (luma copied to three channels) equals one channel convolved with the stem kernel
summed over its input channels, so the stem is folded to one input channel at load time.

Padding: TensorFlow "SAME". A stride-2 layer on an even size pads one pixel right and bottom.
The generator requires H and W to be multiples of 32, so every stride-2 layer sees an even size
and the padding is the constant ``(0, 1, 0, 1)``: the exported ONNX graph stays valid at every
allowed shape.

Layout (H x W multiples of 32)::

    luma [N,1,H,W] -> stem s2 [N,32,H/2] -> blocks 0    [N,16,H/2]
                   -> blocks 1-2  [N,24,H/4]   (tap: stride 4)
                   -> blocks 3-5  [N,32,H/8]   (tap: stride 8)
                   -> blocks 6-12 [N,96,H/16]  (tap: stride 16)
                   -> blocks 13-16 [N,320,H/32] (tap: stride 32)

With ``head=True`` the module also holds the network's own 1x1 head (320 -> 1280, the class
features), which :meth:`forward` does not run: the colour decoder applies it to the stride-32
taps (``GeneratorConfig.semantic``), so calls that skip that decoder (stylize) skip it too.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (expansion t, out channels c, repeats n, first stride s), Sandler et al. 2018, table 2.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
FEATURE_CHANNELS = {4: 24, 8: 32, 16: 96, 32: 320}
SEMANTIC_CHANNELS = 1280
"""Channels of the optional head (the 1x1 convolution ImageNet's classifier reads)."""
STAGE_STRIDES = (2, 4, 8, 16, 32)
"""Output strides of the encoder's stages (the stem, then the blocks grouped by stride)."""
INPUT_MULTIPLE = 32
"""Input sides must be multiples of this (five stride-2 layers with constant SAME padding)."""


class ConvAct(nn.Module):
    """Conv2d (bias = folded batch norm) + optional ReLU6, TensorFlow SAME padding for even sizes."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.stride, self.act = stride, act
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 if stride == 1 else 0, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.pad(x, (0, 1, 0, 1))  # SAME on an even size with a 3x3 stride-2 kernel
        x = self.conv(x)
        return F.relu6(x) if self.act else x


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise 3x3 -> project 1x1, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        self.expand = ConvAct(cin, hidden, 1) if t != 1 else None
        self.dw = ConvAct(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvAct(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class MobileNetV2Encoder(nn.Module):
    """Luminance -> MobileNetV2 features at strides 4, 8, 16 and 32 (24, 32, 96, 320 channels).

    Args:
        head: also hold the network's own 1x1 head (320 -> 1280, ReLU6; ``self.head``, loaded and
            frozen with the rest): the features ImageNet's classifier reads, for the caller to
            apply to the stride-32 taps (``GeneratorConfig.semantic``).

    Example:
        >>> enc = MobileNetV2Encoder()
        >>> [f.shape[1] for f in enc(torch.zeros(1, 1, 64, 64))]
        [24, 32, 96, 320]
    """

    def __init__(self, head: bool = False) -> None:
        super().__init__()
        self.stem = ConvAct(1, 32, 3, 2)  # folded from 3 grey input channels
        blocks: list[nn.Module] = []
        cin, stride, last_at = 32, 2, {}
        for t, c, n, s in SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
            stride *= s
            last_at[stride] = len(blocks) - 1
        self.taps = {i: s for s, i in last_at.items()}  # block index -> stride, last block at each stride
        self.block_strides = [min(s for s, last in last_at.items() if last >= i) for i in range(len(blocks))]  # output stride per block
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvAct(cin, SEMANTIC_CHANNELS, 1) if head else None

    def forward(self, luma: torch.Tensor) -> list[torch.Tensor]:
        f4, f8 = self.low(luma)
        return [f4, f8, *self.high(f8)]  # [N,24,H/4], [N,32,H/8], [N,96,H/16], [N,320,H/32]

    def low(self, luma: torch.Tensor) -> list[torch.Tensor]:
        """The stem and the blocks up to stride 8: luma -> [f4 [N,24,H/4], f8 [N,32,H/8]] (all the
        style branch reads)."""
        return self._blocks(self.stem(luma * 2.0 - 1.0), lambda s: s <= 8)  # from [N,32,H/2]

    def high(self, f8: torch.Tensor) -> list[torch.Tensor]:
        """The blocks past stride 8: f8 -> [f16 [N,96,H/16], f32 [N,320,H/32]] (only the colour
        decoder reads them)."""
        return self._blocks(f8, lambda s: s > 8)

    def _blocks(self, x: torch.Tensor, keep) -> list[torch.Tensor]:
        out = []
        for i, (block, stride) in enumerate(zip(self.blocks, self.block_strides)):
            if keep(stride):
                x = block(x)
                if self.taps.get(i) in FEATURE_CHANNELS:
                    out.append(x)
        return out

    def layers_from(self, stride: int) -> list[nn.Module]:
        """The layers whose output stride is ``stride`` or coarser (the head counts as stride 32).

        ``layers_from(16)`` are the layers only the stride-16 and -32 taps depend on: changing them
        leaves the stride-4 and -8 features unchanged.

        Raises:
            ValueError: ``stride`` is not one of 2, 4, 8, 16, 32.

        Example:
            >>> len(MobileNetV2Encoder(head=True).layers_from(32))  # blocks 13-16 and the head
            5
        """
        if stride not in STAGE_STRIDES:
            raise ValueError(f"stride must be one of {STAGE_STRIDES} (the encoder's stages), got {stride}")
        layers = [self.stem] if stride <= 2 else []
        layers += [b for b, s in zip(self.blocks, self.block_strides) if s >= stride]
        return layers + ([self.head] if self.head is not None else [])

    def load_pretrained(self, path: str | Path) -> None:
        """Load the shared ImageNet weights (stem folded to one channel; the classifier, and the head
        unless this encoder has one, dropped).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            KeyError: the file lacks a tensor this module needs.
        """
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MobileNetV2 weights not found at {path} (expected ../shared/weights/mobilenet_v2_100.safetensors)")
        sd = load_file(str(path))
        sd["stem.conv.weight"] = sd["stem.conv.weight"].sum(dim=1, keepdim=True)
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise KeyError(f"{path} lacks {missing[:4]} ... ({len(missing)} tensors)")
        self.load_state_dict({k: sd[k] for k in own})
