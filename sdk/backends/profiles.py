"""Shape profiles for TensorRT: which working shapes an engine must cover, and how it covers them.

Pure logic, no TensorRT: ``python -m export trt`` builds engines from these profiles, the native
``tensorrt`` backend and the ONNX Runtime TensorRT provider turn them into
:class:`~sdk.backends.Capabilities` and provider options, and the tests check them without a GPU.

The pipeline's working shapes have the long side ``work_size`` and the short side a multiple of
``size_multiple`` (:func:`sdk.resample.work_shape`): 15 shapes at 256 / 32. Stylize runs at its own
shapes when the manifest pads it (``style_pad``: 2 x 32 px more on every side for the bundled model,
so up to 320x320); :func:`manifest_shapes` lists both sets and :func:`run_side` bounds them. Two ways to cover
them:

- **one dynamic profile** (the default): batch 1..max, H and W from ``multiple`` to the long side.
  Every working shape runs as it is; kernels are timed at the ``opt`` shape and reused for the
  others.
- **buckets**: one profile per fixed (H, W); the pipeline pads each working shape to the smallest
  bucket that holds it (replicate padding, output cropped). Each profile gets kernels timed for
  exactly its shape, but the padding is computed for nothing, and every profile adds build time
  and engine size.

Why dynamic is the default (reasoned, not measured on a GPU: none was available, README "GPU"):
:func:`padding_overhead` over the working shapes of the 198 photos in ``photos/val`` (98 at
160x256, 43 at 192x256, 33 at 256x160...) gives +48 % pixels for one 256x256 bucket, +13 % for
three (256x256, 192x256, 256x192) and +0.8 % for five (adding 160x256, 256x160). Five buckets
would cost 5x the tactic timing at build time, a larger engine and a profile switch per call, to
win back TensorRT's dynamic-shape penalty (kernels chosen for the ``opt`` shape); one dynamic
profile pads nothing and builds once. ``python -m export trt --shapes 256x256,160x256,256x160,
192x256,256x192`` builds the buckets instead, for a GPU where they measure faster.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from sdk.backends import Capabilities, Shape
from sdk.errors import BackendUnavailableError, InvalidArgumentError
from sdk.manifest import ShapeProfile

DEFAULT_MAX_BATCH = 8
"""Folder jobs send 8 images per call (``chromaforge --batch-size``); engines cover 1..8 by default."""


def working_shapes(work_size: int, multiple: int, pad: int = 0) -> tuple[Shape, ...]:
    """Every (h, w) :func:`sdk.resample.work_shape` can return for a model, square first, each
    side grown by ``2 * pad`` (stylize's reflect padding, the manifest's ``style_pad``).

    Example:
        >>> working_shapes(64, 32)
        ((64, 64), (32, 64), (64, 32))
        >>> working_shapes(64, 32, pad=32)
        ((128, 128), (96, 128), (128, 96))
    """
    if work_size < 1 or multiple < 1 or pad < 0:
        raise InvalidArgumentError(f"work_size {work_size}, multiple {multiple} and pad {pad}: expected integers >= 1 (pad >= 0)")
    long = max(multiple, int(math.floor(work_size / multiple + 0.5)) * multiple)
    shorts = range(long - multiple, 0, -multiple)
    shapes = ((long, long),) + tuple((s, long) for s in shorts) + tuple((long, s) for s in shorts)
    return tuple((h + 2 * pad, w + 2 * pad) for h, w in shapes)


def manifest_shapes(manifest) -> tuple[Shape, ...]:
    """Every shape the pipeline runs a model's generator at: colorize's working shapes, then
    stylize's (its own working size and padding, when the manifest sets them), without repeats.

    Example:
        >>> from sdk.manifest import default_model_dir, load_manifest
        >>> len(manifest_shapes(load_manifest(default_model_dir())))  # bundled: 15 at 256, 15 at 256 + 2 x 32
        30
    """
    m = manifest.size_multiple
    return tuple(dict.fromkeys(working_shapes(manifest.work_size, m) + working_shapes(manifest.stylize_size, m, manifest.style_pad)))


def run_side(manifest) -> int:
    """The longest side the generator runs at for a model (of :func:`manifest_shapes`): what a
    dynamic profile must reach (320 for the bundled model: 256 plus stylize's 2 x 32)."""
    return max(max(shape) for shape in manifest_shapes(manifest))


def dynamic_profile(work_size: int, multiple: int, max_batch: int = DEFAULT_MAX_BATCH) -> ShapeProfile:
    """One profile for every working shape: ``luma`` [1..max_batch, 1, multiple..L, multiple..L].

    ``opt`` is the largest shape at the largest batch: tactics are timed where the time goes (small
    batches of this network are launch-bound, not kernel-bound).

    Example:
        >>> dynamic_profile(256, 32, 8)
        ShapeProfile(min=(1, 1, 32, 32), opt=(8, 1, 256, 256), max=(8, 1, 256, 256))
    """
    _check_batch(max_batch)
    long = working_shapes(work_size, multiple)[0][0]
    return ShapeProfile((1, 1, multiple, multiple), (max_batch, 1, long, long), (max_batch, 1, long, long))


def bucket_profiles(shapes: Iterable[Shape], max_batch: int = DEFAULT_MAX_BATCH) -> tuple[ShapeProfile, ...]:
    """One profile per fixed (h, w), batch 1..max_batch, in the order given (duplicates dropped).

    Example:
        >>> bucket_profiles([(256, 256)], 4)
        (ShapeProfile(min=(1, 1, 256, 256), opt=(4, 1, 256, 256), max=(4, 1, 256, 256)),)
    """
    _check_batch(max_batch)
    out: list[ShapeProfile] = []
    for h, w in dict.fromkeys(tuple(map(int, s)) for s in shapes):
        if h < 1 or w < 1:
            raise InvalidArgumentError(f"bucket {h}x{w}: expected positive sides")
        out.append(ShapeProfile((1, 1, h, w), (max_batch, 1, h, w), (max_batch, 1, h, w)))
    if not out:
        raise InvalidArgumentError("no bucket shapes given; pass at least one HxW, or use the dynamic profile")
    return tuple(out)


def parse_shapes(text: str) -> tuple[Shape, ...]:
    """``"256x256,192x256"`` -> ((256, 256), (192, 256)).

    Raises:
        InvalidArgumentError: a part is not ``HxW`` with positive integers.
    """
    shapes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            h, w = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise InvalidArgumentError(f"shape {part!r}: expected HxW such as 192x256 (comma-separated for several)") from None
        if h < 1 or w < 1:
            raise InvalidArgumentError(f"shape {part!r}: expected positive sides")
        shapes.append((h, w))
    if not shapes:
        raise InvalidArgumentError(f"no shapes in {text!r}; expected HxW[,HxW...] such as 256x256,192x256,256x192")
    return tuple(shapes)


def check_coverage(profiles: Sequence[ShapeProfile], work_size: int, multiple: int, extra: Iterable[Shape] = ()) -> list[Shape]:
    """The working shapes no profile holds (empty when the engine covers the pipeline).

    A working shape is held when some profile accepts it as it is, or (buckets) after padding up.
    ``extra``: further shapes to cover (stylize's, from :func:`manifest_shapes`).
    """
    caps = capabilities(profiles, multiple=multiple)
    missing = []
    for shape in dict.fromkeys(working_shapes(work_size, multiple) + tuple(map(tuple, extra))):
        try:
            caps.run_shape(shape)
        except BackendUnavailableError:  # outside every bucket, or beyond the range
            missing.append(shape)
    return missing


def is_dynamic(profile: ShapeProfile) -> bool:
    """Whether a profile's H or W is a range (not one fixed bucket)."""
    return tuple(profile.min[2:]) != tuple(profile.max[2:])


def capabilities(profiles: Sequence[ShapeProfile], input_dtype: str = "float32", precision: str = "fp32", multiple: int = 1) -> Capabilities:
    """What an engine with these profiles accepts, for :func:`sdk.stages.infer`.

    One dynamic profile -> a range (``min_shape``/``max_shape``, sides multiples of ``multiple``);
    fixed-shape profiles -> ``buckets``. ``max_batch`` is the smallest profile maximum.

    Raises:
        InvalidArgumentError: no profiles, a profile whose batch does not start at 1, or several
            profiles of which one is dynamic (rebuild with one dynamic profile or buckets only).

    Example:
        >>> capabilities([dynamic_profile(256, 32)], multiple=32).max_shape
        (256, 256)
    """
    if not profiles:
        raise InvalidArgumentError("the engine lists no shape profiles; rebuild it with `python -m export trt`")
    for p in profiles:
        if p.min[0] != 1:
            raise InvalidArgumentError(f"profile {p} starts at batch {p.min[0]}; the pipeline sends batches from 1: rebuild with `python -m export trt`")
    max_batch = min(p.max[0] for p in profiles)
    if len(profiles) == 1 and is_dynamic(profiles[0]):
        p = profiles[0]
        return Capabilities(input_dtype=input_dtype, precision=precision, max_batch=max_batch,
                            min_shape=(p.min[2], p.min[3]), max_shape=(p.max[2], p.max[3]), multiple=multiple)
    if any(is_dynamic(p) for p in profiles):
        raise InvalidArgumentError(f"{len(profiles)} profiles with a dynamic one among them; the pipeline expects one dynamic profile "
                                   "or fixed-shape buckets: rebuild with `python -m export trt` (with or without --shapes)")
    return Capabilities(input_dtype=input_dtype, precision=precision, max_batch=max_batch,
                        buckets=tuple((p.max[2], p.max[3]) for p in profiles))


def profile_index(profiles: Sequence[ShapeProfile], batch: int, shape: Shape) -> int:
    """The first profile that accepts ``batch`` images of ``shape`` exactly.

    Raises:
        InvalidArgumentError: none does (the pipeline pads to the declared capabilities first, so
            this means the capabilities and the engine disagree).
    """
    n, (h, w) = batch, shape
    for i, p in enumerate(profiles):
        if p.min[0] <= n <= p.max[0] and p.min[2] <= h <= p.max[2] and p.min[3] <= w <= p.max[3]:
            return i
    raise InvalidArgumentError(f"no engine profile accepts batch {n} at {h}x{w}; profiles: {list(profiles)}")


def ort_trt_profile_options(profile: ShapeProfile, input_names: Sequence[str], n_styles: int) -> dict[str, str]:
    """ONNX Runtime TensorRT provider options for one explicit profile, every dynamic input listed.

    Format ``"name:d0xd1...,name2:..."`` as documented for ``trt_profile_min_shapes`` /
    ``_opt_`` / ``_max_`` (onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html).

    Example:
        >>> ort_trt_profile_options(dynamic_profile(256, 32, 8), ("luma", "style"), 5)["trt_profile_max_shapes"]
        'luma:8x1x256x256,style:8x5'
    """
    luma, style = input_names[0], input_names[1]

    def fmt(dims: Sequence[int]) -> str:
        return f"{luma}:{'x'.join(map(str, dims))},{style}:{dims[0]}x{n_styles}"

    return {"trt_profile_min_shapes": fmt(profile.min), "trt_profile_opt_shapes": fmt(profile.opt),
            "trt_profile_max_shapes": fmt(profile.max)}


def parse_ort_profile(text: str, name: str) -> tuple[int, ...]:
    """The dims of input ``name`` in an ONNX Runtime TensorRT profile option string.

    Raises:
        InvalidArgumentError: ``name`` is not listed or its dims are not integers.

    Example:
        >>> parse_ort_profile("luma:8x1x256x256,style:8x5", "luma")
        (8, 1, 256, 256)
    """
    for part in text.split(","):
        key, _, dims = part.strip().rpartition(":")
        if key == name:
            try:
                return tuple(int(d) for d in dims.split("x"))
            except ValueError:
                break
    raise InvalidArgumentError(f"profile option {text!r} has no dims for input {name!r}; expected 'name:d0xd1x...,...'")


def padding_overhead(shapes: Iterable[Shape], caps: Capabilities) -> float:
    """Extra pixels computed when ``shapes`` run at ``caps.run_shape``: sum(run) / sum(own) - 1.

    Example:
        >>> round(padding_overhead([(192, 256)], Capabilities(buckets=((256, 256),))), 4)
        0.3333
    """
    own = run = 0
    for s in shapes:
        h, w = caps.run_shape(s)
        own += s[0] * s[1]
        run += h * w
    if own == 0:
        raise InvalidArgumentError("padding_overhead needs at least one shape")
    return run / own - 1.0


def _check_batch(max_batch: int) -> None:
    if not isinstance(max_batch, int) or max_batch < 1:
        raise InvalidArgumentError(f"max batch is {max_batch!r}; expected an integer >= 1")
