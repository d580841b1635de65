"""Colour-space conversion: the generator's full-range YCbCr (:mod:`sdk.contract`) to RGB uint8 at
the input's full resolution.

- colorize (:func:`colour_onto_luma`): the predicted chroma (Cb, Cr) is upsampled bilinearly and
  put on the input's own full-resolution luminance with one 3x3 matrix (YCbCr -> RGB), so edges
  stay as sharp as the input however large it is;
- stylize (:func:`ycbcr_small_to_rgb`): the whole YCbCr output is upsampled to the input's size.

Both run in row tiles on a thread pool (:mod:`sdk.tiling`); :func:`ycbcr_to_rgb_u8` is the
whole-plane reference they match.
"""

from __future__ import annotations

import numpy as np

from sdk import contract
from sdk.resample import Upsampled, resize_plane
from sdk.tiling import fast_path_enabled, run_tiles

_YCC2RGB = np.asarray(contract.YCBCR_TO_RGB, np.float32)
_YCC2RGB_255 = _YCC2RGB * np.float32(255.0)  # chroma's share of R, G, B on the 0..255 scale
_EPS = np.float32(1e-4)


def ycbcr_to_rgb_u8(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Full-range YCbCr planes (Y in [0,1], Cb/Cr in [-0.5,0.5], float32 HxW) -> HxWx3 uint8.

    The reference implementation (whole planes, one thread); the SDK's hot path is
    :func:`colour_onto_luma` / :func:`ycbcr_small_to_rgb`, which compute the same thing in tiles.

    Out-of-gamut colour is pulled toward grey per pixel instead of clipping each channel, so the
    luminance stays exactly Y: with ``d_c = M[c,1] Cb + M[c,2] Cr`` (which carry no luminance,
    hence ``max d >= 0 >= min d``), the chroma is scaled by
    ``t = min(1, (1 - Y) / max d, Y / -min d)``.

    Args:
        y, cb, cr: float32 HxW planes.

    Returns:
        uint8 HxWx3 RGB.
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


def ycbcr_tile_to_rgb(y255: np.ndarray, cb: np.ndarray, cr: np.ndarray, out: np.ndarray) -> None:
    """The gamut-preserving YCbCr -> RGB of :func:`ycbcr_to_rgb_u8` on one tile, in place.

    With Y in range, ``t`` lies in [0, 1] and every channel in [0, 255] up to rounding, so no
    clip is needed; the denominators are floored at a tiny epsilon instead of patching NaNs.

    Args:
        y255: luminance in [0, 255], float32 [h, w].
        cb, cr: chroma in [-0.5, 0.5], float32 [h, w]. All three inputs are overwritten.
        out: uint8 [h, w, 3], written.
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
        workers: threads (None: :func:`sdk.tiling.default_workers`).

    Returns:
        uint8 HxWx3 RGB whose luminance is the input's.

    Example:
        >>> colour_onto_luma(np.full((4, 6), 128, np.uint8), np.zeros((2, 2, 3), np.float32)).shape
        (4, 6, 3)
    """
    shape = luma_u8.shape
    if not fast_path_enabled():
        cb = resize_plane(cbcr_small[0], shape)
        cr = resize_plane(cbcr_small[1], shape)
        return ycbcr_to_rgb_u8(luma_u8.astype(np.float32) * np.float32(1.0 / 255.0), cb, cr)
    cb, cr = (Upsampled(np.asarray(p, np.float32), shape) for p in cbcr_small[:2])
    out = np.empty(shape + (3,), np.uint8)

    def work(s: int, e: int) -> None:
        ycbcr_tile_to_rgb(luma_u8[s:e].astype(np.float32), cb.tile(s, e), cr.tile(s, e), out[s:e])

    run_tiles(shape[0], shape[1], work, workers)
    return out


def ycbcr_small_to_rgb(ycbcr_small: np.ndarray, shape: tuple[int, int], workers: int | None = None) -> np.ndarray:
    """Generator output [3,h,w] -> RGB uint8 at ``shape`` (h, w), upsampled bilinearly.

    Args:
        ycbcr_small: float32 Y, Cb, Cr at the working resolution.
        shape: the full (H, W).
        workers: threads (None: :func:`sdk.tiling.default_workers`).

    Returns:
        uint8 HxWx3 RGB.
    """
    if not fast_path_enabled():
        y, cb, cr = (resize_plane(ycbcr_small[i], shape) for i in range(3))
        return ycbcr_to_rgb_u8(y, cb, cr)
    y, cb, cr = (Upsampled(np.asarray(p, np.float32), shape) for p in ycbcr_small[:3])
    out = np.empty(tuple(shape) + (3,), np.uint8)

    def work(s: int, e: int) -> None:
        y255 = y.tile(s, e)
        y255 *= np.float32(255.0)
        np.clip(y255, 0.0, 255.0, out=y255)  # the generator's Y may overshoot [0, 1] slightly
        ycbcr_tile_to_rgb(y255, cb.tile(s, e), cr.tile(s, e), out[s:e])

    run_tiles(shape[0], shape[1], work, workers)
    return out
