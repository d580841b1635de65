"""Pre- and post-processing around the generator, and image fusion.

Full resolution at bounded cost: the generator always runs at the working resolution (long side
``work_size``, sides multiples of 16); only cheap, linear steps touch full-resolution pixels:

- colorize: the predicted chroma (Cb, Cr) is upsampled bilinearly and put on the input's own
  full-resolution luminance with one 3x3 matrix (YCbCr -> RGB), so edges stay as sharp as the
  input however large it is;
- stylize: the stylized RGB is upsampled to the input's size; :func:`fuse` can then restore the
  original's fine detail with a Laplacian pyramid.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from sdk import contract

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


def colour_onto_luma(luma_u8: np.ndarray, cbcr_small: np.ndarray) -> np.ndarray:
    """Put low-resolution chroma [2,h,w] onto full-resolution luminance HxW uint8 -> HxWx3 uint8."""
    shape = luma_u8.shape
    cb = resize_plane(cbcr_small[0], shape)
    cr = resize_plane(cbcr_small[1], shape)
    y = luma_u8.astype(np.float32) * np.float32(1.0 / 255.0)
    return ycbcr_to_rgb_u8(y, cb, cr)


def ycbcr_small_to_rgb(ycbcr_small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Generator output [3,h,w] -> RGB uint8 at ``shape`` (h, w), upsampled bilinearly."""
    y, cb, cr = (resize_plane(ycbcr_small[i], shape) for i in range(3))
    return ycbcr_to_rgb_u8(y, cb, cr)


# ------------------------------------------------------------------------------------------ fusion
def _down(img: np.ndarray) -> np.ndarray:
    """Halve an HxWxC float32 image (Pillow bilinear, antialiased)."""
    h, w = img.shape[:2]
    return np.stack([resize_plane(img[:, :, c], ((h + 1) // 2, (w + 1) // 2)) for c in range(img.shape[2])], axis=2)


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


def fuse_laplacian(content: np.ndarray, stylized: np.ndarray, detail: float, detail_levels: int, levels: int) -> np.ndarray:
    """Detail-preserving fusion of two HxWx3 uint8 images of equal size.

    The result takes the stylized image's coarse bands and low-pass residual, and for the
    ``detail_levels`` finest bands a mix ``(1 - detail) * stylized + detail * content``. With
    ``detail=1`` those bands equal the content's exactly, so its edges and texture return.
    """
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


def fuse_weighted(content: np.ndarray, stylized: np.ndarray, weight: float) -> np.ndarray:
    """``weight * stylized + (1 - weight) * content``, per pixel."""
    out = content.astype(np.float32) + np.float32(weight) * (stylized.astype(np.float32) - content)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fuse_luminance(content: np.ndarray, stylized: np.ndarray, weight: float) -> np.ndarray:
    """The stylized image's colour (Cb, Cr) on the content's luminance; ``weight`` scales the colour."""
    m = np.asarray(contract.RGB_TO_YCBCR, np.float32) / np.float32(255.0)
    ycc = content.astype(np.float32) @ m.T  # HxWx3: Y, Cb, Cr of the content
    cbcr_s = stylized.astype(np.float32) @ m[1:].T
    cbcr = ycc[..., 1:] + np.float32(weight) * (cbcr_s - ycc[..., 1:])
    return ycbcr_to_rgb_u8(np.ascontiguousarray(ycc[..., 0]), np.ascontiguousarray(cbcr[..., 0]), np.ascontiguousarray(cbcr[..., 1]))
