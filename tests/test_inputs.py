"""Every accepted input type and PIL mode, and the rule that results come back in the input's type.

The reference for most checks is the colorization of the plain grey array: any input holding the
same luminance must give exactly the same colours, whatever its container or mode.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import sdk
from sdk.manifest import default_model_dir

H, W = 48, 64


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luminance as PIL computes it (``convert('L')``) of an HxWx3 uint8 array."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB").convert("L"))


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(astronaut) -> np.ndarray:
    """A small real colour photo, HxWx3 uint8."""
    return np.asarray(Image.fromarray(astronaut).resize((W, H), Image.BILINEAR))


@pytest.fixture(scope="module")
def grey(photo) -> np.ndarray:
    return luma(photo)


@pytest.fixture(scope="module")
def ref(tiny_pipeline, grey) -> np.ndarray:
    """Colorization of the plain HxW uint8 grey array."""
    out = tiny_pipeline.colorize(grey)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    return out


@pytest.fixture(scope="module")
def alpha() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W), dtype=np.uint8)


# ----------------------------------------------------------------------------------------- PIL modes
def test_reference_is_coloured_and_keeps_luminance(ref, grey):
    """The reference really has colour (channels differ) and the input's luminance where unclipped."""
    assert np.abs(ref[..., 0].astype(int) - ref[..., 2]).mean() > 5
    unclipped = ((ref > 0) & (ref < 255)).all(axis=2)
    assert unclipped.mean() > 0.2
    assert np.abs(luma(ref).astype(int) - grey)[unclipped].max() <= 2


def test_pil_L(tiny_pipeline, grey, ref):
    """PIL 'L' in -> PIL 'RGB' out, same pixels as the array reference."""
    out = tiny_pipeline.colorize(Image.fromarray(grey, "L"))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (W, H)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_pil_RGB_colour_is_ignored(tiny_pipeline, photo, ref):
    """PIL 'RGB' in -> 'RGB' out; only the luminance is used, so the result equals the grey one."""
    out = tiny_pipeline.colorize(Image.fromarray(photo, "RGB"))
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_pil_RGBA_alpha_preserved_exactly(tiny_pipeline, photo, alpha, ref):
    """PIL 'RGBA' in -> 'RGBA' out with the alpha channel unchanged bit for bit."""
    im = Image.fromarray(np.dstack([photo, alpha]), "RGBA")
    out = tiny_pipeline.colorize(im)
    assert isinstance(out, Image.Image) and out.mode == "RGBA" and out.size == (W, H)
    arr = np.asarray(out)
    np.testing.assert_array_equal(arr[..., 3], alpha)
    np.testing.assert_array_equal(arr[..., :3], ref)


def test_pil_P_without_transparency(tiny_pipeline, photo):
    """PIL 'P' (palette) without transparency -> 'RGB' out, as its RGB conversion."""
    im = Image.fromarray(photo, "RGB").convert("P", palette=Image.ADAPTIVE, colors=32)
    assert "transparency" not in im.info
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), tiny_pipeline.colorize(np.asarray(im.convert("RGB"))))


def test_pil_P_with_transparency(tiny_pipeline, grey):
    """PIL 'P' with a transparent index -> 'RGBA' out whose alpha is 0 exactly at that index."""
    idx = (grey // 32).astype(np.uint8)  # 8 palette entries
    im = Image.fromarray(idx, "P")
    im.putpalette([v for i in range(8) for v in (i * 36, i * 36, i * 36)])
    im.info["transparency"] = 0
    assert (idx == 0).any() and (idx != 0).any()
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGBA"
    arr = np.asarray(out)
    np.testing.assert_array_equal(arr[..., 3], np.where(idx == 0, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(arr[..., :3], tiny_pipeline.colorize(np.asarray(im.convert("RGB"))))


def test_pil_I16(tiny_pipeline, grey, ref):
    """PIL 'I;16' (16-bit grey) is scaled by 65535 -> the same result as the 8-bit grey."""
    im = Image.fromarray(grey.astype(np.uint16) * 257)
    assert im.mode == "I;16"
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), ref)


@pytest.mark.parametrize("scale", [1, 257], ids=["8bit-range", "16bit-range"])
def test_pil_I(tiny_pipeline, grey, ref, scale):
    """PIL 'I' (32-bit int) holding 8-bit or 16-bit data -> the same result as the 8-bit grey."""
    im = Image.fromarray(grey.astype(np.int32) * scale)
    assert im.mode == "I"
    np.testing.assert_array_equal(np.asarray(tiny_pipeline.colorize(im)), ref)


def test_pil_F(tiny_pipeline, grey, ref):
    """PIL 'F' with values in [0, 1] -> PIL 'RGB' out equal to the 8-bit result."""
    im = Image.fromarray(grey.astype(np.float32) / 255.0)
    assert im.mode == "F"
    out = tiny_pipeline.colorize(im)
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_pil_CMYK(tiny_pipeline, photo, ref):
    """PIL 'CMYK' is converted to RGB first -> 'RGB' out equal to the reference."""
    im = Image.fromarray(photo, "RGB").convert("CMYK")
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_pil_LA_alpha_preserved(tiny_pipeline, grey, alpha, ref):
    """PIL 'LA' -> 'RGBA' out, the grey colorized and the alpha unchanged."""
    im = Image.merge("LA", (Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")))
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGBA"
    arr = np.asarray(out)
    np.testing.assert_array_equal(arr[..., 3], alpha)
    np.testing.assert_array_equal(arr[..., :3], ref)


@pytest.mark.parametrize("mode, straight", [("RGBa", "RGBA"), ("La", "LA")])
def test_pil_premultiplied_alpha(tiny_pipeline, photo, alpha, mode, straight):
    """Premultiplied 'RGBa' / 'La' -> 'RGBA' out, alpha kept, colour from the un-premultiplied image."""
    im = Image.fromarray(np.dstack([photo, alpha]), "RGBA").convert(straight).convert(mode)
    assert im.mode == mode
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGBA"
    arr = np.asarray(out)
    np.testing.assert_array_equal(arr[..., 3], alpha)
    unpremultiplied = np.asarray(im.convert(straight))[..., :-1]
    np.testing.assert_array_equal(arr[..., :3], tiny_pipeline.colorize(np.squeeze(unpremultiplied)))


def test_pil_PA(tiny_pipeline, photo, alpha):
    """Palette with alpha ('PA') -> 'RGBA' out with the alpha kept."""
    im = Image.fromarray(photo).convert("P").convert("PA")
    im.putalpha(Image.fromarray(alpha, "L"))
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], alpha)
    np.testing.assert_array_equal(np.asarray(out)[..., :3], tiny_pipeline.colorize(np.asarray(im.convert("RGB"))))


def test_pil_1_bilevel(tiny_pipeline, grey):
    """PIL '1' (bilevel) -> 'RGB' out, as its 0/255 grey version."""
    im = Image.fromarray(grey, "L").convert("1")
    out = tiny_pipeline.colorize(im)
    assert out.mode == "RGB" and out.size == (W, H)
    np.testing.assert_array_equal(np.asarray(out), tiny_pipeline.colorize(np.asarray(im.convert("L"))))


# ------------------------------------------------------------------------------------------ arrays
def test_array_HxW(tiny_pipeline, grey, ref):
    """HxW uint8 -> HxWx3 uint8 (already the reference; checked against an HxWx3 grey too)."""
    out = tiny_pipeline.colorize(np.ascontiguousarray(grey))
    assert isinstance(out, np.ndarray) and out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, tiny_pipeline.colorize(np.repeat(grey[..., None], 3, axis=2)))


def test_array_HxWx1(tiny_pipeline, grey, ref):
    """HxWx1 uint8 is treated as HxW -> HxWx3 uint8 out."""
    out = tiny_pipeline.colorize(grey[..., None])
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)


def test_array_HxWx3(tiny_pipeline, photo, ref):
    """HxWx3 uint8 -> HxWx3 uint8 out."""
    out = tiny_pipeline.colorize(photo)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)


def test_array_HxWx4_alpha_preserved(tiny_pipeline, photo, alpha, ref):
    """HxWx4 uint8 -> HxWx4 uint8 out with the alpha channel unchanged."""
    out = tiny_pipeline.colorize(np.dstack([photo, alpha]))
    assert out.shape == (H, W, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 3], alpha)
    np.testing.assert_array_equal(out[..., :3], ref)


def test_array_non_contiguous(tiny_pipeline, photo, ref):
    """A strided view (e.g. BGR flipped back) is accepted like a contiguous array."""
    bgr = np.ascontiguousarray(photo[..., ::-1])
    view = bgr[..., ::-1]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(tiny_pipeline.colorize(view), ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [0, 3], ids=["HxW", "HxWx3"])
def test_array_float_in_float32_out(tiny_pipeline, photo, grey, ref, dtype, channels):
    """Float in [0, 1] in -> float32 in [0, 1] out, equal to the uint8 result / 255."""
    src = grey if channels == 0 else photo
    out = tiny_pipeline.colorize(src.astype(dtype) / 255.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (H, W, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(np.round(out * 255.0).astype(np.uint8), ref)


def test_array_float_rgba(tiny_pipeline, photo, alpha, ref):
    """Float HxWx4 -> float32 HxWx4, alpha kept (to 8-bit precision)."""
    src = np.dstack([photo, alpha]).astype(np.float32) / 255.0
    out = tiny_pipeline.colorize(src)
    assert out.dtype == np.float32 and out.shape == (H, W, 4)
    np.testing.assert_allclose(out[..., 3], alpha / 255.0, atol=1e-6)
    np.testing.assert_array_equal(np.round(out[..., :3] * 255).astype(np.uint8), ref)


# ------------------------------------------------------------------------------------ paths, bytes
@pytest.mark.parametrize("as_str", [True, False], ids=["str", "pathlib"])
def test_path_in_pil_out(tiny_pipeline, tmp_path, grey, ref, as_str):
    """A file path (str or pathlib.Path) in -> PIL image out."""
    f = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(f)
    out = tiny_pipeline.colorize(str(f) if as_str else f)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (W, H)
    np.testing.assert_array_equal(np.asarray(out), ref)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bytes_in_png_bytes_out(tiny_pipeline, grey, ref, wrap):
    """Encoded bytes (bytes / bytearray / memoryview) in -> PNG bytes out with the input's size."""
    out = tiny_pipeline.colorize(wrap(png_bytes(Image.fromarray(grey, "L"))))
    assert isinstance(out, bytes) and out[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(out))
    assert im.format == "PNG" and im.size == (W, H)
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), ref)


def test_bytes_rgba_keeps_alpha(tiny_pipeline, photo, alpha):
    """RGBA PNG bytes in -> RGBA PNG bytes out with the same alpha."""
    out = tiny_pipeline.colorize(png_bytes(Image.fromarray(np.dstack([photo, alpha]), "RGBA")))
    im = Image.open(io.BytesIO(out))
    assert im.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(im)[..., 3], alpha)


@pytest.fixture
def exif_jpeg(tmp_path, astronaut) -> Path:
    """A 40x24 (WxH) JPEG whose EXIF says 'rotate 90 CW to display' (Orientation=6)."""
    im = Image.fromarray(astronaut).resize((40, 24)).convert("L")
    exif = Image.Exif()
    exif[0x0112] = 6
    f = tmp_path / "rotated.jpg"
    im.save(f, format="JPEG", exif=exif.tobytes(), quality=95)
    assert Image.open(f).size == (40, 24) and Image.open(f).getexif()[0x0112] == 6
    return f


@pytest.mark.parametrize("kind", ["path", "bytes", "pil"])
def test_exif_orientation_honoured(tiny_pipeline, exif_jpeg, kind):
    """EXIF Orientation=6 is applied: a stored 40x24 image comes out 24x40 (WxH), as displayed."""
    src = {"path": exif_jpeg, "bytes": exif_jpeg.read_bytes(), "pil": Image.open(exif_jpeg)}[kind]
    out = tiny_pipeline.colorize(src)
    im = Image.open(io.BytesIO(out)) if kind == "bytes" else out
    assert im.size == (24, 40)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(exif_jpeg)))
    assert upright.shape == (40, 24)
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), tiny_pipeline.colorize(upright))


# -------------------------------------------------------------------------------------- odd sizes
@pytest.mark.parametrize("hw", [(1, 1), (7, 300), (300, 7), (33, 65), (1000, 30)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op", ["colorize", "stylize"])
def test_odd_sizes_keep_exact_shape(tiny_pipeline, hw, op):
    """Odd sizes and extreme aspect ratios come back at exactly the input's HxW."""
    h, w = hw
    rng = np.random.default_rng(h * 1000 + w)
    src = rng.integers(0, 256, (h, w), dtype=np.uint8)
    out = getattr(tiny_pipeline, op)(src)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    pil = getattr(tiny_pipeline, op)(Image.fromarray(src, "L"))
    assert pil.size == (w, h)
    np.testing.assert_array_equal(np.asarray(pil), out)


# ------------------------------------------------------------------------------------------- lists
def test_list_of_equal_shapes_is_batched_in_order(tiny_pipeline, grey):
    """A list returns a list in input order; batched results equal one-at-a-time results."""
    a, b = grey, np.ascontiguousarray(255 - grey)
    outs = tiny_pipeline.colorize([a, b, b])  # not a palindrome, so a reversed batch would show
    assert isinstance(outs, list) and len(outs) == 3
    single_a, single_b = tiny_pipeline.colorize(a), tiny_pipeline.colorize(b)
    assert np.abs(outs[0].astype(int) - single_a).max() <= 1
    assert np.abs(outs[1].astype(int) - single_b).max() <= 1
    np.testing.assert_array_equal(outs[1], outs[2])
    assert np.abs(outs[0].astype(int) - outs[1]).mean() > 5


def test_list_same_working_shape_different_sizes(tiny_pipeline, photo):
    """Inputs of different sizes but the same working shape share a batch yet keep their own sizes."""
    big = np.asarray(Image.fromarray(photo).resize((W * 2, H * 2)))
    outs = tiny_pipeline.colorize([photo, big])
    assert outs[0].shape == (H, W, 3) and outs[1].shape == (2 * H, 2 * W, 3)
    assert np.abs(outs[1].astype(int) - tiny_pipeline.colorize(big)).max() <= 1


def test_list_mixed_sizes_and_types(tiny_pipeline, photo, grey):
    """A list may mix sizes and types; each result has its own input's type and size."""
    small = np.asarray(Image.fromarray(grey).resize((20, 30)))
    tall = np.asarray(Image.fromarray(grey).resize((17, 90)))
    items = [Image.fromarray(photo), small, png_bytes(Image.fromarray(tall, "L"))]
    outs = tiny_pipeline.colorize(items)
    assert isinstance(outs, list) and len(outs) == 3
    assert isinstance(outs[0], Image.Image) and outs[0].size == (W, H)
    assert isinstance(outs[1], np.ndarray) and outs[1].shape == (30, 20, 3)
    assert isinstance(outs[2], bytes) and Image.open(io.BytesIO(outs[2])).size == (17, 90)
    assert np.abs(outs[1].astype(int) - tiny_pipeline.colorize(small)).max() <= 1


def test_tuple_and_stylize_lists(tiny_pipeline, grey, photo):
    """A tuple is a batch too (a list comes back), and stylize accepts lists like colorize."""
    outs = tiny_pipeline.stylize((grey, photo[:30, :40]), "rococo")
    assert isinstance(outs, list) and [o.shape for o in outs] == [(H, W, 3), (30, 40, 3)]
    assert np.abs(outs[0].astype(int) - tiny_pipeline.stylize(grey, "rococo")).max() <= 1
    assert isinstance(tiny_pipeline.colorize([grey]), list)


# --------------------------------------------------------------------------------- stylize output
def test_stylize_output_types(tiny_pipeline, photo, alpha):
    """stylize follows the same type rules: RGBA PIL keeps alpha, float -> float32, bytes -> PNG."""
    rgba = tiny_pipeline.stylize(Image.fromarray(np.dstack([photo, alpha]), "RGBA"), "ukiyoe")
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(rgba)[..., 3], alpha)
    f = tiny_pipeline.stylize(photo.astype(np.float64) / 255, "ukiyoe")
    assert f.dtype == np.float32 and f.shape == (H, W, 3) and 0 <= f.min() and f.max() <= 1
    np.testing.assert_array_equal(np.round(f * 255).astype(np.uint8), tiny_pipeline.stylize(photo, "ukiyoe"))
    b = tiny_pipeline.stylize(png_bytes(Image.fromarray(photo)), "ukiyoe")
    assert isinstance(b, bytes) and Image.open(io.BytesIO(b)).size == (W, H)


# ----------------------------------------------------------------------------- module-level API
@pytest.mark.skipif(not (default_model_dir() / "manifest.json").is_file(),
                    reason="bundled model sdk/models/default is not exported yet (no manifest.json)")
def test_module_level_functions_on_bundled_model(grey):
    """sdk.colorize / sdk.stylize / sdk.styles work on the bundled model and keep types and sizes."""
    out = sdk.colorize(grey)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert sdk.styles()[0] == "natural"
    art = sdk.stylize(Image.fromarray(grey), sdk.styles()[1])
    assert isinstance(art, Image.Image) and art.size == (W, H)
