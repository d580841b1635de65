"""Every typed error in sdk.errors: raised where documented, an instance of the documented built-in,
and with a message that says what was expected (or lists the valid choices)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import sdk
from conftest import edit_manifest
from sdk import errors
from sdk.errors import (
    BackendUnavailableError,
    ChromaforgeError,
    EngineMismatchError,
    ImageFormatError,
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
    InvalidVideoError,
    ModelCorruptError,
    ModelNotFoundError,
    OutputExistsError,
    OutputWriteError,
    UnknownStyleError,
)

DOCUMENTED_BUILTINS = {
    InvalidImageError: ValueError,
    ImageFormatError: ValueError,
    ImageTooLargeError: ValueError,
    UnknownStyleError: KeyError,
    ModelNotFoundError: FileNotFoundError,
    ModelCorruptError: ValueError,
    BackendUnavailableError: RuntimeError,
    EngineMismatchError: RuntimeError,
    OutputExistsError: FileExistsError,
    OutputWriteError: OSError,
    InvalidArgumentError: ValueError,
    InvalidVideoError: ValueError,
}

IMG = np.full((16, 24), 128, np.uint8)


def check(excinfo, builtin, *needles: str) -> str:
    """The caught error is a ChromaforgeError and ``builtin``; its message holds every needle."""
    e = excinfo.value
    assert isinstance(e, ChromaforgeError)
    assert isinstance(e, builtin)
    msg = str(e)
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in message {msg!r}"
    return msg


# ------------------------------------------------------------------------------------ hierarchy
def test_every_error_class_is_documented_here():
    """Each ChromaforgeError subclass in sdk.errors has a documented built-in base (a new one fails)."""
    found = {c for _, c in inspect.getmembers(errors, inspect.isclass)
             if issubclass(c, ChromaforgeError) and c is not ChromaforgeError}
    assert found == set(DOCUMENTED_BUILTINS)


@pytest.mark.parametrize("cls", list(DOCUMENTED_BUILTINS), ids=lambda c: c.__name__)
def test_error_derives_from_documented_builtin(cls):
    """Each typed error derives from ChromaforgeError and from the built-in callers expect."""
    assert issubclass(cls, ChromaforgeError)
    assert issubclass(cls, DOCUMENTED_BUILTINS[cls])


def test_image_format_error_is_invalid_image_error():
    """ImageFormatError is a kind of InvalidImageError (one except clause catches both)."""
    assert issubclass(ImageFormatError, InvalidImageError)


# ------------------------------------------------------------------------------------- images
def test_missing_path(tiny_pipeline, tmp_path):
    """A path to no file raises InvalidImageError (a ValueError) naming the path."""
    missing = tmp_path / "nope.png"
    for src in (str(missing), missing):
        with pytest.raises(InvalidImageError) as ei:
            tiny_pipeline.colorize(src)
        check(ei, ValueError, "nope.png", "existing image path")


def test_text_file_as_image(tiny_pipeline, tmp_path):
    """A text file given as an image raises InvalidImageError saying which formats are expected."""
    f = tmp_path / "notes.png"
    f.write_text("this is not an image\n")
    with pytest.raises(InvalidImageError) as ei:
        tiny_pipeline.colorize(f)
    check(ei, ValueError, "not a readable image", "expected", "PNG")


def test_random_bytes(tiny_pipeline):
    """Random non-image bytes raise InvalidImageError."""
    data = np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidImageError) as ei:
        tiny_pipeline.colorize(data)
    check(ei, ValueError, "bytes", "expected")


@pytest.mark.parametrize("empty", [b"", bytearray()], ids=["bytes", "bytearray"])
def test_empty_bytes(tiny_pipeline, empty):
    """Empty bytes raise InvalidImageError saying an encoded image was expected."""
    with pytest.raises(InvalidImageError) as ei:
        tiny_pipeline.colorize(empty)
    check(ei, ValueError, "empty", "expected an encoded image")


@pytest.mark.parametrize("value", [42, 3.5, None, {"a": 1}], ids=["int", "float", "None", "dict"])
def test_unsupported_type(tiny_pipeline, value):
    """A value of an unsupported type raises InvalidImageError naming the type and the accepted ones."""
    with pytest.raises(InvalidImageError) as ei:
        tiny_pipeline.colorize(value)
    check(ei, ValueError, type(value).__name__, "expected", "numpy array")


def test_list_of_ints_is_a_batch_of_bad_items(tiny_pipeline):
    """A list is a batch: a list of ints fails on item 0 and says so."""
    with pytest.raises(InvalidImageError) as ei:
        tiny_pipeline.colorize([1, 2, 3])
    check(ei, ValueError, "image[0]", "int", "expected")


def test_bad_item_in_batch_is_named(tiny_pipeline):
    """The message names the index of the bad item in a batch."""
    with pytest.raises(ImageFormatError) as ei:
        tiny_pipeline.colorize([IMG, IMG, np.zeros((4, 4, 2), np.uint8)])
    check(ei, ValueError, "image[2]")


def test_empty_list(tiny_pipeline):
    """An empty batch raises InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError) as ei:
        tiny_pipeline.colorize([])
    check(ei, ValueError, "empty list")


@pytest.mark.parametrize(
    "shape",
    [(8, 8, 2), (8, 8, 5), (1, 8, 8, 3), (8,), (0, 8), (8, 0), (0, 8, 3)],
    ids=["HxWx2", "HxWx5", "4-D", "1-D", "0xN", "Nx0", "0xNx3"],
)
def test_bad_array_shapes(tiny_pipeline, shape):
    """Arrays of unsupported shapes raise ImageFormatError (an InvalidImageError and ValueError)."""
    with pytest.raises(ImageFormatError) as ei:
        tiny_pipeline.colorize(np.zeros(shape, np.uint8))
    check(ei, ValueError, "shape", "expected")
    assert isinstance(ei.value, InvalidImageError)


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.uint16, np.int8, np.complex64])
def test_bad_dtypes(tiny_pipeline, dtype):
    """Arrays of a dtype other than uint8 or float raise ImageFormatError naming the dtype."""
    with pytest.raises(ImageFormatError) as ei:
        tiny_pipeline.colorize(np.zeros((8, 8), dtype))
    check(ei, ValueError, "dtype", np.dtype(dtype).name, "expected uint8")


@pytest.mark.parametrize("bad", [1.5, -0.2, 255.0], ids=["above", "below", "0..255"])
def test_float_out_of_range(tiny_pipeline, bad):
    """Float arrays outside [0, 1] raise ImageFormatError saying [0, 1] was expected."""
    arr = np.full((8, 8, 3), 0.5, np.float32)
    arr[3, 3, 1] = bad
    with pytest.raises(ImageFormatError) as ei:
        tiny_pipeline.colorize(arr)
    check(ei, ValueError, "expected [0, 1]")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_float_not_finite(tiny_pipeline, bad):
    """Float arrays with NaN or infinity raise ImageFormatError."""
    arr = np.full((8, 8), 0.5, np.float64)
    arr[0, 0] = bad
    with pytest.raises(ImageFormatError) as ei:
        tiny_pipeline.colorize(arr)
    check(ei, ValueError, "NaN or infinity", "expected finite")


def test_fuse_names_the_bad_argument():
    """fuse says whether the content or the stylized input is bad."""
    with pytest.raises(ImageFormatError) as ei:
        sdk.fuse(IMG, np.zeros((4, 4, 2), np.uint8))
    check(ei, ValueError, "stylized")
    with pytest.raises(InvalidImageError) as ei:
        sdk.fuse(b"", IMG)
    check(ei, ValueError, "content")


# ------------------------------------------------------------------------------------- styles
def test_unknown_style_lists_valid_styles(tiny_pipeline):
    """An unknown style raises UnknownStyleError (a KeyError) whose message lists the valid styles."""
    with pytest.raises(UnknownStyleError) as ei:
        tiny_pipeline.stylize(IMG, "cubism")
    msg = check(ei, KeyError, "cubism", "valid styles", *tiny_pipeline.styles())
    assert msg.startswith("unknown style")  # not quoted like a plain KeyError


def test_unknown_style_in_blend(tiny_pipeline):
    """A blend with an unknown name raises UnknownStyleError naming it."""
    with pytest.raises(UnknownStyleError) as ei:
        tiny_pipeline.stylize(IMG, {"ukiyoe": 0.5, "cubism": 0.5})
    check(ei, KeyError, "cubism", "rococo")


@pytest.mark.parametrize(
    "blend",
    [{"ukiyoe": -0.1}, {"ukiyoe": math.nan}, {"ukiyoe": math.inf}, {"ukiyoe": "1"}, {"ukiyoe": None}],
    ids=["negative", "nan", "inf", "str", "None"],
)
def test_bad_style_weight(tiny_pipeline, blend):
    """Negative, non-finite or non-numeric weights raise InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError) as ei:
        tiny_pipeline.stylize(IMG, blend)
    check(ei, ValueError, "ukiyoe", "expected a finite number >= 0")


@pytest.mark.parametrize("blend", [{"ukiyoe": 0, "rococo": 0.0}, {}], ids=["zeros", "empty"])
def test_all_zero_weights(tiny_pipeline, blend):
    """Weights that sum to 0 raise InvalidArgumentError asking for a positive weight."""
    with pytest.raises(InvalidArgumentError) as ei:
        tiny_pipeline.stylize(IMG, blend)
    check(ei, ValueError, "sum to 0", "positive weight")


@pytest.mark.parametrize("strength", [-0.01, 1.01, math.nan, "1"])
def test_bad_strength(tiny_pipeline, strength):
    """Strength outside [0, 1] (or not a number) raises InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError) as ei:
        tiny_pipeline.stylize(IMG, "ukiyoe", strength=strength)
    check(ei, ValueError, "strength", "expected a number in [0, 1]")


@pytest.mark.parametrize("saturation", [-0.01, 2.01, math.nan, "1", True])
def test_bad_saturation(tiny_pipeline, saturation):
    """Saturation outside [0, 2] (or not a number) raises InvalidArgumentError before any image is read."""
    for call in (lambda: tiny_pipeline.colorize(IMG, saturation=saturation),
                 lambda: tiny_pipeline.stylize([], "ukiyoe", saturation=saturation)):
        with pytest.raises(InvalidArgumentError) as ei:
            call()
        check(ei, ValueError, "saturation", "expected a number in [0, 2]")


def test_bad_style_type(tiny_pipeline):
    """A style that is neither a name nor a mapping raises InvalidArgumentError with examples."""
    with pytest.raises(InvalidArgumentError) as ei:
        tiny_pipeline.stylize(IMG, ["ukiyoe"])
    check(ei, ValueError, "expected a name")


# --------------------------------------------------------------------------------------- fusion
def test_unknown_fuse_method():
    """An unknown fusion method raises InvalidArgumentError listing the methods."""
    with pytest.raises(InvalidArgumentError) as ei:
        sdk.fuse(IMG, IMG, method="poisson")
    check(ei, ValueError, "poisson", "expected one of", "laplacian", "weighted", "luminance")


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(detail=-0.1), "detail"),
        (dict(detail=1.5), "detail"),
        (dict(detail=math.nan), "detail"),
        (dict(weight=2.0), "weight"),
        (dict(weight=-1), "weight"),
        (dict(detail_levels=0), "detail_levels"),
        (dict(levels=0), "levels"),
        (dict(levels=2.5), "levels"),
        (dict(detail_levels="2"), "detail_levels"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_fuse_parameter_out_of_range(kwargs, needle):
    """Out-of-range fusion parameters raise InvalidArgumentError naming the parameter."""
    with pytest.raises(InvalidArgumentError) as ei:
        sdk.fuse(IMG, IMG, **kwargs)
    check(ei, ValueError, needle, "expected")


def test_pipeline_fuse_validates_too(tiny_pipeline):
    """Pipeline.fuse applies the same checks as sdk.fuse."""
    with pytest.raises(InvalidArgumentError):
        tiny_pipeline.fuse(IMG, IMG, method="laplacian", detail=2)


# --------------------------------------------------------------------------------------- models
def test_model_copy_loads(model_copy):
    """Sanity: the undamaged copy loads, so the failures below come from the damage."""
    assert sdk.load(model_copy, backend="onnxruntime-cpu", threads=1).styles()[0] == "natural"


def test_missing_model_folder(tmp_path):
    """A model folder that does not exist raises ModelNotFoundError (a FileNotFoundError)."""
    with pytest.raises(ModelNotFoundError) as ei:
        sdk.load(tmp_path / "no_such_model", backend="onnxruntime-cpu")
    check(ei, FileNotFoundError, "no_such_model", "does not exist", "python -m export onnx")


def test_folder_without_manifest(tmp_path):
    """A folder without manifest.json raises ModelNotFoundError saying what folder was expected."""
    with pytest.raises(ModelNotFoundError) as ei:
        sdk.load(tmp_path, backend="onnxruntime-cpu")
    check(ei, FileNotFoundError, "manifest.json", "expected")


def test_invalid_json_manifest(model_copy):
    """A manifest that is not JSON raises ModelCorruptError (a ValueError)."""
    (model_copy / "manifest.json").write_text("{ not json")
    with pytest.raises(ModelCorruptError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu")
    check(ei, ValueError, "not valid JSON", "re-export")


def test_binary_manifest(model_copy):
    """A manifest that is not even text raises ModelCorruptError."""
    (model_copy / "manifest.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ModelCorruptError):
        sdk.load(model_copy, backend="onnxruntime-cpu")


@pytest.mark.parametrize("field", ["styles", "sha256", "io", "model_file", "work_size", "size_multiple", "color_space"])
def test_manifest_missing_field(model_copy, field):
    """A manifest lacking a required field raises ModelCorruptError naming the field."""
    edit_manifest(model_copy, lambda raw: raw.pop(field))
    with pytest.raises(ModelCorruptError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu")
    check(ei, ValueError, field, "re-export")


def test_manifest_mangled_field(model_copy):
    """A field of the wrong type (work_size 'big') raises ModelCorruptError naming the field, the value and what was expected."""
    edit_manifest(model_copy, lambda raw: raw.update(work_size="big"))
    with pytest.raises(ModelCorruptError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu")
    check(ei, ValueError, 'work_size "big" (a JSON string)', "expected an integer", "re-export")


def test_wrong_colour_space(model_copy):
    """A manifest naming another colour space raises ModelCorruptError naming the one implemented."""
    edit_manifest(model_copy, lambda raw: raw["color_space"].update(name="lab-d65"))
    with pytest.raises(ModelCorruptError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu")
    check(ei, ValueError, "lab-d65", "ycbcr-bt601-full")


def test_newer_manifest_version(model_copy):
    """A manifest from a newer format version raises ModelCorruptError asking to upgrade."""
    edit_manifest(model_copy, lambda raw: raw.update(manifest_version=99))
    with pytest.raises(ModelCorruptError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu")
    check(ei, ValueError, "99", "upgrade")


def test_model_file_missing(model_copy):
    """A manifest whose model file is missing raises ModelNotFoundError naming the file."""
    (model_copy / "model.onnx").unlink()
    with pytest.raises(ModelNotFoundError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu")
    check(ei, FileNotFoundError, "model.onnx", "missing")


def test_checksum_mismatch(model_copy):
    """One flipped byte in model.onnx raises ModelCorruptError (checksum mismatch)."""
    f = model_copy / "model.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelCorruptError) as ei:
        sdk.load(model_copy, backend="onnxruntime-cpu")
    check(ei, ValueError, "sha256", "expects", "re-export")


def test_unloadable_model_without_verification(model_copy):
    """With verify=False, a model file ONNX Runtime cannot parse still raises ModelCorruptError."""
    (model_copy / "model.onnx").write_bytes(b"definitely not a protobuf" * 10)
    with pytest.raises(ModelCorruptError) as ei:
        sdk.Pipeline(model_copy, backend="onnxruntime-cpu", threads=1, verify=False)
    check(ei, ValueError, "could not load")


# -------------------------------------------------------------------------------------- backends
@pytest.mark.parametrize("name", ["onnxruntime-cuda", "onnxruntime-tensorrt"])
def test_gpu_backend_unavailable_names_extra(tiny_model_dir, name):
    """Requesting a GPU backend on this CPU-only onnxruntime raises BackendUnavailableError naming the extra."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA; the test needs a CPU-only build")
    with pytest.raises(BackendUnavailableError) as ei:
        sdk.load(tiny_model_dir, backend=name)
    check(ei, RuntimeError, name, "unavailable", "chromaforge[gpu]")


def test_unknown_backend(tiny_model_dir):
    """An unknown backend name raises BackendUnavailableError listing the valid names."""
    with pytest.raises(BackendUnavailableError) as ei:
        sdk.load(tiny_model_dir, backend="tensorflow")
    check(ei, RuntimeError, "tensorflow", "expected 'auto' or one of", "onnxruntime-cpu")


# --------------------------------------------------------------------------------------- outputs
def test_output_equal_to_input_raises_output_exists(tmp_path):
    """Planning an output onto an input raises OutputExistsError (a FileExistsError)."""
    from sdk.folder import collect_inputs, plan_outputs

    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    with pytest.raises(OutputExistsError) as ei:
        plan_outputs(collect_inputs([str(f)]), str(f), "png")
    check(ei, FileExistsError, "also an input", "choose another -o")
