"""Fusion of a stylized image with its original: the options, their checks, and :func:`fuse`.

Fusion needs no model. :func:`fuse` is ``sdk.fuse``; :meth:`sdk.Pipeline.fuse` calls it with the
pipeline's ``threads``, and :func:`sdk.stages.finish` applies a :class:`FuseParams` to a job's
result. The pixel work (tiled, threaded) is in :mod:`sdk.processing`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdk import processing
from sdk.errors import InvalidArgumentError
from sdk.images import MAX_PIXELS, ImageInput, decode, encode

FUSE_METHODS = ("laplacian", "weighted", "luminance", "tone", "colour")


@dataclass(frozen=True)
class FuseParams:
    """How to blend a stylized image with its original (checked on creation).

    Methods:
        ``laplacian``: Laplacian-pyramid fusion; the ``detail_levels`` finest bands take
        ``detail`` of the content's detail (1 = all of it), the rest come from the stylized image.
        ``weighted``: per-pixel ``weight * stylized + (1 - weight) * content``.
        ``luminance``: the stylized colour on the content's luminance, ``weight`` scaling the colour.
        ``tone``: the stylized image with the content's coarse luminance (its tonal layout on a
        16-cell grid, :func:`sdk.processing.fuse_tone`), ``weight`` its share: strokes and colour
        stay the style's, a night sky stays dark.
        ``colour``: the content's own colour (Cb, Cr) under the stylized image's luminance (its
        strokes and tones), ``weight`` the content colour's share (1: the photo's colours, 0: the
        style's): a colour-preserving stylize, e.g. a stained-glass window keeps its colours.

    Args:
        method: one of :data:`FUSE_METHODS`.
        detail, detail_levels, levels: Laplacian parameters (detail in [0, 1], levels >= 1).
        weight: for ``weighted``, ``luminance``, ``tone`` and ``colour``, in [0, 1].

    Raises:
        InvalidArgumentError: unknown method or parameter out of range.

    Example:
        >>> FuseParams("laplacian", detail=1.0).detail_levels
        2
    """

    method: str = "laplacian"
    detail: float = 0.7
    detail_levels: int = 2
    levels: int = 5
    weight: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in FUSE_METHODS:
            raise InvalidArgumentError(f"unknown fusion method {self.method!r}; expected one of {FUSE_METHODS}")
        for name, v in (("detail", self.detail), ("weight", self.weight)):
            if not isinstance(v, numbers.Real) or not 0.0 <= v <= 1.0:
                raise InvalidArgumentError(f"{name} is {v!r}; expected a number in [0, 1]")
        for name, v in (("detail_levels", self.detail_levels), ("levels", self.levels)):
            if not isinstance(v, numbers.Integral) or v < 1:
                raise InvalidArgumentError(f"{name} is {v!r}; expected an integer >= 1")


def fuse_rgb(content: np.ndarray, stylized: np.ndarray, params: FuseParams, workers: int | None = None) -> np.ndarray:
    """Fuse two HxWx3 uint8 arrays; ``stylized`` is resized to the content's size if it differs.

    Args:
        content, stylized: RGB uint8 images.
        params: the fusion options.
        workers: threads for the tiled full-resolution steps (None: one per core, at most 8).

    Returns:
        HxWx3 uint8 at the content's size.
    """
    if stylized.shape != content.shape:
        stylized = np.asarray(Image.fromarray(stylized, "RGB").resize((content.shape[1], content.shape[0]), Image.BILINEAR))
    if params.method == "laplacian":
        return processing.fuse_laplacian(content, stylized, params.detail, params.detail_levels, params.levels, workers)
    if params.method == "weighted":
        return processing.fuse_weighted(content, stylized, params.weight, workers)
    if params.method == "tone":
        return processing.fuse_tone(content, stylized, params.weight, workers)
    if params.method == "colour":  # the mirror of luminance: the stylized luminance, the content's colour
        return processing.fuse_luminance(stylized, content, params.weight, workers)
    return processing.fuse_luminance(content, stylized, params.weight, workers)


def fuse(
    content: ImageInput,
    stylized: ImageInput,
    method: str = "laplacian",
    detail: float = 0.7,
    detail_levels: int = 2,
    levels: int = 5,
    weight: float = 0.5,
    workers: int | None = None,
    max_pixels: int | None = MAX_PIXELS,
):
    """Blend a stylized image with its original (see :class:`FuseParams` for the methods).

    Args:
        content: the original image; the result has its size and type (and its alpha).
        stylized: the stylized image; resized to the content's size if it differs.
        method, detail, detail_levels, levels, weight: see :class:`FuseParams`.
        workers: threads for the full-resolution steps (None: one per core, at most 8);
            :meth:`sdk.Pipeline.fuse` passes the pipeline's ``threads``.
        max_pixels: refuse larger inputs (see :func:`sdk.images.decode`); None for no limit.

    Returns:
        The fused image in the content's type. Memory: the inputs, the output and a bounded
        working set (row tiles; see :func:`sdk.processing.fuse_laplacian`).

    Raises:
        InvalidArgumentError: unknown method or parameter out of range, bad ``workers``.
        InvalidImageError, ImageFormatError: an input cannot be read.

    Example:
        >>> out = fuse(photo, sdk.stylize(photo, "pointillism"), method="laplacian", detail=1.0)
    """
    params = FuseParams(method, detail, detail_levels, levels, weight)
    workers = processing.check_threads(workers, "workers")
    c = decode(content, "content", max_pixels)
    s = decode(stylized, "stylized", max_pixels)
    return encode(fuse_rgb(c.rgb_or_gray(), s.rgb_or_gray(), params, workers), c)
