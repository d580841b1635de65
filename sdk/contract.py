"""The model contract: processing constants shared by training, export and the SDK.

This module is the single source of the colour space, scaling and style vocabulary. Training
imports it to build targets, export copies it into ``manifest.json``, and the SDK checks the
manifest it loads against what it knows how to run. It imports nothing beyond the standard
library, and ``import sdk.contract`` runs only this module (``sdk/__init__`` loads the rest on
first use), so ``training`` can use it without pulling in onnxruntime or Pillow, and ``sdk``
without torch.

Colour space: full-range BT.601 YCbCr (the JPEG/JFIF convention) on gamma-encoded sRGB in
[0, 1]. It is linear in RGB, so chroma predicted at a low working resolution can be upsampled and
recombined with full-resolution luminance by a single 3x3 matrix product.
"""

from __future__ import annotations

COLOR_SPACE = "ycbcr-bt601-full"
"""Name recorded in the manifest; the SDK refuses a model that uses any other."""

LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""BT.601 luma weights (Kr, Kg, Kb): ``Y = Kr R + Kg G + Kb B``. The one definition both matrices
below are derived from."""


def _ycbcr_matrices(kr: float, kb: float) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """(RGB -> YCbCr, YCbCr -> RGB) for luma weights ``kr``, ``kb``, rounded to 9 decimals.

    Cb = (B - Y) / (2 (1 - Kb)) and Cr = (R - Y) / (2 (1 - Kr)), each in [-0.5, 0.5]. The rounding
    keeps the published 9-decimal values that the shipped models were trained and exported with
    (float32 copies are identical either way); the product of the two is the identity to 1e-9.
    """
    kg = 1.0 - kr - kb
    to_ycc = ((kr, kg, kb),
              (-0.5 * kr / (1 - kb), -0.5 * kg / (1 - kb), 0.5),
              (0.5, -0.5 * kg / (1 - kr), -0.5 * kb / (1 - kr)))
    to_rgb = ((1.0, 0.0, 2 * (1 - kr)),
              (1.0, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg),
              (1.0, 2 * (1 - kb), 0.0))

    def rounded(m: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(round(v, 9) + 0.0 for v in row) for row in m)  # + 0.0: no -0.0

    return rounded(to_ycc), rounded(to_rgb)


RGB_TO_YCBCR, YCBCR_TO_RGB = _ycbcr_matrices(LUMA_WEIGHTS[0], LUMA_WEIGHTS[2])
"""RGB -> YCbCr (rows give Y, Cb, Cr; RGB and Y in [0, 1], Cb and Cr in [-0.5, 0.5]) and its
inverse. Training (torch), the SDK (numpy) and the manifest all take them from here."""

STYLES: tuple[str, ...] = ("natural", "ukiyoe", "impressionism", "pointillism", "rococo")
"""Style names in the order of the generator's style-weight vector. Index 0 is colorization."""

NATURAL = "natural"
PAINTING_STYLES: tuple[str, ...] = tuple(s for s in STYLES if s != NATURAL)
"""The painting styles (indices 1.. of the style vector): what training, its style evaluation and ``stylize`` take."""

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
