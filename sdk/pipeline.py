"""The Pipeline: a loaded model plus a backend, with colorize / stylize / fuse."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from sdk import backends, contract, processing
from sdk.errors import InvalidArgumentError, UnknownStyleError
from sdk.io import Decoded, ImageInput, decode, encode
from sdk.manifest import Manifest, default_model_dir, load_manifest

StyleSpec = Union[str, Mapping[str, float]]
"""A style name (``"ukiyoe"``) or a blend of names to weights (``{"ukiyoe": .6, "rococo": .4}``)."""

FUSE_METHODS = ("laplacian", "weighted", "luminance")

log = logging.getLogger("sdk")


class Pipeline:
    """A model and the backend that runs it. Create once, call many times (thread-safe).

    Args:
        model_dir: folder with ``manifest.json`` and the model; None for the bundled model.
        backend: a name from :func:`sdk.backends.names` or ``"auto"``.
        threads: intra-op threads for CPU backends and threads for the full-resolution
            post-processing (None: ONNX Runtime's default, one per physical core; post-processing
            uses one per core, at most 8).
        verify: check the model file against the manifest's sha256.

    Raises:
        ModelNotFoundError, ModelCorruptError: the model folder is missing or damaged.
        BackendUnavailableError: the requested backend cannot run here.

    Example:
        >>> p = Pipeline()
        >>> p.backend
        'onnxruntime-cpu'
    """

    def __init__(self, model_dir: str | Path | None = None, backend: str = "auto", threads: int | None = None, verify: bool = True) -> None:
        self.manifest: Manifest = load_manifest(model_dir if model_dir is not None else default_model_dir(), verify=verify)
        self.runner = backends.create(backend, self.manifest, threads=threads)
        self.workers = int(threads) if threads else processing.default_workers()
        log.info("chromaforge: %s", self.runner.reason)

    # ------------------------------------------------------------------ info
    @property
    def backend(self) -> str:
        """Name of the backend in use (what ``auto`` picked)."""
        return self.runner.name

    @property
    def backend_reason(self) -> str:
        """Why this backend was chosen."""
        return self.runner.reason

    def styles(self) -> list[str]:
        """Style names in manifest order; ``"natural"`` is plain colorization."""
        return list(self.manifest.styles)

    def __repr__(self) -> str:
        return f"Pipeline(model_dir={str(self.manifest.directory)!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ styles
    def style_vector(self, style: StyleSpec, strength: float = 1.0) -> np.ndarray:
        """Style weights [S] for a name or a blend, moved toward ``natural`` as strength drops.

        Raises:
            UnknownStyleError: a name is not in the manifest.
            InvalidArgumentError: weights are negative, not finite or all zero; strength outside [0, 1].
        """
        names = self.manifest.styles
        if isinstance(style, str):
            blend: Mapping[str, float] = {style: 1.0}
        elif isinstance(style, Mapping):
            blend = style
        else:
            raise InvalidArgumentError(f"style: got {type(style).__name__}; expected a name such as {names[1]!r} or a dict like {{{names[1]!r}: 0.6, {names[-1]!r}: 0.4}}")
        vec = np.zeros(len(names), np.float32)
        for name, w in blend.items():
            if name not in names:
                raise UnknownStyleError(f"unknown style {name!r}; valid styles: {', '.join(names)}")
            if not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise InvalidArgumentError(f"style weight for {name!r} is {w!r}; expected a finite number >= 0")
            vec[names.index(name)] += float(w)
        total = float(vec.sum())
        if total <= 0:
            raise InvalidArgumentError(f"style weights {dict(blend)} sum to 0; give at least one positive weight")
        vec /= total
        if not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
            raise InvalidArgumentError(f"strength is {strength!r}; expected a number in [0, 1] (1 = full style, 0 = natural colorization)")
        natural = np.zeros_like(vec)
        natural[names.index(contract.NATURAL)] = 1.0
        return (strength * vec + (1.0 - strength) * natural).astype(np.float32)

    # ------------------------------------------------------------------ generator
    def _shape(self, d: Decoded) -> tuple[int, int]:
        return processing.work_shape(*d.size, self.manifest.work_size, self.manifest.size_multiple)

    def _generate(self, items: list[Decoded], style: np.ndarray) -> list[np.ndarray]:
        """Run the generator on every item at its working shape; equal shapes share one batch."""
        out: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, d in enumerate(items):
            groups.setdefault(self._shape(d), []).append(i)
        for shape, idx in groups.items():
            luma = np.stack([processing.resize_luma(items[i].luma, shape) for i in idx])[:, None]
            styles = np.repeat(style[None], len(idx), axis=0)
            result = self.runner.run(luma, styles)
            for j, i in enumerate(idx):
                out[i] = result[j]
        return out  # type: ignore[return-value]

    @staticmethod
    def _decode_all(images: ImageInput | Sequence[ImageInput]) -> tuple[list[Decoded], bool]:
        if isinstance(images, (list, tuple)):
            if not images:
                raise InvalidArgumentError("got an empty list of images; pass at least one")
            return [decode(im, f"image[{i}]") for i, im in enumerate(images)], True
        return [decode(images)], False

    # ------------------------------------------------------------------ public
    def colorize(self, image: ImageInput | Sequence[ImageInput]):
        """Colorize a grey (or colour, whose colour is ignored) image at its full resolution.

        Args:
            image: one image or a list (see :mod:`sdk.io` for accepted types).

        Returns:
            The colorized image in the input's type (a list for a list).

        Raises:
            InvalidImageError, ImageFormatError: the input cannot be read.

        Example:
            >>> rgb = Pipeline().colorize(np.zeros((64, 64), np.uint8))
            >>> rgb.shape
            (64, 64, 3)
        """
        items, many = self._decode_all(image)
        style = self.style_vector(contract.NATURAL)
        results = [
            encode(processing.colour_onto_luma(d.luma, y[1:], self.workers), d)
            for d, y in zip(items, self._generate(items, style))
        ]
        return results if many else results[0]

    def stylize(self, image: ImageInput | Sequence[ImageInput], style: StyleSpec = "ukiyoe", strength: float = 1.0):
        """Render an image's luminance in a painting style (or a blend of styles).

        Args:
            image: one image or a list.
            style: a style name or a dict of names to weights (normalised to sum 1).
            strength: 1 for the full style; lower values move toward natural colorization.

        Returns:
            The stylized image at the input's full size, in the input's type. The generator runs
            at the working resolution; use :meth:`fuse` to restore the original's fine detail.

        Raises:
            UnknownStyleError: a style name is not in the manifest.
            InvalidArgumentError: bad weights or strength.

        Example:
            >>> out = Pipeline().stylize(np.zeros((64, 64, 3), np.uint8), {"ukiyoe": .6, "rococo": .4})
        """
        vec = self.style_vector(style, strength)
        items, many = self._decode_all(image)
        results = [
            encode(processing.ycbcr_small_to_rgb(y, d.size, self.workers), d)
            for d, y in zip(items, self._generate(items, vec))
        ]
        return results if many else results[0]

def fuse(
    content: ImageInput,
    stylized: ImageInput,
    method: str = "laplacian",
    detail: float = 0.7,
    detail_levels: int = 2,
    levels: int = 5,
    weight: float = 0.5,
):
    """Blend a stylized image with its original.

    Methods:
        ``laplacian``: Laplacian-pyramid fusion; the ``detail_levels`` finest bands take
        ``detail`` of the content's detail (1 = all of it), the rest come from the stylized image.
        ``weighted``: per-pixel ``weight * stylized + (1 - weight) * content``.
        ``luminance``: the stylized colour on the content's luminance, ``weight`` scaling the colour.

    Args:
        content: the original image; the result has its size and type (and its alpha).
        stylized: the stylized image; resized to the content's size if it differs.
        detail, detail_levels, levels: Laplacian parameters (detail in [0, 1], levels >= 1).
        weight: for ``weighted`` and ``luminance``, in [0, 1].

    Raises:
        InvalidArgumentError: unknown method or parameter out of range.
        InvalidImageError, ImageFormatError: an input cannot be read.

    Example:
        >>> out = fuse(photo, sdk.stylize(photo, "pointillism"), method="laplacian", detail=1.0)
    """
    if method not in FUSE_METHODS:
        raise InvalidArgumentError(f"unknown fusion method {method!r}; expected one of {FUSE_METHODS}")
    for name, v in (("detail", detail), ("weight", weight)):
        if not isinstance(v, numbers.Real) or not 0.0 <= v <= 1.0:
            raise InvalidArgumentError(f"{name} is {v!r}; expected a number in [0, 1]")
    for name, v in (("detail_levels", detail_levels), ("levels", levels)):
        if not isinstance(v, numbers.Integral) or v < 1:
            raise InvalidArgumentError(f"{name} is {v!r}; expected an integer >= 1")
    c = decode(content, "content")
    s = decode(stylized, "stylized")
    c_rgb = c.rgb_or_gray()
    s_rgb = s.rgb_or_gray()
    if s_rgb.shape != c_rgb.shape:
        s_rgb = np.asarray(Image.fromarray(s_rgb, "RGB").resize((c.size[1], c.size[0]), Image.BILINEAR))
    if method == "laplacian":
        out = processing.fuse_laplacian(c_rgb, s_rgb, detail, detail_levels, levels)
    elif method == "weighted":
        out = processing.fuse_weighted(c_rgb, s_rgb, weight)
    else:
        out = processing.fuse_luminance(c_rgb, s_rgb, weight)
    return encode(out, c)


# Fusion needs no model: ``Pipeline.fuse`` is the module-level function, same signature and docs.
Pipeline.fuse = staticmethod(fuse)  # type: ignore[method-assign]
