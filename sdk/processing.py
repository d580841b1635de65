"""Pre- and post-processing around the generator, and image fusion.

Full resolution at bounded cost: the generator always runs at the working resolution (long side
``work_size``, sides multiples of the manifest's ``size_multiple``); only cheap, linear steps touch full-resolution pixels:

- colorize: the predicted chroma (Cb, Cr) is upsampled bilinearly and put on the input's own
  full-resolution luminance with one 3x3 matrix (YCbCr -> RGB), so edges stay as sharp as the
  input however large it is;
- stylize: the stylized RGB is upsampled to the input's size; :func:`fuse` can then restore the
  original's fine detail with a Laplacian pyramid.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import reprlib
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from sdk import contract
from sdk.errors import InvalidArgumentError

_YCC2RGB = np.asarray(contract.YCBCR_TO_RGB, np.float32)


def work_shape(height: int, width: int, work_size: int, multiple: int) -> tuple[int, int]:
    """(h, w) the generator runs at: long side ``work_size``, aspect kept, multiples of ``multiple``.

    Example:
        >>> work_shape(3072, 4096, 256, 16)
        (192, 256)
    """
    scale = work_size / max(height, width)

    def snap(v: int) -> int:
        return max(multiple, int(math.floor(v * scale / multiple + 0.5)) * multiple)

    return snap(height), snap(width)


def resize_luma(luma: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW uint8 luminance -> float32 [shape] in [0, 1], antialiased (Pillow bilinear with reducing gap)."""
    h, w = shape
    if luma.shape == (h, w):
        small = luma
    else:
        small = np.asarray(Image.fromarray(luma, "L").resize((w, h), Image.BILINEAR, reducing_gap=2.0))
    return small.astype(np.float32) * np.float32(1.0 / 255.0)


def resize_plane(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one float32 plane to ``shape`` (h, w)."""
    h, w = shape
    if plane.shape == (h, w):
        return plane
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, np.float32), "F").resize((w, h), Image.BILINEAR))


def ycbcr_to_rgb_u8(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Full-range YCbCr planes (Y in [0,1], Cb/Cr in [-0.5,0.5], float32 HxW) -> HxWx3 uint8.

    The reference implementation (whole planes, one thread); the SDK's hot path is
    :func:`colour_onto_luma` / :func:`ycbcr_small_to_rgb`, which compute the same thing in tiles.

    Out-of-gamut colour is pulled toward grey per pixel instead of clipping each channel, so the
    luminance stays exactly Y: with ``d_c = M[c,1] Cb + M[c,2] Cr`` (which carry no luminance,
    hence ``max d >= 0 >= min d``), the chroma is scaled by
    ``t = min(1, (1 - Y) / max d, Y / -min d)``.
    """
    m = _YCC2RGB
    # Chroma's share of R, G, B. BT.601's inverse has no Cb in R and no Cr in B: skip those
    # two full-resolution multiplies by zero.
    d = [cr * m[0, 2], cb * m[1, 1] + cr * m[1, 2], cb * m[2, 1]]
    hi = np.maximum(np.maximum(d[0], d[1]), d[2])
    lo = np.minimum(np.minimum(d[0], d[1]), d[2])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.minimum((np.float32(1.0) - y) / hi, y / -lo)
    np.nan_to_num(t, copy=False, nan=1.0, posinf=1.0)
    np.clip(t, 0.0, 1.0, out=t)
    t *= np.float32(255.0)
    y255 = y * np.float32(255.0) + np.float32(0.5)
    out = np.empty(y.shape + (3,), np.uint8)
    tmp = np.empty_like(y255)
    for c in range(3):
        np.multiply(d[c], t, out=tmp)
        tmp += y255
        np.clip(tmp, 0.0, 255.0, out=tmp)
        out[:, :, c] = tmp
    return out


# ------------------------------------------------------------------------- tiled full-resolution path
# Everything that touches full-resolution pixels runs in row tiles of ~TILE_PIXELS, small enough
# for the working set (a dozen float32 tiles) to stay in L2, spread over a thread pool (numpy
# releases the GIL). Chroma is upsampled separably: once along x at the small height, then per
# tile along y, so no full-resolution float plane is ever allocated. At 4096x3072 this is
# ~4x faster than Pillow resize + whole-plane numpy, and peak memory is the output array.
TILE_PIXELS = 96 * 1024
FAST_PATH_ENV = "CHROMAFORGE_FAST_PATH"
"""Set to ``0`` to use the whole-plane single-thread reference path (the benchmark gate's test does)."""


def fast_path_enabled() -> bool:
    """False when ``CHROMAFORGE_FAST_PATH=0``: post-processing then uses the reference path."""
    return os.environ.get(FAST_PATH_ENV, "1") != "0"


@functools.lru_cache(maxsize=8)
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    # Keyed by process id: a forked child (multiprocessing, gunicorn) inherits the executor but
    # not its threads, and would wait forever on it; the child gets its own pool instead.
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chromaforge-post")


def default_workers() -> int:
    """Threads for full-resolution post-processing when the caller gives none: cores, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def max_threads() -> int:
    """The most threads a caller gets: twice the cores this process may use, at least 8. More only
    adds OS threads (``threads=10**6`` would exhaust memory), never speed."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(8, 2 * cores)


def check_threads(threads: int | None, name: str = "threads") -> int | None:
    """A thread count checked: None (the default) or a positive integer, capped at :func:`max_threads`.

    Args:
        threads: the caller's value.
        name: the argument's name in messages.

    Returns:
        None, or the count to use (a larger one is capped, with a RuntimeWarning).

    Raises:
        InvalidArgumentError: not None and not an integer >= 1 (``-1``, ``0``, ``"abc"``, ``2.5``).

    Example:
        >>> check_threads(2)
        2
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise InvalidArgumentError(f"{name} is {reprlib.repr(threads)}; expected an integer >= 1, or None for the default (one per core)")
    cap = max_threads()
    if threads > cap:
        warnings.warn(f"{name}={reprlib.repr(threads)} is more than this machine can use; using {cap}", RuntimeWarning, stacklevel=3)
        return cap
    return int(threads)


def _tiles(height: int, width: int, work, workers: int | None, min_rows: int = 1) -> None:
    """Call ``work(start_row, end_row)`` over row tiles (~TILE_PIXELS, at least ``min_rows`` rows), on ``workers`` threads."""
    rows = max(min_rows, TILE_PIXELS // max(1, width))
    spans = [(s, min(s + rows, height)) for s in range(0, height, rows)]
    n = workers or default_workers()
    if n == 1 or len(spans) == 1:
        for s, e in spans:
            work(s, e)
        return
    for _ in _pool(n, os.getpid()).map(lambda se: work(*se), spans):  # re-raises a worker's exception
        pass


class _Axis:
    """Bilinear (half-pixel centres, edge-clamped) sample positions of ``n_out`` points over ``n_in``."""

    def __init__(self, n_out: int, n_in: int) -> None:
        self.identity = n_out == n_in
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        self.i0 = np.floor(src).astype(np.intp)
        self.i1 = np.minimum(self.i0 + 1, n_in - 1)
        self.f = (src - self.i0).astype(np.float32)


class _Upsampled:
    """A small float32 plane, upsampled along x up front and along y one tile at a time."""

    def __init__(self, plane: np.ndarray, shape: tuple[int, int]) -> None:
        h = plane.shape[0]
        if h > shape[0]:
            h = shape[0]  # shrinking (an input smaller than the working size): Pillow antialiases
        self.rows = resize_plane(plane, (h, shape[1]))  # along x only: [h, W], small
        self.y = _Axis(shape[0], h)

    def tile(self, s: int, e: int) -> np.ndarray:
        """Rows [s, e) at full resolution: a fresh, writable float32 array."""
        if self.y.identity:
            return self.rows[s:e].copy()
        a = self.rows[self.y.i0[s:e]]
        b = self.rows[self.y.i1[s:e]]
        b -= a
        b *= self.y.f[s:e, None]
        b += a
        return b


_EPS = np.float32(1e-4)
_YCC2RGB_255 = _YCC2RGB * np.float32(255.0)  # chroma's share of R, G, B on the 0..255 scale


def _ycc_tile(y255: np.ndarray, cb: np.ndarray, cr: np.ndarray, out: np.ndarray) -> None:
    """The gamut-preserving YCbCr -> RGB of :func:`ycbcr_to_rgb_u8` on one tile, in place.

    ``y255`` in [0, 255] (float32), ``cb``/``cr`` in [-0.5, 0.5]; all three are overwritten.
    With Y in range, ``t`` lies in [0, 1] and every channel in [0, 255] up to rounding, so no
    clip is needed; the denominators are floored at a tiny epsilon instead of patching NaNs.
    """
    m = _YCC2RGB_255
    dr = cr * m[0, 2]
    db = cb * m[2, 1]
    cb *= m[1, 1]
    cr *= m[1, 2]
    dg = cb
    dg += cr
    hi = np.maximum(dr, dg, out=cr)
    np.maximum(hi, db, out=hi)
    np.maximum(hi, _EPS, out=hi)
    lo = np.minimum(dr, dg)
    np.minimum(lo, db, out=lo)
    np.negative(lo, out=lo)
    np.maximum(lo, _EPS, out=lo)
    t = np.float32(255.0) - y255
    t /= hi
    np.divide(y255, lo, out=lo)
    np.minimum(t, lo, out=t)
    np.minimum(t, np.float32(1.0), out=t)
    y255 += np.float32(0.5)
    for c, d in enumerate((dr, dg, db)):
        d *= t
        d += y255
        out[:, :, c] = d  # in [0, 256): the cast truncates, i.e. rounds the un-shifted value


def colour_onto_luma(luma_u8: np.ndarray, cbcr_small: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Put low-resolution chroma [2,h,w] onto full-resolution luminance HxW uint8 -> HxWx3 uint8.

    Args:
        luma_u8: the input's own luminance, full resolution.
        cbcr_small: predicted Cb, Cr at the working resolution.
        workers: threads (None: :func:`default_workers`).

    Example:
        >>> colour_onto_luma(np.full((4, 6), 128, np.uint8), np.zeros((2, 2, 3), np.float32)).shape
        (4, 6, 3)
    """
    shape = luma_u8.shape
    if not fast_path_enabled():
        cb = resize_plane(cbcr_small[0], shape)
        cr = resize_plane(cbcr_small[1], shape)
        return ycbcr_to_rgb_u8(luma_u8.astype(np.float32) * np.float32(1.0 / 255.0), cb, cr)
    cb, cr = (_Upsampled(np.asarray(p, np.float32), shape) for p in cbcr_small[:2])
    out = np.empty(shape + (3,), np.uint8)

    def work(s: int, e: int) -> None:
        _ycc_tile(luma_u8[s:e].astype(np.float32), cb.tile(s, e), cr.tile(s, e), out[s:e])

    _tiles(shape[0], shape[1], work, workers)
    return out


def ycbcr_small_to_rgb(ycbcr_small: np.ndarray, shape: tuple[int, int], workers: int | None = None) -> np.ndarray:
    """Generator output [3,h,w] -> RGB uint8 at ``shape`` (h, w), upsampled bilinearly."""
    if not fast_path_enabled():
        y, cb, cr = (resize_plane(ycbcr_small[i], shape) for i in range(3))
        return ycbcr_to_rgb_u8(y, cb, cr)
    y, cb, cr = (_Upsampled(np.asarray(p, np.float32), shape) for p in ycbcr_small[:3])
    out = np.empty(tuple(shape) + (3,), np.uint8)

    def work(s: int, e: int) -> None:
        y255 = y.tile(s, e)
        y255 *= np.float32(255.0)
        np.clip(y255, 0.0, 255.0, out=y255)  # the generator's Y may overshoot [0, 1] slightly
        _ycc_tile(y255, cb.tile(s, e), cr.tile(s, e), out[s:e])

    _tiles(shape[0], shape[1], work, workers)
    return out


# ------------------------------------------------------------------------------------------ fusion
def _half(shape: tuple[int, ...]) -> tuple[int, int]:
    """The next pyramid level's (h, w): halved, rounded up."""
    return (shape[0] + 1) // 2, (shape[1] + 1) // 2


def _down(img: np.ndarray) -> np.ndarray:
    """Halve an HxWxC float32 image (Pillow bilinear, antialiased)."""
    return np.stack([resize_plane(img[:, :, c], _half(img.shape)) for c in range(img.shape[2])], axis=2)


def _up(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.stack([resize_plane(img[:, :, c], shape) for c in range(img.shape[2])], axis=2)


def laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels (finest first) followed by the low-pass residual; ``sum`` reconstructs exactly."""
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
    cur = pyr[-1]
    for band in reversed(pyr[:-1]):
        cur = band + _up(cur, band.shape[:2])
    return cur


class _Resample:
    """Pillow's bilinear resampling along one axis, ``n_in`` -> ``n_out`` samples (triangle filter
    widened by the scale when shrinking, half-pixel centres, weights renormalised at the edges:
    Pillow's ``precompute_coeffs``), applied to any run of rows with global row indices, so a tiled
    result does not depend on the tiling."""

    def __init__(self, n_in: int, n_out: int) -> None:
        scale = n_in / n_out
        fscale = max(scale, 1.0)
        centre = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
        self.lo = np.maximum((centre - fscale + 0.5).astype(np.intp), 0)  # C's (int) truncation, as Pillow
        self.hi = np.minimum((centre + fscale + 0.5).astype(np.intp), n_in)
        taps = int((self.hi - self.lo).max())
        src = self.lo[:, None] + np.arange(taps)
        w = np.clip(1.0 - np.abs((src - centre[:, None] + 0.5) / fscale), 0.0, None)
        w[src >= self.hi[:, None]] = 0.0
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
        self.src = np.minimum(src, n_in - 1)
        self.w = w.astype(np.float32)

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Input rows [lo, hi) that output rows [a, b) read."""
        return int(self.lo[a]), int(self.hi[b - 1])

    def rows(self, src: np.ndarray, first: int, a: int, b: int) -> np.ndarray:
        """Output rows [a, b) from ``src`` = input rows [first, first + len(src))."""
        out = np.zeros((b - a,) + src.shape[1:], np.float32)
        for t in range(self.w.shape[1]):
            out += src[self.src[a:b, t] - first] * self.w[a:b, t, None]
        return out


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
    bilinear resize (horizontal: Pillow itself; vertical: :class:`_Resample`), on global row
    indices, so the result is the same for any tile size or thread count.
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
    down = [None] + [_Resample(shapes[i - 1][0], shapes[i][0]) for i in range(1, k + 1)]
    up = [_Resample(shapes[i + 1][0], shapes[i][0]) for i in range(k)]

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

    _tiles(h, w, work, workers, min_rows=32 << k)
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
    """``weight * stylized + (1 - weight) * content``, per pixel (rounded; no clip needed for weight in [0, 1])."""
    w = np.float32(weight)
    if not fast_path_enabled():
        mix = content.astype(np.float32) + w * (stylized.astype(np.float32) - content)
        return np.clip(mix + 0.5, 0, 255).astype(np.uint8)
    out = np.empty(content.shape, np.uint8)

    def work(s: int, e: int) -> None:
        _, mix = _mix_rows(content, stylized, w, s, e)
        mix += np.float32(0.5)
        out[s:e] = mix

    _tiles(content.shape[0], content.shape[1], work, workers)
    return out


TONE_SIDE = 16
"""Cells along the longer side of the grid on which ``tone`` fusion takes the content's luminance:
the image's tonal layout (a dark sky, a bright window) at the same scale at every resolution."""


def tone_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column cell boundaries of the ``tone`` grid: ``n + 1`` edges per axis, cells of
    (near) equal size, :data:`TONE_SIDE` along the longer side (at most one cell per pixel)."""
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
    """Means of an HxW plane over the cells of :func:`tone_grid` (its tonal layout), float64
    [cells_y, cells_x].

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
    ``Y_s + weight * L(dY)`` (gamut-preserving conversion, as :func:`ycbcr_to_rgb_u8`). Strokes and
    colours stay the style's; where the photo is dark (a night sky) the painting is dark too.
    Memory: the output and row tiles (two passes over the inputs: cell sums, then the result).
    """
    m = np.asarray(contract.RGB_TO_YCBCR, np.float32) / np.float32(255.0)
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

    _tiles(h, w, sums, workers)
    low = _Upsampled((np.sum(parts, axis=0) / np.outer(np.diff(rows), np.diff(cols))).astype(np.float32), (h, w))
    out = np.empty(content.shape, np.uint8)

    def work(s: int, e: int) -> None:
        st = stylized[s:e].astype(np.float32)
        y = st @ y255
        y += wt * low.tile(s, e)
        np.clip(y, 0.0, 255.0, out=y)
        _ycc_tile(y, st @ m[1], st @ m[2], out[s:e])

    _tiles(h, w, work, workers)
    return out


def fuse_luminance(content: np.ndarray, stylized: np.ndarray, weight: float, workers: int | None = None) -> np.ndarray:
    """The stylized image's colour (Cb, Cr) on the content's luminance; ``weight`` scales the colour.

    Cb, Cr are linear in RGB, so the blended chroma is the chroma of the weighted RGB mix.
    """
    m = np.asarray(contract.RGB_TO_YCBCR, np.float32) / np.float32(255.0)
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
        _ycc_tile(y255, cb, cr, out[s:e])

    _tiles(content.shape[0], content.shape[1], work, workers)
    return out
