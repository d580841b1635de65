"""Resizing: the generator's working shape, the luminance brought to it, and bilinear resampling of
float planes (whole, or one row tile at a time for the tiled full-resolution steps).

The generator always runs at the working resolution (long side ``work_size``, sides multiples of
the manifest's ``size_multiple``); only cheap, linear steps touch full-resolution pixels. Upsampling
is separable: along x once at the small height, then along y per row tile (:class:`Upsampled`), so
no full-resolution float plane is ever allocated.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def work_shape(height: int, width: int, work_size: int, multiple: int) -> tuple[int, int]:
    """(h, w) the generator runs at: long side ``work_size``, aspect kept, multiples of ``multiple``.

    Args:
        height, width: the input's size.
        work_size: the long side to aim for.
        multiple: every side is a multiple of this (at least one multiple).

    Returns:
        The working shape (h, w).

    Example:
        >>> work_shape(3072, 4096, 256, 16)
        (192, 256)
    """
    scale = work_size / max(height, width)

    def snap(v: int) -> int:
        return max(multiple, int(math.floor(v * scale / multiple + 0.5)) * multiple)

    return snap(height), snap(width)


def resize_luma(luma: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxW uint8 luminance -> float32 at ``shape`` (h, w) in [0, 1], antialiased (Pillow bilinear
    with reducing gap): the generator's input, in the SDK and in training.

    Args:
        luma: uint8 HxW.
        shape: (h, w) wanted.

    Returns:
        float32 [h, w] in [0, 1].
    """
    h, w = shape
    if luma.shape == (h, w):
        small = luma
    else:
        small = np.asarray(Image.fromarray(luma, "L").resize((w, h), Image.BILINEAR, reducing_gap=2.0))
    return small.astype(np.float32) * np.float32(1.0 / 255.0)


def resize_plane(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (Pillow's) of one float32 plane.

    Args:
        plane: float32 HxW.
        shape: (h, w) wanted.

    Returns:
        float32 [h, w]; ``plane`` itself when it has that shape already.
    """
    h, w = shape
    if plane.shape == (h, w):
        return plane
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, np.float32), "F").resize((w, h), Image.BILINEAR))


class _Axis:
    """Bilinear (half-pixel centres, edge-clamped) sample positions of ``n_out`` points over ``n_in``."""

    def __init__(self, n_out: int, n_in: int) -> None:
        self.identity = n_out == n_in
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        self.i0 = np.floor(src).astype(np.intp)
        self.i1 = np.minimum(self.i0 + 1, n_in - 1)
        self.f = (src - self.i0).astype(np.float32)


class Upsampled:
    """A small float32 plane, upsampled bilinearly along x up front and along y one row tile at a time.

    Args:
        plane: float32 [h, w], small (the working resolution).
        shape: the full (H, W) it is upsampled to.
    """

    def __init__(self, plane: np.ndarray, shape: tuple[int, int]) -> None:
        h = plane.shape[0]
        if h > shape[0]:
            h = shape[0]  # shrinking (an input smaller than the working size): Pillow antialiases
        self.rows = resize_plane(plane, (h, shape[1]))  # along x only: [h, W], small
        self.y = _Axis(shape[0], h)

    def tile(self, s: int, e: int) -> np.ndarray:
        """Rows [s, e) at full resolution.

        Returns:
            A fresh, writable float32 array [e - s, W].
        """
        if self.y.identity:
            return self.rows[s:e].copy()
        a = self.rows[self.y.i0[s:e]]
        b = self.rows[self.y.i1[s:e]]
        b -= a
        b *= self.y.f[s:e, None]
        b += a
        return b


class RowResampler:
    """Pillow's bilinear resampling along the rows (axis 0), ``n_in`` -> ``n_out`` rows (triangle
    filter widened by the scale when shrinking, half-pixel centres, weights renormalised at the
    edges: Pillow's ``precompute_coeffs``), applied to any run of rows with global row indices, so
    a tiled result does not depend on the tiling.

    Args:
        n_in, n_out: rows before and after.
    """

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
        """Output rows [a, b) from ``src`` = input rows [first, first + len(src)).

        Returns:
            float32 [b - a, ...] (``src``'s trailing shape).
        """
        out = np.zeros((b - a,) + src.shape[1:], np.float32)
        for t in range(self.w.shape[1]):
            out += src[self.src[a:b, t] - first] * self.w[a:b, t, None]
        return out
