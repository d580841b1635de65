"""The pipeline in three stages: prepare -> infer -> finish.

A call's task and options are checked once, by :func:`check_options`, into a frozen
:class:`ResolvedOptions` (style vector, saturation, fusion, working size, padding) that every image
of the call shares. Each image becomes a :class:`Job` (:func:`prepare`: decode, working shape,
luminance at that shape, with those options). :func:`infer` runs the generator for any list of jobs on a backend,
adapting them to what the backend declares (:class:`sdk.backends.Capabilities`): jobs are grouped
by the shape they run at, so different sizes that share a working shape or a bucket, and different
styles, share one call; groups are split by the backend's maximum batch; luminance is padded to a
bucket (replicate padding) and the output cropped back; inputs are cast to the backend's dtype.
:func:`finish` turns a job's generator output into the result at the input's full resolution
(colour onto the input's own luminance, or the stylized image; fusion if asked) in the input's type.

:class:`sdk.Pipeline` composes the three; a batching server, video (which smooths chroma between
:func:`infer` and :func:`finish`) and distributed jobs (a :class:`Job` pickles) call them directly.

Example:
    >>> p = sdk.load()
    >>> colour = check_options("colorize", Params(), p.manifest)
    >>> art = check_options("stylize", Params("ukiyoe"), p.manifest)
    >>> jobs = [prepare(a, colour), prepare(b, art), prepare(c, art)]
    >>> results = [finish(j, out, p.workers) for j, out in zip(jobs, infer(p.runner, jobs))]
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from sdk import contract
from sdk.backends import Backend
from sdk.colour import colour_onto_luma, ycbcr_small_to_rgb
from sdk.errors import BackendUnavailableError, ChromaforgeError, InvalidArgumentError, ModelCorruptError, UnknownStyleError, shorten
from sdk.fusion import FuseParams, fuse_rgb
from sdk.images import MAX_PIXELS, Decoded, ImageInput, decode, encode
from sdk.manifest import Manifest
from sdk.resample import resize_luma, work_shape

StyleSpec = Union[str, Mapping[str, float]]
"""A style name (``"ukiyoe"``) or a blend of names to weights (``{"ukiyoe": .6, "rococo": .4}``)."""

MAX_SATURATION = 2.0
"""Largest ``Params.saturation``: twice the model's chroma already clips most colours at the RGB gamut."""

TASKS = ("colorize", "stylize")
"""``colorize``: the predicted colour on the input's own full-resolution luminance (natural style).
``stylize``: the generator's whole YCbCr output, upsampled to the input's size."""


@dataclass(frozen=True)
class Params:
    """A call's options as the caller gives them (unchecked: :func:`check_options` checks them
    against a model and resolves them into :class:`ResolvedOptions`).

    Args:
        style: a style name or a blend; ``colorize`` takes only ``"natural"``.
        strength: 1 for the full style; lower values move toward natural colorization.
        fusion: blend the result with the input (:class:`sdk.fusion.FuseParams`); None for none.
        saturation: factor on the result's chroma (Cb, Cr), luminance kept, in [0, 2]: 1 as the
            model gives it, 0 grey, above 1 more colourful. The model card's tables show what it
            trades (colourfulness against colour accuracy).

    Example:
        >>> Params("ukiyoe", strength=0.8, fusion=FuseParams("laplacian", detail=0.8))
    """

    style: StyleSpec = contract.NATURAL
    strength: float = 1.0
    fusion: FuseParams | None = None
    saturation: float = 1.0


@dataclass(frozen=True, eq=False)
class ResolvedOptions:
    """A call's task and options, checked against one model and resolved: what :func:`prepare`,
    :func:`infer` and :func:`finish` read. Made by :func:`check_options` only, once per call, and
    shared by every job of the call (it pickles with them).

    Attributes:
        task: one of :data:`TASKS`.
        style: float32 [S] style weights (strength applied), summing to 1; read-only.
        saturation: factor on the output's chroma, applied by :func:`finish`.
        fusion: fusion applied by :func:`finish`, or None.
        work_size: the long side the generator runs at for this task (the manifest's
            ``work_size``, or its stylize size).
        multiple: the model's size multiple (working sides are multiples of it).
        pad: pixels of reflect padding on every side of the luminance (the manifest's
            ``style_pad`` for ``stylize``), cropped off the output by :func:`finish`.
    """

    task: str
    style: np.ndarray
    saturation: float
    fusion: FuseParams | None
    work_size: int
    multiple: int
    pad: int


@dataclass(frozen=True)
class Job:
    """One image prepared for the generator.

    Attributes:
        source: the decoded input (full-resolution pixels, alpha, and how to return the result).
        shape: working shape (h, w) the generator runs at (before any bucket padding), the
            options' ``pad`` included.
        luma: float32 [h, w] luminance in [0, 1] at ``shape``.
        options: the call's :class:`ResolvedOptions` (task, style vector, saturation, fusion).
    """

    source: Decoded
    shape: tuple[int, int]
    luma: np.ndarray
    options: ResolvedOptions


def style_vector(styles: Sequence[str], style: StyleSpec, strength: float = 1.0) -> np.ndarray:
    """Style weights [S] for a name or a blend, moved toward ``natural`` as strength drops.

    Args:
        styles: the model's style names, in manifest order.
        style: a name or a dict of names to weights (normalised to sum 1).
        strength: in [0, 1].

    Raises:
        UnknownStyleError: a name is not in ``styles``.
        InvalidArgumentError: weights are negative, not finite or all zero; strength outside [0, 1].

    The result is finite, non-negative and sums to 1 for any weights that pass these checks.

    Example:
        >>> style_vector(("natural", "ukiyoe"), "ukiyoe", 0.25)
        array([0.75, 0.25], dtype=float32)
    """
    names = tuple(styles)
    if isinstance(style, str):
        blend: Mapping[str, float] = {style: 1.0}
    elif isinstance(style, Mapping):
        blend = style
    else:
        raise InvalidArgumentError(f"style: got {type(style).__name__}; expected a name such as {names[1]!r} or a dict like {{{names[1]!r}: 0.6, {names[-1]!r}: 0.4}}")
    # float64 throughout, each weight scaled by the largest before summing: huge weights (1e39,
    # 3e38 + 3e38) neither overflow float32 nor the sum, tiny ones do not vanish.
    vec = np.zeros(len(names), np.float64)
    for name, w in blend.items():
        if not isinstance(name, str) or name not in names:
            raise UnknownStyleError(f"unknown style {shorten(name)}; valid styles: {', '.join(names)}")
        try:
            value = float(w) if isinstance(w, numbers.Real) else math.nan
        except (OverflowError, ValueError, TypeError):  # an int beyond float range
            value = math.inf
        if not math.isfinite(value) or value < 0:
            raise InvalidArgumentError(f"style weight for {shorten(name)} is {reprlib.repr(w)}; expected a finite number >= 0 (weights are normalised to sum 1)")
        vec[names.index(name)] += value
    top = float(vec.max(initial=0.0))
    if not top > 0:
        raise InvalidArgumentError(f"style weights {shorten(dict(blend))} sum to 0; give at least one positive weight")
    vec /= top
    vec /= vec.sum()
    if not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
        raise InvalidArgumentError(f"strength is {reprlib.repr(strength)}; expected a number in [0, 1] (1 = full style, 0 = natural colorization)")
    natural = np.zeros_like(vec)
    natural[names.index(contract.NATURAL)] = 1.0
    return (float(strength) * vec + (1.0 - float(strength)) * natural).astype(np.float32)


def parse_style(text: str) -> StyleSpec:
    """A style as written on a command line or in a query string: a name, or ``name=weight,...``.

    Raises:
        InvalidArgumentError: a blend part is not ``NAME=NUMBER``.

    Example:
        >>> parse_style("ukiyoe=0.6,rococo=0.4")
        {'ukiyoe': 0.6, 'rococo': 0.4}
    """
    if ":" in text:  # no style name has one: NAME:WEIGHT for NAME=WEIGHT
        raise InvalidArgumentError(f"style {reprlib.repr(text)} has a ':'; a blend is NAME=WEIGHT,...: "
                                   f"did you mean {reprlib.repr(text.replace(':', '='))[1:-1]}?")
    if "=" not in text:
        return text.strip()
    blend: dict[str, float] = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        try:
            blend[name.strip()] = float(w)
        except ValueError as e:
            raise InvalidArgumentError(f"style weight {reprlib.repr(part)} is not NAME=NUMBER; e.g. ukiyoe=0.6,rococo=0.4") from e
    return blend


def check_options(task: str, params: Params, manifest: Manifest) -> ResolvedOptions:
    """Check a task and its options against the model, and resolve them: the one place options are
    checked and the style vector is built. Call it once per call (a list, a folder job, a request)
    and hand the result to :func:`prepare` for each image.

    Args:
        task: one of :data:`TASKS`.
        params: style, strength, saturation and fusion as the caller gave them.
        manifest: the model's manifest (styles, working sizes, size multiple, style padding).

    Returns:
        The :class:`ResolvedOptions` of the call.

    Raises:
        InvalidArgumentError: unknown task, a style given to ``colorize``, bad weights, strength,
            saturation or fusion.
        UnknownStyleError: a style name is not in the manifest.
    """
    if not isinstance(params, Params):
        raise InvalidArgumentError(f"params is {type(params).__name__}; expected sdk.stages.Params")
    if task not in TASKS:
        raise InvalidArgumentError(f"unknown task {shorten(task)}; expected one of {TASKS}")
    if task == "colorize" and params.style != contract.NATURAL:
        raise InvalidArgumentError(f"colorize runs the {contract.NATURAL!r} style, got style {shorten(params.style)}; use task 'stylize' for another style")
    s = params.saturation
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not 0.0 <= s <= MAX_SATURATION:
        raise InvalidArgumentError(f"saturation is {reprlib.repr(s)}; expected a number in [0, {MAX_SATURATION:g}] "
                                   "(1 = the model's colour, 0 = grey, above 1 = more colourful)")
    if params.fusion is not None and not isinstance(params.fusion, FuseParams):
        raise InvalidArgumentError(f"fusion is {type(params.fusion).__name__}; expected sdk.fusion.FuseParams or None")
    style = style_vector(manifest.styles, params.style, params.strength)
    style.setflags(write=False)  # shared by every job of the call
    styled = task == "stylize"
    return ResolvedOptions(task, style, float(s), params.fusion, manifest.stylize_size if styled else manifest.work_size,
                           manifest.size_multiple, manifest.style_pad if styled else 0)


def prepare(image: ImageInput, options: ResolvedOptions, name: str = "image", max_pixels: int | None = MAX_PIXELS) -> Job:
    """Stage 1: decode ``image`` and bring it to the generator's working shape.

    The options were checked already (:func:`check_options`, before any image is decoded); this
    checks nothing of them.

    Args:
        image: any input :mod:`sdk.images` accepts.
        options: the call's options, from :func:`check_options`.
        name: what to call the image in error messages.
        max_pixels: refuse larger inputs (see :func:`sdk.images.decode`); None for no limit.

    Returns:
        A :class:`Job`; it holds no reference to a backend.

    Raises:
        InvalidArgumentError: ``options`` is not a :class:`ResolvedOptions`.
        InvalidImageError, ImageFormatError: the input cannot be read.
    """
    if not isinstance(options, ResolvedOptions):
        raise InvalidArgumentError(f"options is {type(options).__name__}; expected the ResolvedOptions of "
                                   "sdk.stages.check_options(task, params, manifest)")
    source = decode(image, name, max_pixels)
    shape = work_shape(*source.size, options.work_size, options.multiple)
    luma = resize_luma(source.luma, shape)
    if options.pad:  # the image's border inside what the generator sees: no edge bands (manifest.style_pad)
        luma = np.pad(luma, options.pad, mode="reflect")
    return Job(source, luma.shape, luma, options)


def _pad(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``plane`` padded bottom and right to ``shape`` by repeating its edge pixels."""
    dh, dw = shape[0] - plane.shape[0], shape[1] - plane.shape[1]
    return np.pad(plane, ((0, dh), (0, dw)), mode="edge") if dh or dw else plane


def infer(backend: Backend, jobs: Sequence[Job]) -> list[np.ndarray]:
    """Stage 2: run the generator for every job, in as few backend calls as its limits allow.

    Jobs are grouped by the shape they run at (:meth:`Capabilities.run_shape
    <sdk.backends.Capabilities.run_shape>`: the working shape, or the bucket it pads to), whatever
    their styles or input sizes; each group is split into runs of at most ``max_batch``.

    Args:
        backend: a :class:`sdk.backends.Backend`.
        jobs: from :func:`prepare`, in any mix of tasks, styles and sizes.

    Returns:
        Per job, in order, the generator output float32 [3, h, w] at the job's working shape.

    Raises:
        BackendUnavailableError: a working shape is outside what the backend accepts, the backend
            was closed, failed (its own exception is chained), or returned an array of the wrong shape.
    """
    caps = backend.capabilities
    dtype = np.dtype(caps.input_dtype)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(caps.run_shape(job.shape), []).append(i)
    outputs: list[np.ndarray] = [np.empty(0)] * len(jobs)
    for shape, members in groups.items():
        for part in caps.batches(len(members)):
            idx = members[part]
            luma = np.stack([_pad(jobs[i].luma, shape) for i in idx])[:, None].astype(dtype, copy=False)
            style = np.stack([jobs[i].options.style for i in idx]).astype(dtype, copy=False)
            try:
                result = np.asarray(backend.run(luma, style))
            except ChromaforgeError:
                raise
            except Exception as e:  # the engine's own error types (ONNX Runtime's, CUDA's, MemoryError)
                raise BackendUnavailableError(f"backend {backend.name!r} failed on input {luma.shape} ({type(e).__name__}: {e}); "
                                              "check the model (sdk.load verifies it) and the device's free memory") from e
            if result.shape != (len(idx), 3) + shape:
                raise BackendUnavailableError(
                    f"backend {backend.name!r} returned shape {result.shape} for input {luma.shape}; "
                    f"expected {(len(idx), 3) + shape} (see sdk.backends.Backend.run)"
                )
            result = result.astype(np.float32, copy=False)
            for j, i in enumerate(idx):
                h, w = jobs[i].shape
                outputs[i] = result[j, :, :h, :w]
    return outputs


def check_model(backend: Backend, manifest: Manifest) -> None:
    """Run the generator once on a tiny input to prove the manifest fits the model.

    The smallest working shape, ``size_multiple`` x ``2 * size_multiple`` (run as the backend
    declares), with the natural style: the output must be [1, 3, h, w] and finite. This catches
    what the graph's declared shapes cannot show, e.g. a ``size_multiple`` the encoder's strides do
    not divide (the output comes back larger, or the run fails), or a style-vector length a
    backend only checks when it runs. :class:`sdk.Pipeline` calls it on creation.

    Raises:
        ModelCorruptError: the run failed or returned the wrong shape or non-finite values.
    """
    m = manifest.size_multiple
    styles = style_vector(manifest.styles, contract.NATURAL)
    caps = backend.capabilities
    try:
        shape = caps.run_shape((m, 2 * m))
    except BackendUnavailableError:
        shape = caps.run_shape((m, m))
    dtype = np.dtype(caps.input_dtype)
    luma = np.full((1, 1) + shape, 0.5, dtype)
    try:
        out = np.asarray(backend.run(luma, styles[None].astype(dtype)))
    except ChromaforgeError:
        raise
    except Exception as e:
        raise ModelCorruptError(f"{manifest.model_path} fails on a {shape[0]}x{shape[1]} input with {len(styles)} style weights "
                                f"({type(e).__name__}: {str(e)[:300]}); expected the manifest's {len(styles)} styles and size_multiple {m} to fit the model: "
                                "re-export it with `python -m export onnx`") from e
    if out.shape != (1, 3) + shape:
        raise ModelCorruptError(f"{manifest.model_path} returns shape {out.shape} for a {shape[0]}x{shape[1]} input, expected {(1, 3) + shape}; "
                                f"expected size_multiple {m} (manifest) to fit the model's strides: re-export it with `python -m export onnx`")
    if not np.isfinite(out).all():
        raise ModelCorruptError(f"{manifest.model_path} returns NaN or infinity for a plain grey input; the model file is damaged: re-export it")


def finish(job: Job, output: np.ndarray, workers: int | None = None):
    """Stage 3: a job's generator output -> the result at the input's full size, in its type.

    Args:
        job: from :func:`prepare`.
        output: float32 [3, h, w] at ``job.shape`` (from :func:`infer`, possibly post-processed,
            e.g. temporally smoothed chroma in video).
        workers: threads for the tiled full-resolution steps (None: one per core, at most 8).

    Returns:
        colorize: the predicted Cb, Cr upsampled onto the input's own luminance; stylize: the
        YCbCr output upsampled; then fused with the input if the options have a fusion.
        Returned in the input's type (:func:`sdk.images.encode`), with its alpha.
    """
    source, options = job.source, job.options
    if options.pad:
        p = options.pad
        output = output[:, p:-p, p:-p]
    if options.saturation != 1.0:  # chroma is linear through both upsamplings: scale it at the working size
        output = np.concatenate([output[:1], output[1:] * np.float32(options.saturation)])
    if options.task == "colorize":
        rgb = colour_onto_luma(source.luma, output[1:], workers)
    else:
        rgb = ycbcr_small_to_rgb(output, source.size, workers)
    if options.fusion is not None:
        rgb = fuse_rgb(source.rgb_or_gray(), rgb, options.fusion, workers)
    return encode(rgb, source)
