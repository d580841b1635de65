"""The Pipeline: a loaded model plus a backend, composing the stages of :mod:`sdk.stages`; and
:func:`load`, which makes one (``sdk.load``)."""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sdk import backends, fusion, stages
from sdk.backends import Backend
from sdk.errors import ChromaforgeError, InvalidArgumentError
from sdk.images import MAX_PIXELS, ImageInput, check_max_pixels
from sdk.manifest import Manifest, default_model_dir, load_manifest
from sdk.stages import Params, ResolvedOptions, StyleSpec
from sdk.tiling import check_threads, default_workers

log = logging.getLogger("sdk")

ON_ERROR = ("raise", "return")

MAX_BATCH = 8
"""Default ``max_batch``: images of a list decoded, run and finished together. A longer list is
processed in chunks, so its memory is this many images' worth, not the list's (the generator's
activations alone take ~17.5 MB per 256² image on ONNX Runtime CPU)."""
CHUNK_PIXELS = 32 * 2**20
"""A chunk also closes once its decoded inputs hold this many pixels (33.5 MP, ~100 MB as RGB)."""


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise InvalidArgumentError(f"on_error is {on_error!r}; expected one of {ON_ERROR}")


class Pipeline:
    """A model and the backend that runs it. Create once, call many times (thread-safe).

    ``colorize`` and ``stylize`` check their options once (:func:`sdk.stages.check_options`), then
    run :func:`sdk.stages.prepare` -> :func:`~sdk.stages.infer` -> :func:`~sdk.stages.finish` on
    the resolved options; :meth:`process` exposes that composition for a list with any task and
    options, :meth:`process_resolved` for options resolved already. Close the pipeline (or use it
    in a ``with`` block) to free the backend's session and device memory.

    Naming: :attr:`backend_name` is the backend's registry name (a str) and :attr:`runner` the
    :class:`sdk.backends.Backend` object that runs the generator.

    Args:
        model_dir: folder with ``manifest.json`` and the model; None for the bundled model.
        backend: a name from :func:`sdk.backends.names` or ``"auto"``.
        threads: intra-op threads for CPU backends and threads for the full-resolution
            post-processing and fusion (None: ONNX Runtime's default, one per physical core;
            post-processing uses one per core, at most 8).
        verify: check the model file against the manifest's sha256.
        max_pixels: refuse inputs with more pixels, checked from an encoded image's header before
            decoding (default :data:`sdk.images.MAX_PIXELS`, 67 MP); None for no limit.
        max_batch: a list is processed this many images at a time (decode, generator, finish),
            so memory stays bounded however long the list is.
        precision: ``"fp32"`` or ``"fp16"`` to ask the backend for that precision (the FP16 ONNX
            from ``python -m export fp16``, an FP16 engine); None for the backend's default.

    Raises:
        ModelNotFoundError, ModelCorruptError: the model folder is missing or damaged, or its
            manifest does not fit the model graph (checked at load, with one tiny run).
        BackendUnavailableError: the requested backend cannot run here.
        InvalidArgumentError: ``model_dir``, ``backend``, ``threads``, ``max_pixels`` or
            ``max_batch`` of the wrong type or out of range (threads above
            :func:`sdk.tiling.max_threads` are capped, with a warning).

    Example:
        >>> with Pipeline(threads=2) as p:
        ...     p.backend_name, p.precision
        ('onnxruntime-cpu', 'fp32')
    """

    def __init__(self, model_dir: str | Path | None = None, backend: str = "auto", threads: int | None = None, verify: bool = True,
                 max_pixels: int | None = MAX_PIXELS, max_batch: int = MAX_BATCH, precision: str | None = None) -> None:
        if model_dir is not None and not isinstance(model_dir, (str, os.PathLike)):
            raise InvalidArgumentError(f"model_dir is {type(model_dir).__name__} {model_dir!r:.60}; expected a folder path "
                                       "(str or pathlib.Path) written by `python -m export onnx`, or None for the bundled model")
        if not isinstance(backend, str):
            raise InvalidArgumentError(f"backend is {type(backend).__name__} {backend!r:.60}; expected 'auto' or a name from sdk.backends.names()")
        if isinstance(max_batch, bool) or not isinstance(max_batch, numbers.Integral) or max_batch < 1:
            raise InvalidArgumentError(f"max_batch is {max_batch!r:.60}; expected an integer >= 1 (default {MAX_BATCH})")
        threads = check_threads(threads)
        self.max_pixels = check_max_pixels(max_pixels)
        self.max_batch = int(max_batch)
        self.manifest: Manifest = load_manifest(model_dir if model_dir is not None else default_model_dir(), verify=verify)
        self.runner: Backend = backends.create(backend, self.manifest, threads=threads, precision=precision)
        try:
            stages.check_model(self.runner, self.manifest)
        except BaseException:
            self.runner.close()
            raise
        self.workers = threads or default_workers()
        log.info("chromaforge: %s", self.runner.reason)

    # ------------------------------------------------------------------ info
    @property
    def backend_name(self) -> str:
        """Registry name of the backend in use (what ``auto`` picked)."""
        return self.runner.name

    @property
    def backend_reason(self) -> str:
        """Why this backend was chosen."""
        return self.runner.reason

    @property
    def precision(self) -> str:
        """The precision the backend really computes in (``"fp16"`` for TensorRT with FP16 on an
        FP32 model); ``manifest.precision`` is the model file's."""
        return self.runner.capabilities.precision

    def styles(self) -> list[str]:
        """Style names in manifest order; ``"natural"`` is plain colorization."""
        return list(self.manifest.styles)

    def __repr__(self) -> str:
        return f"Pipeline(model_dir={str(self.manifest.directory)!r}, backend={self.backend_name!r})"

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the backend's session and device memory; the pipeline cannot run afterwards."""
        self.runner.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ styles
    def style_vector(self, style: StyleSpec, strength: float = 1.0) -> np.ndarray:
        """Style weights [S] for a name or a blend; see :func:`sdk.stages.style_vector`.

        Raises:
            UnknownStyleError: a name is not in the manifest.
            InvalidArgumentError: weights are negative, not finite or all zero; strength outside [0, 1].
        """
        return stages.style_vector(self.manifest.styles, style, strength)

    # ------------------------------------------------------------------ stages composed
    def process(self, images: Sequence[ImageInput], task: str = "colorize", params: Params | None = None,
                names: Sequence[str] | None = None, on_error: str = "raise") -> list:
        """Check ``task`` and ``params`` once, then :meth:`process_resolved`: prepare -> infer ->
        finish for a list, in chunks.

        Args:
            images: inputs of any accepted type and size.
            task: ``"colorize"`` or ``"stylize"``.
            params: style, strength and fusion (default: natural style, no fusion).
            names: what to call each image in error messages (default ``image[i]``).
            on_error: ``"raise"`` stops at the first image that cannot be read or finished;
                ``"return"`` puts that image's :class:`~sdk.errors.ChromaforgeError` in its slot
                and processes the rest (folder jobs collect per-file errors this way). Errors of
                the options or the backend always raise.

        Returns:
            One result per image, in the input's type (or an exception, with ``on_error="return"``).

        Raises:
            InvalidArgumentError, UnknownStyleError: bad task or options.
            InvalidImageError, ImageFormatError: an image cannot be read (``on_error="raise"``).

        Example:
            >>> outs = p.process([a, b], "stylize", Params({"ukiyoe": .6, "rococo": .4}, strength=0.8))
        """
        _check_on_error(on_error)
        options = stages.check_options(task, params if params is not None else Params(), self.manifest)  # fail first, whatever on_error
        return self.process_resolved(images, options, names, on_error)

    def process_resolved(self, images: Sequence[ImageInput], options: ResolvedOptions, names: Sequence[str] | None = None,
                         on_error: str = "raise") -> list:
        """prepare -> infer -> finish for a list with options checked already: in chunks of
        ``max_batch`` images (fewer when their decoded pixels reach :data:`CHUNK_PIXELS`), one
        generator call per working shape in a chunk (within the backend's maximum batch), results in
        input order. Only one chunk's decoded inputs and generator outputs are held at a time; every
        job shares ``options`` (one style vector for the whole list). A job that spans many calls
        (a folder job's batches) resolves its options once and calls this per batch.

        Args:
            images: inputs of any accepted type and size.
            options: from :func:`sdk.stages.check_options` with this pipeline's manifest.
            names: what to call each image in error messages (default ``image[i]``).
            on_error: ``"raise"`` or ``"return"``, as in :meth:`process`.

        Returns:
            One result per image, in the input's type (or an exception, with ``on_error="return"``).

        Raises:
            InvalidArgumentError: ``on_error`` or ``options`` of the wrong kind.
            InvalidImageError, ImageFormatError: an image cannot be read (``on_error="raise"``).

        Example:
            >>> options = stages.check_options("stylize", Params("rococo"), p.manifest)
            >>> outs = p.process_resolved([a, b], options)
        """
        _check_on_error(on_error)
        if not isinstance(options, ResolvedOptions) or len(options.style) != len(self.manifest.styles):
            raise InvalidArgumentError(f"options is {type(options).__name__}; expected the ResolvedOptions of "
                                       "sdk.stages.check_options(task, params, pipeline.manifest) for this pipeline's model")
        labels = list(names) if names is not None else [f"image[{i}]" for i in range(len(images))]
        results: list = [None] * len(images)
        chunk: list[tuple[int, stages.Job]] = []
        pixels = 0

        def run_chunk() -> None:
            outputs = stages.infer(self.runner, [job for _, job in chunk])
            for (i, job), out in zip(chunk, outputs):
                try:
                    results[i] = stages.finish(job, out, self.workers)
                except ChromaforgeError as e:
                    if on_error == "raise":
                        raise
                    results[i] = e
            chunk.clear()

        for i, image in enumerate(images):
            try:
                job = stages.prepare(image, options, labels[i], self.max_pixels)
            except ChromaforgeError as e:
                if on_error == "raise":
                    raise
                results[i] = e
                continue
            chunk.append((i, job))
            pixels += job.source.size[0] * job.source.size[1]
            if len(chunk) >= self.max_batch or pixels >= CHUNK_PIXELS:
                run_chunk()
                pixels = 0
        if chunk:
            run_chunk()
        return results

    @staticmethod
    def _as_list(images: ImageInput | Sequence[ImageInput]) -> tuple[list, list[str], bool]:
        """(images, their names in messages, whether a list came in)."""
        if isinstance(images, (list, tuple)):
            if not images:
                raise InvalidArgumentError("got an empty list of images; pass at least one")
            return list(images), [f"image[{i}]" for i in range(len(images))], True
        return [images], ["image"], False

    # ------------------------------------------------------------------ public
    def colorize(self, image: ImageInput | Sequence[ImageInput], saturation: float = 1.0):
        """Colorize a grey (or colour, whose colour is ignored) image at its full resolution.

        Args:
            image: one image or a list (see :mod:`sdk.images` for accepted types).
            saturation: factor on the predicted chroma, in [0, 2] (1: as the model gives it; the
                model card tables what more or less colour costs in accuracy).

        Returns:
            The colorized image in the input's type (a list for a list).

        Raises:
            InvalidImageError, ImageFormatError: the input cannot be read.
            InvalidArgumentError: saturation outside [0, 2].

        Example:
            >>> rgb = Pipeline().colorize(np.zeros((64, 64), np.uint8))
            >>> rgb.shape
            (64, 64, 3)
        """
        options = stages.check_options("colorize", Params(saturation=saturation), self.manifest)  # before an empty list or a bad image
        items, names, many = self._as_list(image)
        results = self.process_resolved(items, options, names)
        return results if many else results[0]

    def stylize(self, image: ImageInput | Sequence[ImageInput], style: StyleSpec = "ukiyoe", strength: float = 1.0,
                saturation: float = 1.0):
        """Render an image's luminance in a painting style (or a blend of styles).

        Args:
            image: one image or a list.
            style: a style name or a dict of names to weights (normalised to sum 1).
            strength: 1 for the full style; lower values move toward natural colorization.
            saturation: factor on the result's chroma, in [0, 2] (1: as the model paints it).

        Returns:
            The stylized image at the input's full size, in the input's type. The generator runs
            at the working resolution; use :meth:`fuse` to restore the original's fine detail.

        Raises:
            UnknownStyleError: a style name is not in the manifest.
            InvalidArgumentError: bad weights, strength or saturation.

        Example:
            >>> out = Pipeline().stylize(np.zeros((64, 64, 3), np.uint8), {"ukiyoe": .6, "rococo": .4})
        """
        options = stages.check_options("stylize", Params(style, strength, saturation=saturation), self.manifest)
        items, names, many = self._as_list(image)
        results = self.process_resolved(items, options, names)
        return results if many else results[0]

    def colorize_video(self, src: str | Path, dst: str | Path, saturation: float = 1.0, options=None, overwrite: bool = False,
                       progress=None):
        """Colorize a video file, streaming and temporally stable (the ``video`` extra); see :func:`sdk.video.process`.

        Example:
            >>> sdk.load().colorize_video("old_film.mp4", "film_colour.mp4").fps
        """
        from sdk import video

        return video.process(self, src, dst, "colorize", stages.Params(saturation=saturation), options or video.VideoOptions(),
                             overwrite, progress)

    def stylize_video(self, src: str | Path, dst: str | Path, style: StyleSpec = "ukiyoe", strength: float = 1.0, options=None,
                      overwrite: bool = False, progress=None):
        """Stylize a video file (the ``video`` extra); see :func:`sdk.video.process`.

        Example:
            >>> sdk.load().stylize_video("clip.mp4", "art.mp4", style="impressionism")
        """
        from sdk import video

        return video.process(self, src, dst, "stylize", stages.Params(style, strength), options or video.VideoOptions(),
                             overwrite, progress)

    def video_frames(self, frames, task: str = "colorize", params: Params | None = None, options=None):
        """Process frames from your own decoder, in order, stabilised: see :func:`sdk.video.frames`.

        Example:
            >>> for out in sdk.load().video_frames(my_decoder()):
            ...     my_encoder.write(out)
        """
        from sdk import video

        return video.frames(self, frames, task, params, options or video.VideoOptions())

    def fuse(self, content: ImageInput, stylized: ImageInput, method: str = "laplacian", detail: float = 0.7,
             detail_levels: int = 2, levels: int = 5, weight: float = 0.5):
        """:func:`sdk.fuse` on this pipeline's ``threads`` and ``max_pixels`` (fusion needs no model;
        the options are checked once, by :class:`sdk.fusion.FuseParams`).

        Args:
            content, stylized: the original and the stylized image.
            method, detail, detail_levels, levels, weight: see :class:`sdk.fusion.FuseParams`.

        Returns:
            The fused image in the content's type.

        Raises:
            InvalidArgumentError: unknown method or parameter out of range.
            InvalidImageError, ImageFormatError: an input cannot be read.

        Example:
            >>> out = p.fuse(photo, p.stylize(photo, "pointillism"), method="laplacian", detail=1.0)
        """
        return fusion.fuse(content, stylized, method, detail, detail_levels, levels, weight, workers=self.workers,
                           max_pixels=self.max_pixels)


def load(model_dir: str | Path | None = None, backend: str = "auto", threads: int | None = None,
         max_pixels: int | None = MAX_PIXELS, max_batch: int = MAX_BATCH, precision: str | None = None) -> Pipeline:
    """Load a model and create its backend session (once; reuse the result). This is ``sdk.load``.

    Args:
        model_dir: folder written by ``python -m export onnx``; None for the bundled model.
        backend: ``"auto"`` or a name from ``sdk.backends.names()``.
        threads: intra-op threads for CPU backends and threads of the full-resolution steps
            (a positive integer; more than :func:`sdk.tiling.max_threads` is capped).
        max_pixels: refuse inputs with more pixels (default :data:`sdk.images.MAX_PIXELS`, 67 MP,
            checked from an encoded image's header before decoding); None for no limit.
        max_batch: images of a list processed together (default :data:`MAX_BATCH`; memory stays
            bounded however long the list).
        precision: ``"fp32"`` or ``"fp16"`` (e.g. the FP16 ONNX on ``onnxruntime-cuda``); None for
            the backend's default.

    Returns:
        A :class:`Pipeline`; ``pipeline.backend_name`` names the backend, ``pipeline.backend_reason`` why.

    Raises:
        ModelNotFoundError, ModelCorruptError, BackendUnavailableError, InvalidArgumentError.

    Example:
        >>> p = sdk.load(backend="onnxruntime-cpu", threads=2)
    """
    return Pipeline(model_dir, backend=backend, threads=threads, max_pixels=max_pixels, max_batch=max_batch, precision=precision)
