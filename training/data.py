"""Image-folder datasets for training.

Any folder of JPEG/PNG/WebP/BMP files works (searched recursively). Images are decoded once,
downscaled so their short side is at most ``load_size``, and kept in memory as uint8 arrays:
on a 2-core machine, decoding per step would cost as much as the step. Grayscale images in a
colour set are skipped (they teach grey output), both by mode and by measured chroma.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sdk import contract
from sdk.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

GRAY_CHROMA_STD = 0.012
"""An image whose Cb and Cr standard deviations are both below this (on [0,1] RGB) counts as grey."""


def list_images(root: str | Path) -> list[Path]:
    """Every image file under ``root``, sorted, so runs are reproducible."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def is_grayscale(rgb: np.ndarray) -> bool:
    """True when an RGB uint8 image carries (almost) no colour."""
    x = rgb[::4, ::4].astype(np.float32) / 255.0
    m = np.asarray(contract.RGB_TO_YCBCR, np.float32)
    cbcr = x @ m[1:].T
    return bool(cbcr.reshape(-1, 2).std(axis=0).max() < GRAY_CHROMA_STD)


def load_rgb(path: Path, load_size: int) -> np.ndarray | None:
    """Decode ``path`` as RGB uint8 with its short side at most ``load_size``; None if grey."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("L", "LA", "1", "I", "I;16", "F"):
            return None
        im = im.convert("RGB")
        scale = load_size / min(im.size)
        if scale < 1.0:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.BICUBIC, reducing_gap=2.0)
        arr = np.asarray(im)
    return None if is_grayscale(arr) else arr


def select_files(root: str | Path, limit: int | None = None) -> list[Path]:
    """:func:`list_images`, thinned to at most ``limit`` evenly spaced files when a limit is given."""
    files = list_images(root)
    if limit is not None and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    return files


class ImageBank:
    """Decoded colour images of one folder, with random crops for training.

    Args:
        root: folder searched recursively for images.
        load_size: short side images are reduced to when loaded.
        limit: keep at most this many files (evenly spaced), for quick runs.
        files: load exactly these files instead of searching ``root`` (a rank's share of
            :func:`select_files`, chosen exemplars); ``root`` then only names the set in messages.

    Raises:
        FileNotFoundError: the folder is missing. ValueError: it holds no usable colour image.
    """

    def __init__(self, root: str | Path, load_size: int = 256, limit: int | None = None, files: Sequence[Path] | None = None) -> None:
        files = select_files(root, limit) if files is None else list(files)
        self.images: list[np.ndarray] = []
        self.files: list[Path] = []
        self.skipped: list[Path] = []
        for f in files:
            try:
                arr = load_rgb(f, load_size)
            except OSError as e:
                log.warning("skipping unreadable %s: %s", f, e)
                self.skipped.append(f)
                continue
            if arr is None:
                self.skipped.append(f)
            else:
                self.images.append(arr)
                self.files.append(f)
        if not self.images:
            raise ValueError(f"no colour images found under {root} ({len(self.skipped)} skipped)")
        if self.skipped:
            log.info("%s: skipped %d grey or unreadable images", root, len(self.skipped))

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, rng: np.random.Generator, n: int, size: int, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """``n`` random crops of ``size``x``size``, randomly rescaled and flipped: [n,size,size,3] uint8.

        ``scale`` is a range for the short side relative to ``size`` before cropping (1.0 means the
        crop spans the short side); images too small are upscaled to fit.
        """
        out = np.empty((n, size, size, 3), np.uint8)
        for i in range(n):
            img = self.images[rng.integers(len(self.images))]
            h, w = img.shape[:2]
            target_short = size * rng.uniform(*scale)
            f = target_short / min(h, w)
            if abs(f - 1.0) > 0.02 or min(h, w) < size:
                nh, nw = max(size, round(h * f)), max(size, round(w * f))
                img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
                h, w = nh, nw
            y = rng.integers(h - size + 1)
            x = rng.integers(w - size + 1)
            crop = img[y : y + size, x : x + size]
            out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
        return out
