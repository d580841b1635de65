"""The model contract: processing constants shared by training, export and the SDK.

This module is the single source of the colour space, scaling and style vocabulary. Training
imports it to build targets, export copies it into ``manifest.json``, and the SDK checks the
manifest it loads against what it knows how to run. It imports nothing beyond the standard
library so that ``training`` can use it without pulling in onnxruntime and ``sdk`` without torch.

Colour space: full-range BT.601 YCbCr (the JPEG/JFIF convention) on gamma-encoded sRGB in
[0, 1]. It is linear in RGB, so chroma predicted at a low working resolution can be upsampled and
recombined with full-resolution luminance by a single 3x3 matrix product.
"""

from __future__ import annotations

COLOR_SPACE = "ycbcr-bt601-full"
"""Name recorded in the manifest; the SDK refuses a model that uses any other."""

# RGB -> YCbCr, rows give Y, Cb, Cr; inputs and Y in [0, 1], Cb and Cr in [-0.5, 0.5].
RGB_TO_YCBCR: tuple[tuple[float, float, float], ...] = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
# YCbCr -> RGB, the exact inverse of RGB_TO_YCBCR.
YCBCR_TO_RGB: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)

STYLES: tuple[str, ...] = ("natural", "ukiyoe", "impressionism", "pointillism", "rococo")
"""Style names in the order of the generator's style-weight vector. Index 0 is colorization."""

NATURAL = "natural"

INPUT_NAMES: tuple[str, str] = ("luma", "style")
"""``luma``: float32 [N, 1, H, W], Y in [0, 1]. ``style``: float32 [N, S] style weights."""
OUTPUT_NAMES: tuple[str] = ("ycbcr",)
"""``ycbcr``: float32 [N, 3, H, W]; Y in [0, 1], Cb and Cr in [-0.5, 0.5]."""

SIZE_MULTIPLE = 32
"""Generator input height and width must be multiples of this (the encoder's five stride-2 stages)."""

WORK_SIZE = 256
"""Default working resolution: the long side the generator runs at."""

MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
MANIFEST_VERSION = 1
