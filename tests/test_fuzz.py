"""Property-based fuzzing (Hypothesis) of the SDK's input boundary.

Every property asserts the SDK's contract for arbitrary input: **a correct result of the input's
type and size, or an ``sdk.errors`` exception** (never another exception, a crash or a silent
wrong answer). Inputs: bytes of every format Pillow writes here (whole, truncated, bit-flipped,
spliced, with bytes inserted or deleted), arrays of any dtype / shape / strides / values, PIL
images of every mode, style and fusion options, and ``sdk.load`` arguments.

Budget: a few dozen cases per property in CI (well under a minute on the tiny model, derandomised
so CI is reproducible). A long run::

    CHROMAFORGE_FUZZ_EXAMPLES=10000 OMP_NUM_THREADS=1 python -m pytest tests/test_fuzz.py -q -p no:cacheprovider

runs that many cases per property (``sdk.load`` arguments: a tenth, each builds a session), with
a random seed (printed on failure, with the shrunk input).
"""

from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps

import sdk
from sdk import tiling
from sdk.errors import ChromaforgeError
from sdk.fusion import FUSE_METHODS

LONG = int(os.environ.get("CHROMAFORGE_FUZZ_EXAMPLES", "0"))

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:PIL"),  # damaged TIFF tags and the like
              pytest.mark.filterwarnings("ignore::DeprecationWarning:PIL")]  # Pillow's IM plugin is deprecated


def budget(ci: int, share: float = 1.0):
    """Hypothesis settings: ``ci`` cases in CI, ``CHROMAFORGE_FUZZ_EXAMPLES * share`` in a long run."""
    return settings(max_examples=max(1, int(LONG * share)) if LONG else ci, deadline=None, database=None,
                    derandomize=not LONG, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


MAX_PIXELS = 256 * 256
"""The fuzz pipeline's pixel limit: a mutated header may claim any size; decoding stays fast."""


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    p = sdk.load(tiny_model_dir, backend="onnxruntime-cpu", threads=1, max_pixels=MAX_PIXELS)
    yield p
    p.close()


# ----------------------------------------------------------------------------------------- bytes
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
SKIP_FORMATS = {"PDF"}  # write-only in Pillow


def _writable() -> list[tuple[str, str]]:
    """(format, mode) pairs Pillow can encode here (every SAVE plugin, every mode it accepts)."""
    Image.init()
    rng = np.random.default_rng(0)
    pairs = []
    for fmt in sorted(Image.SAVE):
        if fmt in SKIP_FORMATS:
            continue
        for mode in MODES:
            im = _image(mode, 8, 6, rng)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    im.save(io.BytesIO(), format=fmt)
            except Exception:
                continue
            pairs.append((fmt, mode))
    return pairs


def _image(mode: str, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A PIL image of ``mode`` with random content."""
    n = len(Image.new(mode, (w, h)).tobytes())
    if mode == "F":
        return Image.fromarray(rng.random((h, w), dtype=np.float32), "F")
    return Image.frombytes(mode, (w, h), rng.integers(0, 256, n, dtype=np.uint8).tobytes())


WRITABLE = _writable()


@st.composite
def encoded_images(draw) -> tuple[bytes, bool]:
    """Bytes of a random small image in a random writable format, maybe damaged; (data, damaged)."""
    def one() -> bytes:
        fmt, mode = draw(st.sampled_from(WRITABLE))
        w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        im = _image(mode, w, h, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                im.save(buf, format=fmt)
            except Exception:  # a size this encoder refuses (e.g. ICO, DDS limits): plain PNG instead
                buf = io.BytesIO()
                im.save(buf, format="PNG")
        return buf.getvalue()

    data = bytearray(one())
    damage = draw(st.sampled_from(["none", "truncate", "flip", "splice", "insert", "delete"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif damage == "splice":
        other = one()
        data = data[:draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))):]
    elif damage == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    elif damage == "delete":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + data[at + draw(st.integers(1, 64)):]
    return bytes(data), damage != "none"


def _expected_size(data: bytes) -> tuple[int, int] | None:
    """(w, h) Pillow reports for the bytes, after EXIF orientation; None if it cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            im.load()
            return ImageOps.exif_transpose(im).size
    except Exception:
        return None


@budget(ci=60)
@given(case=encoded_images(), task=st.sampled_from(["colorize", "stylize"]))
def test_fuzz_encoded_bytes(pipe, case, task):
    data, damaged = case
    try:
        out = pipe.colorize(data) if task == "colorize" else pipe.stylize(data, "rococo")
    except ChromaforgeError:
        return
    assert isinstance(out, bytes)
    im = Image.open(io.BytesIO(out))
    assert im.format == "PNG" and im.mode in ("RGB", "RGBA")
    size = _expected_size(data)
    if size is not None:
        assert im.size == size


def test_every_writable_format_is_fuzzed():
    """The format list is not accidentally empty: the common formats and modes are all in it."""
    formats = {f for f, _ in WRITABLE}
    assert {"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"} <= formats
    assert {m for f, m in WRITABLE if f == "TIFF"} >= {"L", "RGB", "RGBA", "I;16", "F"}


# ---------------------------------------------------------------------------------------- arrays
LAYOUTS = ["asis", "transpose", "reversed", "step", "fortran", "broadcast", "channel-slice"]


@st.composite
def hostile_arrays(draw) -> np.ndarray:
    dtype = draw(st.one_of(hnp.scalar_dtypes(), st.just(np.dtype(object)), st.sampled_from([np.dtype(np.uint8)] * 3 + [np.dtype(np.float32)] * 2)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=20))
    if dtype == np.dtype(object):
        arr = np.empty(shape, object)
        arr.fill(draw(st.one_of(st.none(), st.integers(), st.text(max_size=3))))
    elif np.issubdtype(dtype, np.floating) and draw(st.booleans()):
        arr = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=dtype.itemsize * 8 if dtype.itemsize <= 8 else 64)))
    else:
        arr = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "transpose" and arr.ndim >= 2:
        arr = arr.swapaxes(0, 1)
    elif layout == "reversed" and arr.ndim >= 1:
        arr = arr[::-1]
    elif layout == "step" and arr.ndim >= 2:
        arr = arr[::2, ::-3]
    elif layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "broadcast" and arr.ndim >= 1 and arr.shape[0] >= 1:
        arr = np.broadcast_to(arr[:1], (draw(st.integers(1, 30)),) + arr.shape[1:])
    elif layout == "channel-slice" and arr.ndim == 3:
        arr = arr[:, :, ::-1]
    return arr


@budget(ci=150)
@given(arr=hostile_arrays(), task=st.sampled_from(["colorize", "stylize", "fuse"]))
def test_fuzz_arrays(pipe, arr, task):
    try:
        if task == "colorize":
            out = pipe.colorize(arr)
        elif task == "stylize":
            out = pipe.stylize(arr, "ukiyoe")
        else:
            out = pipe.fuse(arr, arr)
    except ChromaforgeError:
        return
    a = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    assert isinstance(out, np.ndarray)
    channels = 4 if a.ndim == 3 and a.shape[2] == 4 else 3
    assert out.shape == a.shape[:2] + (channels,)
    if arr.dtype == np.uint8:
        assert out.dtype == np.uint8
        if channels == 4:
            np.testing.assert_array_equal(out[:, :, 3], a[:, :, 3])  # alpha carried through
    else:
        assert np.issubdtype(arr.dtype, np.floating) and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


# ------------------------------------------------------------------------------------- PIL modes
PIL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
             "I", "I;16", "I;16L", "I;16B", "I;16N", "F"]


@budget(ci=60)
@given(mode=st.sampled_from(PIL_MODES), w=st.integers(1, 40), h=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       task=st.sampled_from(["colorize", "stylize"]))
def test_fuzz_pil_modes(pipe, mode, w, h, seed, task):
    im = _image(mode, w, h, np.random.default_rng(seed))
    try:
        out = pipe.colorize(im) if task == "colorize" else pipe.stylize(im, "pointillism")
    except ChromaforgeError:
        return
    assert isinstance(out, Image.Image) and out.size == (w, h) and out.mode in ("RGB", "RGBA")


# --------------------------------------------------------------------------------------- options
NAMES = ["natural", "ukiyoe", "impressionism", "pointillism", "rococo"]
ANY_NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**1100, 2**1100),
                       st.floats(0, 3.4e38), st.sampled_from([0, 1, 1e39, 3e38, 1.7e308, 5e-324, -0.0, True]))
ANY_VALUE = st.one_of(ANY_NUMBER, st.text(max_size=4), st.none(), st.lists(st.integers(), max_size=2))
STYLES = st.one_of(st.sampled_from(NAMES), st.text(max_size=8), st.none(), st.integers(),
                   st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=5), st.integers()), ANY_VALUE, max_size=5),
                   st.lists(st.sampled_from(NAMES), max_size=2))
SMALL = np.random.default_rng(2).integers(0, 256, (24, 40), dtype=np.uint8)


@budget(ci=120)
@given(style=STYLES, strength=ANY_VALUE)
def test_fuzz_style_options(pipe, style, strength):
    try:
        out = pipe.stylize(SMALL, style, strength)
    except ChromaforgeError:
        return
    assert isinstance(out, np.ndarray) and out.shape == SMALL.shape + (3,) and out.dtype == np.uint8
    vec = pipe.style_vector(style, strength)
    assert np.isfinite(vec).all() and (vec >= 0).all() and math.isclose(float(vec.sum()), 1.0, rel_tol=1e-5)


@budget(ci=120)
@given(method=st.one_of(st.sampled_from(FUSE_METHODS), ANY_VALUE),
       detail=ANY_VALUE, detail_levels=st.one_of(st.integers(-3, 40), ANY_VALUE), levels=st.one_of(st.integers(-3, 40), ANY_VALUE),
       weight=ANY_VALUE, workers=st.one_of(st.none(), st.integers(-2, 10**7), ANY_VALUE))
def test_fuzz_fuse_options(method, detail, detail_levels, levels, weight, workers):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a capped thread count warns
            out = sdk.fuse(SMALL, SMALL[::-1], method, detail, detail_levels, levels, weight, workers=workers)
    except ChromaforgeError:
        return
    assert isinstance(out, np.ndarray) and out.shape == SMALL.shape + (3,) and out.dtype == np.uint8


@budget(ci=12, share=0.1)
@given(threads=st.one_of(st.none(), st.integers(-5, 10**13), ANY_VALUE),
       max_pixels=st.one_of(st.none(), st.integers(-5, 10**13), ANY_VALUE),
       max_batch=st.one_of(st.integers(-5, 100), ANY_VALUE), backend=st.one_of(st.just("onnxruntime-cpu"), ANY_VALUE))
def test_fuzz_load_arguments(tiny_model_dir, threads, max_pixels, max_batch, backend):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = sdk.load(tiny_model_dir, backend=backend, threads=threads, max_pixels=max_pixels, max_batch=max_batch)
    except ChromaforgeError:
        return
    with p:
        assert 1 <= p.workers <= tiling.max_threads()
        try:
            out = p.colorize(SMALL)
        except ChromaforgeError:  # max_pixels below the image's 960 pixels
            assert p.max_pixels is not None and p.max_pixels < SMALL.size
            return
        assert out.shape == SMALL.shape + (3,)
