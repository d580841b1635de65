"""Inputs that trust nothing (issue 31): a header above Pillow's decompression-bomb limit is an
ImageTooLargeError (HTTP 413), with or without max_pixels; 16-bit and float images convert in row
strips; a float TIFF decodes the same from bytes, a path and a PIL image; user-given strings are
cut in error messages. Real files and bytes, built here."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sdk
from sdk import images, stages
from sdk.errors import ImageFormatError, ImageTooLargeError, InvalidImageError, UnknownStyleError, shorten


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with a tiny (invalid) body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A 1x1 GIF whose logical screen declares width x height."""
    b = io.BytesIO()
    Image.new("L", (1, 1)).save(b, "GIF")
    data = bytearray(b.getvalue())
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


# ------------------------------------------------------------------------------------- bombs
@pytest.mark.parametrize("data", [png_claiming(30000, 30000), png_claiming(14000, 14000), gif_claiming(30000, 30000)],
                         ids=["png-30000", "png-14000", "gif-30000"])
@pytest.mark.parametrize("max_pixels", [images.MAX_PIXELS, None], ids=["default-limit", "no-limit"])
def test_a_header_above_pillows_bomb_limit_is_image_too_large(tmp_path, data, max_pixels):
    """Was Pillow's DecompressionBombError turned into InvalidImageError (415 in the service); now
    the header's size is checked by the SDK (max_pixels, or Pillow's limit when it is None), from
    bytes and from a path, with no warning."""
    f = tmp_path / "bomb.img"
    f.write_bytes(data)
    w, h = struct.unpack(">II", data[16:24]) if data.startswith(b"\x89PNG") else struct.unpack("<HH", data[6:10])
    for src in (data, f):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ImageTooLargeError) as ei:
                images.decode(src, max_pixels=max_pixels)
        msg = str(ei.value)
        assert f"{w}x{h}" in msg and ("above the limit of 67108864" in msg if max_pixels else "Pillow's decompression-bomb limit of 178956970" in msg), msg


def test_no_limit_keeps_pillows_limit_and_an_explicit_limit_lifts_it():
    """max_pixels=None: Pillow's 179 MP (12000x12000 is under it: decoded, and its empty body is
    then refused as damaged); an explicit max_pixels above a header is the caller's word, also
    beyond Pillow's limit."""
    for data, limit in ((png_claiming(12000, 12000), None), (png_claiming(30000, 30000), 10**9)):
        with pytest.raises(InvalidImageError, match="truncated or damaged") as ei:
            images.decode(data, max_pixels=limit)
        assert not isinstance(ei.value, ImageTooLargeError)
    assert images.pillow_limit() == 2 * Image.MAX_IMAGE_PIXELS


def test_the_pipeline_raises_image_too_large_for_a_bomb(tiny_pipeline):
    with pytest.raises(ImageTooLargeError):
        tiny_pipeline.colorize(png_claiming(30000, 30000))


# ------------------------------------------------------------------------------- 16-bit, float
def test_16bit_png_converts_in_strips_with_the_same_values(tmp_path):
    """A 16-bit PNG decodes to the rounded 8-bit grey of its values (as before), and the numpy
    working set stays under one full-size float32 copy (it was six float64 copies: 1.8 GB for
    8192x8192, a peak RSS of 1825 MB, now 246 MB)."""
    n = 4096
    y, x = np.mgrid[0:n, 0:n].astype(np.uint32)
    arr = ((x * 7 + y * 3) % 65536).astype(np.uint16)
    del x, y
    f = tmp_path / "g16.png"
    Image.fromarray(arr).save(f, compress_level=1)
    with Image.open(f) as im:
        assert im.mode == "I;16"
    data = f.read_bytes()
    tracemalloc.start()
    try:
        d = images.decode(data, max_pixels=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    want = np.clip(arr.astype(np.float64) * (255.0 / 65535.0) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(d.gray, want)
    assert peak < n * n * 4, f"decoding took {peak / 2**20:.0f} MiB of numpy memory"
    np.testing.assert_array_equal(images.decode(f).gray[:64], want[:64])


@pytest.mark.parametrize("mode, values, peak", [("I;16", 257, 65535), ("I", 1, 255), ("I", 257, 65535)],
                         ids=["I;16", "I-8bit-range", "I-16bit-range"])
def test_16_and_32_bit_modes_across_strips(mode, values, peak, monkeypatch):
    """Small strips (3 rows): the same result as converting the whole image at once."""
    monkeypatch.setattr(images, "_LUMA_TILE", 3 * 37)
    base = np.random.default_rng(0).integers(0, 256, (20, 37)) * values
    im = Image.fromarray(base.astype(np.uint16)) if mode == "I;16" else Image.fromarray(base.astype(np.int32), "I")
    assert im.mode == mode
    want = np.clip(base * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(images.decode(im).gray, want)


def _float_tiff(arr: np.ndarray, path: Path | None = None) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr.astype(np.float32), "F").save(b, "TIFF")
    if path is not None:
        path.write_bytes(b.getvalue())
    return b.getvalue()


def test_float_tiff_decodes_the_same_from_bytes_path_pil_and_array(tmp_path, tiny_pipeline):
    """Mode F (values in [0, 1]): bytes (what the service passes), a path, a PIL image and the
    array give one result; through the pipeline too."""
    arr = np.random.default_rng(1).random((45, 61)).astype(np.float32)
    data = _float_tiff(arr, tmp_path / "f.tif")
    with Image.open(tmp_path / "f.tif") as im:
        assert im.mode == "F"
        from_pil = images.decode(im)
    decoded = [images.decode(data), images.decode(tmp_path / "f.tif"), from_pil, images.decode(arr)]
    for d in decoded:
        np.testing.assert_array_equal(d.gray, decoded[-1].gray)
    png = tiny_pipeline.colorize(data)
    assert isinstance(png, bytes)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(tiny_pipeline.colorize(tmp_path / "f.tif")))


def test_float_tiff_out_of_range_is_refused_the_same_everywhere(tmp_path):
    arr = np.linspace(0, 255, 40 * 30, dtype=np.float32).reshape(40, 30)  # 0..255 data in a float TIFF
    data = _float_tiff(arr, tmp_path / "f.tif")
    for src in (data, tmp_path / "f.tif", arr):
        with pytest.raises(ImageFormatError, match=r"float values span \[0, 255\]; expected \[0, 1\]"):
            images.decode(src)
    bad = arr.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ImageFormatError, match="NaN"):
        images.decode(_float_tiff(bad))


def test_float_arrays_across_strips(monkeypatch):
    monkeypatch.setattr(images, "_LUMA_TILE", 2 * 33 * 3)
    arr = np.random.default_rng(2).random((17, 33, 3))
    want = (np.clip(arr, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    d = images.decode(arr)
    np.testing.assert_array_equal(d.rgb, want)
    arr[16, 32, 2] = 1.5  # in the last strip
    with pytest.raises(ImageFormatError, match="1.5"):
        images.decode(arr)


def test_no_orientation_means_no_copy():
    """exif_transpose copies an image even when it turns nothing: it is only called for a real orientation."""
    im = Image.new("L", (8, 4), 7)
    assert images.decode(im).gray.shape == (4, 8)
    im.getexif()[0x0112] = 6  # rotate 90
    assert images.decode(im).gray.shape == (8, 4)


# ------------------------------------------------------------------------------- long strings
def test_shorten():
    assert shorten("cubism") == "'cubism'"
    s = shorten("x" * 900_000)
    assert len(s) < 120 and s.endswith("(900000 characters)") and s.startswith("'xxx")
    assert len(shorten({str(i) * 1000: i for i in range(1000)})) < 100
    assert shorten("/a/" + "b" * 500, 40, quote=False).startswith("/a/bbb") and "(503 characters)" in shorten("/a/" + "b" * 500, 40, quote=False)


def test_a_900kb_style_name_is_not_echoed_whole(tiny_pipeline):
    huge = "x" * 900_000
    for style in (huge, {huge: 1.0}):
        with pytest.raises(UnknownStyleError) as ei:
            tiny_pipeline.stylize(np.zeros((8, 8), np.uint8), style)
        assert len(str(ei.value)) < 400 and "900000 characters" in str(ei.value) and "valid styles: natural" in str(ei.value)
    with pytest.raises(sdk.errors.InvalidArgumentError) as ei:
        stages.check_options(huge, stages.Params(), tiny_pipeline.manifest)
    assert len(str(ei.value)) < 400
    with pytest.raises(sdk.errors.InvalidArgumentError) as ei:
        stages.check_options("colorize", stages.Params(style=huge), tiny_pipeline.manifest)
    assert len(str(ei.value)) < 400


def test_long_paths_and_names_are_cut_in_image_errors(tmp_path):
    for path in ("/nowhere/" + "p" * 900_000, str(tmp_path / ("q" * 300 + ".png"))):
        with pytest.raises(InvalidImageError) as ei:
            images.decode(path)
        assert len(str(ei.value)) < 700, str(ei.value)[:200]
    with pytest.raises(InvalidImageError) as ei:
        images.decode(b"not an image", name="n" * 900_000)
    assert len(str(ei.value)) < 700 and "900000 characters" in str(ei.value)
