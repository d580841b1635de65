"""Decoding inputs and encoding outputs.

Accepted inputs: PIL images of any mode, numpy arrays (HxW, HxWx1, HxWx3, HxWx4; uint8, or
float in [0, 1]), file paths (``str`` or ``os.PathLike``) and encoded bytes. The result of a call
comes back as the input's type: PIL in -> PIL out, array in -> array out (uint8 stays uint8, float
comes back float32 in [0, 1]), path in -> PIL out, bytes in -> PNG bytes out. EXIF orientation is
applied; an alpha channel is carried through unchanged. Animated or multi-page files (GIF, APNG,
WebP, multi-page TIFF) give their **first frame**; pass a PIL image after ``im.seek(n)`` for
another (``ImageSequence.Iterator(im)`` for all of them).

Input guard: an encoded input (path, bytes) or a PIL image above ``max_pixels`` pixels
(:data:`MAX_PIXELS` by default) is refused from its header, before anything is decoded, and every
decoder failure, whatever Pillow raises, becomes :class:`~sdk.errors.InvalidImageError`. Arrays
are held to the same limit (a broadcast view can claim any size without the memory behind it).
"""

from __future__ import annotations

import io
import math
import numbers
import os
import struct
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

from sdk.errors import ChromaforgeError, ImageFormatError, ImageTooLargeError, InvalidArgumentError, InvalidImageError, shorten

ImageInput = Union[Image.Image, np.ndarray, str, "os.PathLike[str]", bytes, bytearray, memoryview]
"""Anything the SDK accepts as an image."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
"""File suffixes (lower case) of the common photo formats: the trainer's image folders and the
export's parity images read these."""

FOLDER_SUFFIXES = IMAGE_SUFFIXES | frozenset({
    ".jpe", ".jfif", ".gif", ".apng", ".avif", ".avifs", ".heic", ".heif", ".jp2", ".j2k", ".jpx",
    ".qoi", ".tga", ".pnm", ".ppm", ".pgm", ".pbm", ".psd", ".ico", ".dds", ".sgi", ".pcx",
})
"""File suffixes (lower case) the CLI and :mod:`sdk.folder` take from a folder: every raster format
a single file may have, so nothing is skipped silently (a file Pillow cannot decode here, e.g. HEIC
without a plugin, is reported as failed). Vector and document formats (EPS, PDF) are left out."""

MAX_PIXELS = 8192 * 8192
"""Default pixel limit (67.1 MP) for encoded inputs and PIL images, checked from the header before
decoding: far above any camera's photo, far below what a decompression bomb asks for. Callers
raise or lift it with ``max_pixels`` (``sdk.load(max_pixels=...)``, ``sdk.fuse(..., max_pixels=...)``,
``chromaforge --max-pixels``); ``None`` turns it off for PIL images and arrays, and for encoded
inputs leaves Pillow's own bomb limit (:func:`pillow_limit`, 179 MP), also checked from the header
and also refused with :class:`~sdk.errors.ImageTooLargeError`."""

_LUMA_TILE = 1 << 20
"""Pixels per tile of the RGB -> luminance conversion and of the 16-bit, 32-bit and float to 8-bit
conversions (bounded temporary memory)."""


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
        fusion never needs it, and at 12 MP it is a full-resolution pass. Converted in row tiles,
        so the only full-size allocation is the result."""
        if self.gray is not None:
            return self.gray
        h, w = self.rgb.shape[:2]
        out = np.empty((h, w), np.uint8)
        rows = max(1, _LUMA_TILE // w)
        for s in range(0, h, rows):
            out[s:s + rows] = np.asarray(Image.fromarray(self.rgb[s:s + rows], "RGB").convert("L"))
        return out

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        arr = self.gray if self.gray is not None else self.rgb
        return arr.shape[0], arr.shape[1]

    def rgb_or_gray(self) -> np.ndarray:
        """HxWx3 uint8; for a grey input a read-only view repeating the luminance (no copy)."""
        if self.rgb is not None:
            return self.rgb
        return np.broadcast_to(self.gray[:, :, None], self.gray.shape + (3,))


def check_max_pixels(max_pixels: int | None) -> int | None:
    """``max_pixels`` checked: None (no limit) or an integer >= 1.

    Raises:
        InvalidArgumentError: anything else.
    """
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1:
        raise InvalidArgumentError(f"max_pixels is {max_pixels!r}; expected an integer >= 1, or None for no limit (default {MAX_PIXELS})")
    return int(max_pixels)


def pillow_limit() -> int | None:
    """Pillow's decompression-bomb limit in pixels: twice ``PIL.Image.MAX_IMAGE_PIXELS`` (179 MP by
    default; Pillow warns above it and refuses above twice it), None where it is turned off.
    What holds for encoded inputs when ``max_pixels`` is None."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def _check_size(size: tuple[int, int], label: str, max_pixels: int | None, pillows: bool = False) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels (``pillows``: the limit
    is Pillow's decompression-bomb limit, max_pixels having been None)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        if pillows:
            raise ImageTooLargeError(
                f"{label} is {w}x{h} = {w * h / 1e6:.1f} MP, above Pillow's decompression-bomb limit of {max_pixels} pixels "
                "(twice PIL.Image.MAX_IMAGE_PIXELS: the limit when max_pixels is None); downscale it, or pass a max_pixels "
                "above its size if you trust this input"
            )
        raise ImageTooLargeError(
            f"{label} is {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of {max_pixels} pixels; "
            "downscale it, or pass a larger max_pixels (None for no limit) if you trust this input"
        )


def _label(path: object) -> str:
    """A file path for a message: as it is, or cut if very long (a 900 KB path is not echoed whole)."""
    return shorten(str(path), 200, quote=False)


def decode(image: ImageInput, name: str = "image", max_pixels: int | None = MAX_PIXELS) -> Decoded:
    """Bring any accepted input to a :class:`Decoded`.

    Args:
        image: the input (see module docstring).
        name: what to call it in error messages.
        max_pixels: refuse an input with more pixels (for encoded inputs, from the header,
            before decoding); None for no limit.

    Raises:
        InvalidImageError: the path is missing or not an image, the bytes are not an image or do
            not decode (truncated, damaged, unsupported), the image is above ``max_pixels``, a PIL
            image cannot be loaded (closed, or its file truncated), or the type is not one the SDK
            accepts.
        ImageFormatError: an array has the wrong shape, dtype or range.
        InvalidArgumentError: ``max_pixels`` is not None or an integer >= 1.

    Example:
        >>> decode(np.zeros((4, 6), np.uint8)).size
        (4, 6)
    """
    max_pixels = check_max_pixels(max_pixels)
    name = shorten(str(name), 200, quote=False)  # a caller's label (a file name from a request) is not echoed whole
    if isinstance(image, Image.Image):
        _check_size(image.size, name, max_pixels)
        try:
            image.load()  # a lazily opened file may be truncated, a closed image cannot load
        except Exception as e:
            raise InvalidImageError(f"{name}: the PIL image cannot be loaded ({type(e).__name__}: {shorten(str(e), 200, quote=False)}); "
                                    "expected an open, readable image: load it before closing its file") from e
        return _from_pil(image, "pil", name)
    if isinstance(image, np.ndarray):
        return _from_array(image, name, max_pixels=max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data:
            raise InvalidImageError(f"{name}: got empty bytes; expected an encoded image (PNG, JPEG, ...)")
        return _from_pil(_open(io.BytesIO(data), f"{name} (bytes)", max_pixels), "bytes", name)
    if isinstance(image, (str, os.PathLike)):
        try:
            path = Path(image)
            found = path.is_file()
        except (OSError, ValueError, TypeError) as e:  # name too long, NUL byte, bytes path...
            reason = getattr(e, "strerror", None) or shorten(str(e), 120, quote=False)
            raise InvalidImageError(f"{name}: {shorten(image, 200)} is not a usable file path ({reason}); pass an existing image path") from e
        if not found:
            raise InvalidImageError(f"{name}: no file at {shorten(str(path), 200)}; pass an existing image path, a PIL image, an array or bytes")
        try:
            f = open(path, "rb")
        except OSError as e:
            raise InvalidImageError(f"{name}: cannot open {shorten(str(path), 200)} ({e.strerror or e}); check its permissions") from e
        with f:
            return _from_pil(_open(f, _label(path), max_pixels), "path", name)
    raise InvalidImageError(
        f"{name}: got {type(image).__name__}; expected a PIL.Image, a numpy array, a file path or encoded bytes"
    )


_PLUGIN_HINTS = {".heic": "HEIC", ".heif": "HEIC", ".avif": "AVIF", ".avifs": "AVIF"}


def _open(src: io.BufferedIOBase, label: str, max_pixels: int | None) -> Image.Image:
    """Open and fully decode an encoded image (its first frame), checking its size from the header first.

    The limit is ``max_pixels``, or Pillow's bomb limit (:func:`pillow_limit`) when it is None;
    either way a header above it raises ImageTooLargeError, also where Pillow's own check fires
    first (in ``Image.open``): the header is then read again without that check, for its size.
    Every other failure of the decoder, whatever Pillow raises (OSError, SyntaxError,
    struct.error, RuntimeError, MemoryError...), becomes InvalidImageError, said without Python's
    internals (:func:`_unreadable`); the file is never left open.
    """
    pillows = max_pixels is None
    limit = pillow_limit() if pillows else max_pixels
    im = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the SDK's own limit decides
            try:
                im = Image.open(src)
            except Image.DecompressionBombError:
                im = _open_unchecked(src)
                if im is None:  # pragma: no cover  (Image.open found a format, so one of its plugins takes the file)
                    raise ImageTooLargeError(f"{label} declares more than Pillow's decompression-bomb limit of {pillow_limit()} "
                                             "pixels; downscale it") from None
            try:
                _check_size(im.size, label, limit, pillows)
                im.load()
            except BaseException:
                im.close()
                raise
        return im
    except ChromaforgeError:
        raise
    except Image.DecompressionBombError as e:  # a plugin's own check while loading (a later frame's size)
        raise ImageTooLargeError(f"{label}: {e}; downscale it") from e
    except Exception as e:
        raise InvalidImageError(_unreadable(label, e, getattr(im, "format", None), _head(src))) from e


def _open_unchecked(src: io.BufferedIOBase) -> Image.Image | None:
    """What ``Image.open`` does (its registered format plugins, in order, on the first bytes) without
    its decompression-bomb check, which fires before the caller's own size check could; None when
    no plugin takes the data. Only the header is read (the pixels load later, after the check)."""
    Image.preinit()
    for loader in (None, Image.init):
        if loader is not None:
            loader()
        for fmt in list(Image.ID):
            factory, accept = Image.OPEN[fmt]
            src.seek(0)
            prefix = src.read(16)
            if accept is not None and accept(prefix) is not True:  # a str result is a warning: not this format
                continue
            src.seek(0)
            try:
                return factory(src, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    return None


_EXPECTED = "expected PNG, JPEG, WebP, TIFF, BMP or another format Pillow reads"
_SIGNATURES = ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive (or a DOCX, XLSX, ...)"),
               (b"\x1f\x8b", "gzip-compressed data"), (b"{", "JSON or other text"), (b"<", "HTML, XML or SVG text"),
               (b"\x7fELF", "a program (ELF)"), (b"ftypheic", "HEIC"), (b"ftypavif", "AVIF"))


def _head(src: io.BufferedIOBase, n: int = 32) -> bytes:
    """The first bytes of ``src`` (empty if it cannot be read again)."""
    try:
        src.seek(0)
        return src.read(n)
    except Exception:  # noqa: BLE001  (only for the message)
        return b""


def _what(head: bytes) -> str:
    """What the first bytes of a file that is not an image look like, in words."""
    if not head:
        return "an empty file"
    for magic, name in _SIGNATURES:
        if head.startswith(magic) or head[4:].startswith(magic):
            return name
    for cut in range(4):  # a UTF-8 character may straddle the end of the head
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if all(c.isprintable() or c in "\r\n\t" for c in text):
            return f"text starting {' '.join(text.split())[:24]!r}"
        break
    return "data starting with bytes " + " ".join(f"{b:02x}" for b in head[:8])


def _unreadable(label: str, error: BaseException, fmt: str | None, head: bytes) -> str:
    """The message for an input the decoder refused: the file, what came, what was expected, and
    what to do; Pillow's own reason only where it is plain words."""
    kind = _PLUGIN_HINTS.get(Path(label).suffix.lower())
    if kind is None and (b"ftypheic" in head[:16] or b"ftypmif1" in head[:16]):
        kind = "HEIC"
    elif kind is None and b"ftypavif" in head[:16]:
        kind = "AVIF"
    plugin = f" ({kind} needs a Pillow built with it, or a plugin such as pillow-heif)" if kind else ""
    if isinstance(error, MemoryError):
        return f"{label} is not a readable image: decoding it needs more memory than there is; pass a smaller image"
    if fmt is None:  # Pillow found no format it knows
        return f"{label} is not a readable image: Pillow cannot identify its format (got {_what(head)}); {_EXPECTED}{plugin}"
    reason = str(error).strip()[:300]
    plain = isinstance(error, (OSError, SyntaxError, ValueError)) and reason and "<" not in reason and not isinstance(error, UnicodeError)
    detail = f" ({reason})" if plain else ""
    return (f"{label} is not a readable image: its {fmt} data is truncated or damaged{detail}; "
            f"expected a complete image file: copy or export it again{plugin}")


def _from_pil(im: Image.Image, kind: str, name: str) -> Decoded:
    """A loaded PIL image of any mode -> :class:`Decoded` (a mode Pillow cannot convert: ImageFormatError)."""
    try:
        return _convert_pil(im, kind, name)
    except ChromaforgeError:
        raise
    except Exception as e:
        raise ImageFormatError(f"{name}: cannot read a PIL image of mode {im.mode!r} ({type(e).__name__}: {shorten(str(e), 200, quote=False)}); "
                               "expected L, RGB, RGBA, P, I;16, I, F, CMYK or another mode Pillow converts to RGB") from e


def _convert_pil(im: Image.Image, kind: str, name: str) -> Decoded:
    try:
        if im.getexif().get(ExifTags.Base.Orientation, 1) not in (1, None):  # exif_transpose copies even when it turns nothing
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
        return Decoded(None, alpha, kind, gray=_int_to_u8(im))
    elif mode == "F":  # float TIFF: the float array rules (values in [0, 1]), on row strips of the image
        w, h = im.size
        gray = _float_to_u8((h, w), lambda s, e: np.asarray(im.crop((0, s, w, e))), name)
        return Decoded(None, alpha, kind, True, gray=gray)
    elif mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX ...
    if im.mode == "L":
        return Decoded(None, alpha, kind, gray=np.asarray(im))
    return Decoded(np.asarray(im), alpha, kind)


def _strip_rows(w: int) -> int:
    """Rows per strip of a full-image conversion: about :data:`_LUMA_TILE` pixels."""
    return max(1, _LUMA_TILE // max(1, w))


def _int_to_u8(im: Image.Image) -> np.ndarray:
    """A loaded 16-bit (``I;16*``) or 32-bit (``I``) grey image -> HxW uint8, rounded, in row
    strips: the working set is the result and one strip, not float copies of the whole image (an
    8192x8192 16-bit PNG took 1.8 GB). 16-bit data and ``I`` data above 255 are scaled from
    65535, other ``I`` data taken as 0..255."""
    w, h = im.size
    rows = _strip_rows(w)

    def strip(s: int) -> np.ndarray:
        return np.asarray(im.crop((0, s, w, min(h, s + rows))))

    peak = 65535.0
    if not im.mode.startswith("I;16"):
        top = max(int(strip(s).max(initial=0)) for s in range(0, h, rows))
        peak = 65535.0 if top > 255 else 255.0
    out = np.empty((h, w), np.uint8)
    for s in range(0, h, rows):
        out[s:s + rows] = np.clip(strip(s).astype(np.float64) * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
    return out


def _float_to_u8(shape: tuple[int, int] | tuple[int, int, int], part, name: str) -> np.ndarray:
    """Float data in [0, 1] -> uint8 of ``shape``, read as row strips ``part(start, stop)``: finite
    values and the range are checked first (the whole image, strip by strip), then converted.

    Raises:
        ImageFormatError: NaN or infinity, or values outside [0, 1] (a 1e-3 tolerance).
    """
    h, w = shape[:2]
    rows = _strip_rows(w * (shape[2] if len(shape) == 3 else 1))
    lo, hi = math.inf, -math.inf
    for s in range(0, h, rows):
        p = part(s, min(h, s + rows))
        if not np.isfinite(p).all():
            raise ImageFormatError(f"{name}: the float array contains NaN or infinity; expected finite values in [0, 1]")
        lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ImageFormatError(
            f"{name}: float values span [{lo:.3g}, {hi:.3g}]; expected [0, 1]. "
            "Divide 0..255 data by 255, or pass it as uint8"
        )
    out = np.empty(shape, np.uint8)
    for s in range(0, h, rows):
        out[s:s + rows] = (np.clip(part(s, min(h, s + rows)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def _from_array(arr: np.ndarray, name: str, kind: str = "array", max_pixels: int | None = None) -> Decoded:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageFormatError(
            f"{name}: got an array of shape {arr.shape}; expected HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA). "
            "For a CHW tensor use arr.transpose(1, 2, 0)"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageFormatError(f"{name}: got an empty array of shape {arr.shape}; expected at least 1x1 pixels")
    _check_size((arr.shape[1], arr.shape[0]), name, max_pixels)
    float_out = False
    if arr.dtype == np.uint8:
        u8 = arr
    elif np.issubdtype(arr.dtype, np.floating):
        u8 = _float_to_u8(arr.shape, lambda s, e: arr[s:e], name)
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
