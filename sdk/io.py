"""Decoding inputs and encoding outputs.

Accepted inputs: PIL images of any mode, numpy arrays (HxW, HxWx1, HxWx3, HxWx4; uint8, or
float in [0, 1]), file paths (``str`` or ``os.PathLike``) and encoded bytes. The result of a call
comes back as the input's type: PIL in -> PIL out, array in -> array out (uint8 stays uint8, float
comes back float32 in [0, 1]), path in -> PIL out, bytes in -> PNG bytes out. EXIF orientation is
applied; an alpha channel is carried through unchanged.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sdk.errors import ImageFormatError, InvalidImageError

ImageInput = Union[Image.Image, np.ndarray, str, "os.PathLike[str]", bytes, bytearray, memoryview]
"""Anything the SDK accepts as an image."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
"""File suffixes (lower case) treated as images when a folder is read: by the CLI and
:mod:`sdk.folder`, the trainer's image folders and the export's parity images."""


@dataclass
class Decoded:
    """An input brought to the SDK's working form.

    Attributes:
        rgb: HxWx3 uint8, or None for a grey input.
        alpha: HxW uint8 alpha channel, or None.
        kind: "pil", "array", "path" or "bytes": how to return the result.
        float_out: return a float32 array in [0, 1] instead of uint8 (float array inputs).
        gray: HxW uint8 for a grey input, None for a colour one.
    """

    rgb: np.ndarray | None
    alpha: np.ndarray | None
    kind: str
    float_out: bool = False
    gray: np.ndarray | None = None

    @cached_property
    def luma(self) -> np.ndarray:
        """HxW uint8 luminance (BT.601, as PIL's ``convert("L")``), computed on first use only:
        fusion never needs it, and at 12 MP it is a full-resolution pass."""
        if self.gray is not None:
            return self.gray
        return np.asarray(Image.fromarray(self.rgb, "RGB").convert("L"))

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        arr = self.gray if self.gray is not None else self.rgb
        return arr.shape[0], arr.shape[1]

    def rgb_or_gray(self) -> np.ndarray:
        """HxWx3 uint8, replicating the luminance for a grey input."""
        if self.rgb is not None:
            return self.rgb
        return np.repeat(self.gray[:, :, None], 3, axis=2)


def decode(image: ImageInput, name: str = "image") -> Decoded:
    """Bring any accepted input to a :class:`Decoded`.

    Args:
        image: the input (see module docstring).
        name: what to call it in error messages.

    Raises:
        InvalidImageError: the path is missing or not an image, the bytes are not an image, or
            the type is not one the SDK accepts.
        ImageFormatError: an array has the wrong shape, dtype or range.
    """
    if isinstance(image, Image.Image):
        return _from_pil(image, "pil", name)
    if isinstance(image, np.ndarray):
        return _from_array(image, name)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise InvalidImageError(f"{name}: got empty bytes; expected an encoded image (PNG, JPEG, ...)")
        return _from_pil(_open(io.BytesIO(data), f"{name} (bytes)"), "bytes", name)
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise InvalidImageError(f"{name}: no file at {str(path)!r}; pass an existing image path, a PIL image, an array or bytes")
        return _from_pil(_open(path, str(path)), "path", name)
    raise InvalidImageError(
        f"{name}: got {type(image).__name__}; expected a PIL.Image, a numpy array, a file path or encoded bytes"
    )


def _open(src: object, label: str) -> Image.Image:
    try:
        im = Image.open(src)  # type: ignore[arg-type]
        im.load()
        return im
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidImageError(f"{label} is not a readable image ({e}); expected PNG, JPEG, WebP, TIFF, BMP or another format Pillow reads") from e


def _from_pil(im: Image.Image, kind: str, name: str) -> Decoded:
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block should not make a readable image unreadable
        pass
    mode = im.mode
    alpha = None
    if mode in ("La", "RGBa"):  # premultiplied alpha (channel "a"): un-premultiply to LA / RGBA first
        im = im.convert("LA" if mode == "La" else "RGBA")
        mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        alpha = np.asarray(im.getchannel("A"))
        im = im.convert("RGB" if mode in ("RGBA", "RGBa", "PA") else "L")
        mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        arr = np.asarray(im)
        return _from_array(arr, name, kind=kind)
    elif mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...
    if im.mode == "L":
        return Decoded(None, alpha, kind, gray=np.asarray(im))
    return Decoded(np.asarray(im), alpha, kind)


def _from_array(arr: np.ndarray, name: str, kind: str = "array") -> Decoded:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageFormatError(
            f"{name}: got an array of shape {arr.shape}; expected HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA). "
            "For a CHW tensor use arr.transpose(1, 2, 0)"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageFormatError(f"{name}: got an empty array of shape {arr.shape}; expected at least 1x1 pixels")
    float_out = False
    if arr.dtype == np.uint8:
        u8 = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageFormatError(f"{name}: the float array contains NaN or infinity; expected finite values in [0, 1]")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ImageFormatError(
                f"{name}: float values span [{lo:.3g}, {hi:.3g}]; expected [0, 1]. "
                "Divide 0..255 data by 255, or pass it as uint8"
            )
        u8 = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        float_out = True
    else:
        raise ImageFormatError(
            f"{name}: got dtype {arr.dtype}; expected uint8 (0..255) or float in [0, 1]. "
            "Convert with arr.astype(np.uint8) or arr / arr.max()"
        )
    u8 = np.ascontiguousarray(u8)
    alpha = None
    if u8.ndim == 3 and u8.shape[2] == 4:
        alpha = np.ascontiguousarray(u8[:, :, 3])
        u8 = np.ascontiguousarray(u8[:, :, :3])
    if u8.ndim == 2:
        return Decoded(None, alpha, kind, float_out, gray=u8)
    return Decoded(u8, alpha, kind, float_out)


def encode(rgb: np.ndarray, like: Decoded) -> Image.Image | np.ndarray | bytes:
    """Return ``rgb`` (HxWx3 uint8) in the form the input came in, with its alpha restored."""
    out = rgb
    if like.alpha is not None and like.alpha.shape == rgb.shape[:2]:
        out = np.concatenate([rgb, like.alpha[:, :, None]], axis=2)
    if like.kind == "array":
        return out.astype(np.float32) / 255.0 if like.float_out else out
    im = Image.fromarray(out, "RGBA" if out.shape[2] == 4 else "RGB")
    if like.kind == "bytes":
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()
    return im
