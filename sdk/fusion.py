"""Fusion of a stylized image with its original: the options, their checks, the pixel kernels and
:func:`fuse`.

Fusion needs no model. :func:`fuse` is ``sdk.fuse``; :meth:`sdk.Pipeline.fuse` calls it with the
pipeline's ``threads``, and :func:`sdk.stages.finish` applies a job's :class:`FuseParams` through
:func:`fuse_rgb`. The kernels (``fuse_laplacian``, ``fuse_weighted``, ``fuse_tone``,
``fuse_luminance``) work on HxWx3 uint8 arrays in row tiles on a thread pool (:mod:`sdk.tiling`);
each has a whole-image reference path (``CHROMAFORGE_FAST_PATH=0``) that it matches.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdk import contract
from sdk.colour import ycbcr_tile_to_rgb, ycbcr_to_rgb_u8
from sdk.errors import InvalidArgumentError
from sdk.images import MAX_PIXELS, ImageInput, decode, encode
from sdk.resample import RowResampler, Upsampled, resize_plane
from sdk.tiling import check_threads, fast_path_enabled, run_tiles

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
        16-cell grid, :func:`fuse_tone`), ``weight`` its share: strokes and colour
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



# ------------------------------------------------------------------------------------------ kernels
_RGB2YCC_U8 = np.asarray(contract.RGB_TO_YCBCR, np.float32) / np.float32(255.0)
"""RGB -> YCbCr for RGB on the 0..255 scale (Y in [0, 1], Cb and Cr in [-0.5, 0.5])."""


def _half(shape: tuple[int, ...]) -> tuple[int, int]:
    """The next pyramid level's (h, w): halved, rounded up."""
    return (shape[0] + 1) // 2, (shape[1] + 1) // 2


def _down(img: np.ndarray) -> np.ndarray:
    """Halve an HxWxC float32 image (Pillow bilinear, antialiased)."""
    return np.stack([resize_plane(img[:, :, c], _half(img.shape)) for c in range(img.shape[2])], axis=2)


def _up(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC float32 image to ``shape`` (Pillow bilinear), one channel at a time."""
    return np.stack([resize_plane(img[:, :, c], shape) for c in range(img.shape[2])], axis=2)


def laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """The Laplacian pyramid of an image (the reference fusion path builds it).

    Args:
        img: float32 HxWxC.
        levels: band-pass levels at most (fewer once a side reaches 1 pixel).

    Returns:
        Band-pass levels (finest first) followed by the low-pass residual; :func:`reconstruct`
        gives ``img`` back exactly (up to float rounding).
    """
    bands = []
    cur = img
    for _ in range(levels):
        if min(cur.shape[:2]) < 2:
            break
        low = _down(cur)
        bands.append(cur - _up(low, cur.shape[:2]))
        cur = low
    bands.append(cur)
    return bands


def reconstruct(pyr: list[np.ndarray]) -> np.ndarray:
    """The image of a :func:`laplacian_pyramid`: the residual upsampled and each band added back.

    Args:
        pyr: band-pass levels, finest first, then the low-pass residual.

    Returns:
        float32 HxWxC at the finest band's size.
    """
    cur = pyr[-1]
    for band in reversed(pyr[:-1]):
        cur = band + _up(cur, band.shape[:2])
    return cur


def fuse_laplacian(content: np.ndarray, stylized: np.ndarray, detail: float, detail_levels: int, levels: int,
                   workers: int | None = None) -> np.ndarray:
    """Detail-preserving fusion of two HxWx3 uint8 images of equal size.

    The result takes the stylized image's coarse bands and low-pass residual, and for the
    ``detail_levels`` finest bands a mix ``(1 - detail) * stylized + detail * content``. With
    ``detail=1`` those bands equal the content's exactly, so its edges and texture return.

    The pyramid is linear, so this is computed without building either pyramid: with
    ``d = content - stylized`` and ``L(d)`` = ``d`` taken down ``k`` levels and back up,
    ``result = stylized + detail * (d - L(d))`` (``k`` = the number of mixed bands).

    Memory is bounded: nothing of image size is allocated but the result. A row of ``L(d)`` depends
    only on rows of ``d`` within a few ``2**k`` rows of it, so each tile of output rows computes
    its own rows of ``d`` (from ``content`` and ``stylized``) down and back up the pyramid, with the
    halo it needs, one channel at a time. A tile is at least ``32 * 2**k`` rows (so the halo stays
    small), which makes the working set proportional to the width and independent of the height:
    ~100 MB per worker thread at 20000 px wide with k = 2 (measured: 192 MB beyond the output for
    a 20000x20000 fusion on 2 threads, benchmarks/README.md). Each axis pass is Pillow's
    bilinear resize (horizontal: Pillow itself; vertical: :class:`sdk.resample.RowResampler`), on
    global row indices, so the result is the same for any tile size or thread count.

    Args:
        content, stylized: uint8 HxWx3 of equal size.
        detail: the content's share of the mixed bands, in [0, 1].
        detail_levels: how many of the finest bands are mixed.
        levels: pyramid levels (the mixed bands are at most this many).
        workers: threads (None: :func:`sdk.tiling.default_workers`).

    Returns:
        uint8 HxWx3.
    """
    if not fast_path_enabled():
        return _fuse_laplacian_reference(content, stylized, detail, detail_levels, levels)
    h, w = content.shape[:2]
    shapes = [(h, w)]  # the pyramid's level shapes, as laplacian_pyramid builds them
    while len(shapes) - 1 < levels and min(shapes[-1]) >= 2:
        shapes.append(_half(shapes[-1]))
    k = min(detail_levels, len(shapes) - 1)
    if k == 0:
        return np.array(stylized, copy=True)
    down = [None] + [RowResampler(shapes[i - 1][0], shapes[i][0]) for i in range(1, k + 1)]
    up = [RowResampler(shapes[i + 1][0], shapes[i][0]) for i in range(k)]

    def d_rows(ch: int, level: int, a: int, b: int) -> np.ndarray:
        """Rows [a, b) of ``d`` (one channel) at pyramid ``level``."""
        if level == 0:
            plane = content[a:b, :, ch].astype(np.float32)
            plane -= stylized[a:b, :, ch]
            return plane
        lo, hi = down[level].span(a, b)
        src = resize_plane(d_rows(ch, level - 1, lo, hi), (hi - lo, shapes[level][1]))
        return down[level].rows(src, lo, a, b)

    def low_rows(ch: int, level: int, a: int, b: int) -> np.ndarray:
        """Rows [a, b) of ``L(d)`` at ``level``: ``d`` at level k, brought back up to ``level``."""
        if level == k:
            return d_rows(ch, k, a, b)
        lo, hi = up[level].span(a, b)
        src = resize_plane(low_rows(ch, level + 1, lo, hi), (hi - lo, shapes[level][1]))
        return up[level].rows(src, lo, a, b)

    det = np.float32(detail)
    out = np.empty(content.shape, np.uint8)

    def work(s: int, e: int) -> None:
        c = content[s:e].astype(np.float32)
        st = stylized[s:e].astype(np.float32)
        c -= st  # d
        for ch in range(3):
            c[:, :, ch] -= low_rows(ch, 0, s, e)  # d - L(d): the finest k bands of d
        c *= det
        c += st
        c += np.float32(0.5)
        np.clip(c, 0.0, 255.0, out=c)
        out[s:e] = c

    run_tiles(h, w, work, workers, min_rows=32 << k)
    return out


def _fuse_laplacian_reference(content: np.ndarray, stylized: np.ndarray, detail: float, detail_levels: int, levels: int) -> np.ndarray:
    """:func:`fuse_laplacian` the direct way: both pyramids built, bands mixed, reconstructed."""
    c = content.astype(np.float32)
    s = stylized.astype(np.float32)
    pc = laplacian_pyramid(c, levels)
    ps = laplacian_pyramid(s, levels)
    out = []
    for i, (bc, bs) in enumerate(zip(pc, ps)):
        if i < detail_levels and i < len(pc) - 1:
            out.append(bs + np.float32(detail) * (bc - bs))
        else:
            out.append(bs)
    return np.clip(reconstruct(out) + 0.5, 0, 255).astype(np.uint8)


def _mix_rows(content: np.ndarray, stylized: np.ndarray, weight: np.float32, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [s, e) as float32: the content, and ``content + weight * (stylized - content)``."""
    c = content[s:e].astype(np.float32)
    mix = stylized[s:e].astype(np.float32)
    mix -= c
    mix *= weight
    mix += c
    return c, mix


def fuse_weighted(content: np.ndarray, stylized: np.ndarray, weight: float, workers: int | None = None) -> np.ndarray:
    """``weight * stylized + (1 - weight) * content``, per pixel (rounded; no clip needed for weight in [0, 1]).

    Args:
        content, stylized: uint8 HxWx3 of equal size.
        weight: the stylized image's share, in [0, 1].
        workers: threads (None: :func:`sdk.tiling.default_workers`).

    Returns:
        uint8 HxWx3.
    """
    w = np.float32(weight)
    if not fast_path_enabled():
        mix = content.astype(np.float32) + w * (stylized.astype(np.float32) - content)
        return np.clip(mix + 0.5, 0, 255).astype(np.uint8)
    out = np.empty(content.shape, np.uint8)

    def work(s: int, e: int) -> None:
        _, mix = _mix_rows(content, stylized, w, s, e)
        mix += np.float32(0.5)
        out[s:e] = mix

    run_tiles(content.shape[0], content.shape[1], work, workers)
    return out


TONE_SIDE = 16
"""Cells along the longer side of the grid on which ``tone`` fusion takes the content's luminance:
the image's tonal layout (a dark sky, a bright window) at the same scale at every resolution."""


def tone_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column cell boundaries of the ``tone`` grid.

    Args:
        h, w: the image's size.

    Returns:
        (row edges, column edges): ``n + 1`` edges per axis, cells of (near) equal size,
        :data:`TONE_SIDE` along the longer side (at most one cell per pixel).
    """
    cell = max(h, w) / TONE_SIDE
    nh, nw = (max(1, min(n, round(n / cell))) for n in (h, w))
    return (np.arange(nh + 1) * h) // nh, (np.arange(nw + 1) * w) // nw


def _cell_sums(plane: np.ndarray, rows: np.ndarray, cols: np.ndarray, first: int) -> np.ndarray:
    """Sums of ``plane`` (rows ``first``.. of the image) over the grid cells; [cells_y, cells_x]."""
    out = np.zeros((len(rows) - 1, len(cols) - 1), np.float64)
    col_sums = np.add.reduceat(plane, cols[:-1], axis=1, dtype=np.float64)  # [rows, cells_x]
    cell_of_row = np.searchsorted(rows, np.arange(first, first + len(plane)), side="right") - 1
    np.add.at(out, cell_of_row, col_sums)
    return out


def tone_means(plane: np.ndarray) -> np.ndarray:
    """Means of an HxW plane over the cells of :func:`tone_grid` (its tonal layout).

    Args:
        plane: HxW, any real dtype.

    Returns:
        float64 [cells_y, cells_x].

    Example:
        >>> tone_means(np.arange(64.0).reshape(8, 8)).shape
        (8, 8)
    """
    rows, cols = tone_grid(*plane.shape[:2])
    return _cell_sums(plane, rows, cols, 0) / np.outer(np.diff(rows), np.diff(cols))


def fuse_tone(content: np.ndarray, stylized: np.ndarray, weight: float, workers: int | None = None) -> np.ndarray:
    """The content's tonal layout under the stylized image's strokes and colour.

    With ``dY`` = the content's luminance minus the stylized image's, averaged over the cells of
    :func:`tone_grid` (:data:`TONE_SIDE` cells along the longer side) and upsampled bilinearly back
    to full size (``L(dY)``), the result keeps the stylized Cb, Cr and has luminance
    ``Y_s + weight * L(dY)`` (gamut-preserving conversion, as :func:`sdk.colour.ycbcr_to_rgb_u8`).
    Strokes and colours stay the style's; where the photo is dark (a night sky) the painting is
    dark too. Memory: the output and row tiles (two passes over the inputs: cell sums, then the result).

    Args:
        content, stylized: uint8 HxWx3 of equal size.
        weight: the content's tonal layout's share, in [0, 1].
        workers: threads (None: :func:`sdk.tiling.default_workers`).

    Returns:
        uint8 HxWx3.
    """
    m = _RGB2YCC_U8
    h, w = content.shape[:2]
    y255 = m[0] * np.float32(255.0)
    wt = np.float32(weight)
    if not fast_path_enabled():
        ycc = stylized.astype(np.float32) @ m.T
        dy = content.astype(np.float32) @ y255 - ycc[..., 0] * np.float32(255.0)
        low = resize_plane(tone_means(dy).astype(np.float32), (h, w))
        y = np.clip(ycc[..., 0] + wt * low / np.float32(255.0), 0.0, 1.0)
        return ycbcr_to_rgb_u8(np.ascontiguousarray(y), np.ascontiguousarray(ycc[..., 1]), np.ascontiguousarray(ycc[..., 2]))
    rows, cols = tone_grid(h, w)
    parts: list[np.ndarray] = []  # per row tile: its cell sums (tone_means, without the whole plane in memory)

    def sums(s: int, e: int) -> None:
        dy = content[s:e].astype(np.float32) @ y255
        dy -= stylized[s:e].astype(np.float32) @ y255
        parts.append(_cell_sums(dy, rows, cols, s))  # list.append is atomic: tiles may run on threads

    run_tiles(h, w, sums, workers)
    low = Upsampled((np.sum(parts, axis=0) / np.outer(np.diff(rows), np.diff(cols))).astype(np.float32), (h, w))
    out = np.empty(content.shape, np.uint8)

    def work(s: int, e: int) -> None:
        st = stylized[s:e].astype(np.float32)
        y = st @ y255
        y += wt * low.tile(s, e)
        np.clip(y, 0.0, 255.0, out=y)
        ycbcr_tile_to_rgb(y, st @ m[1], st @ m[2], out[s:e])

    run_tiles(h, w, work, workers)
    return out


def fuse_luminance(content: np.ndarray, stylized: np.ndarray, weight: float, workers: int | None = None) -> np.ndarray:
    """The stylized image's colour (Cb, Cr) on the content's luminance; ``weight`` scales the colour.

    Cb, Cr are linear in RGB, so the blended chroma is the chroma of the weighted RGB mix.

    Args:
        content: uint8 HxWx3, whose luminance the result has.
        stylized: uint8 HxWx3 of the same size, whose colour it takes.
        weight: the stylized colour's share, in [0, 1] (0: the content's own colour).
        workers: threads (None: :func:`sdk.tiling.default_workers`).

    Returns:
        uint8 HxWx3.
    """
    m = _RGB2YCC_U8
    if not fast_path_enabled():
        ycc = content.astype(np.float32) @ m.T  # HxWx3: Y, Cb, Cr of the content
        cbcr_s = stylized.astype(np.float32) @ m[1:].T
        cbcr = ycc[..., 1:] + np.float32(weight) * (cbcr_s - ycc[..., 1:])
        return ycbcr_to_rgb_u8(np.ascontiguousarray(ycc[..., 0]), np.ascontiguousarray(cbcr[..., 0]), np.ascontiguousarray(cbcr[..., 1]))
    w = np.float32(weight)
    out = np.empty(content.shape, np.uint8)

    def work(s: int, e: int) -> None:
        c, mix = _mix_rows(content, stylized, w, s, e)
        y255 = c @ (m[0] * np.float32(255.0))
        cb = mix @ m[1]
        cr = mix @ m[2]
        np.clip(y255, 0.0, 255.0, out=y255)
        ycbcr_tile_to_rgb(y255, cb, cr, out[s:e])

    run_tiles(content.shape[0], content.shape[1], work, workers)
    return out


# ------------------------------------------------------------------------------------------ API
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
        return fuse_laplacian(content, stylized, params.detail, params.detail_levels, params.levels, workers)
    if params.method == "weighted":
        return fuse_weighted(content, stylized, params.weight, workers)
    if params.method == "tone":
        return fuse_tone(content, stylized, params.weight, workers)
    if params.method == "colour":  # the mirror of luminance: the stylized luminance, the content's colour
        return fuse_luminance(stylized, content, params.weight, workers)
    return fuse_luminance(content, stylized, params.weight, workers)


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
    """Blend a stylized image with its original (see :class:`FuseParams` for the methods); the
    options are checked once, before either image is decoded.

    Args:
        content: the original image; the result has its size and type (and its alpha).
        stylized: the stylized image; resized to the content's size if it differs.
        method, detail, detail_levels, levels, weight: see :class:`FuseParams`.
        workers: threads for the full-resolution steps (None: one per core, at most 8);
            :meth:`sdk.Pipeline.fuse` passes the pipeline's ``threads``.
        max_pixels: refuse larger inputs (see :func:`sdk.images.decode`); None for no limit.

    Returns:
        The fused image in the content's type. Memory: the inputs, the output and a bounded
        working set (row tiles; see :func:`fuse_laplacian`).

    Raises:
        InvalidArgumentError: unknown method or parameter out of range, bad ``workers``.
        InvalidImageError, ImageFormatError: an input cannot be read.

    Example:
        >>> out = fuse(photo, sdk.stylize(photo, "pointillism"), method="laplacian", detail=1.0)
    """
    params = FuseParams(method, detail, detail_levels, levels, weight)
    workers = check_threads(workers, "workers")
    c = decode(content, "content", max_pixels)
    s = decode(stylized, "stylized", max_pixels)
    return encode(fuse_rgb(c.rgb_or_gray(), s.rgb_or_gray(), params, workers), c)
