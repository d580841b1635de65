"""Processing and fusion: working shapes, the Laplacian pyramid, the three fusion methods, the
full-resolution luminance property of colorize, and style vectors."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

import sdk
from sdk import colour, contract, fusion, resample, tiling


def luma(rgb: np.ndarray) -> np.ndarray:
    """PIL's BT.601 luminance (``convert('L')``) of an HxWx3 uint8 array, as int."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB").convert("L")).astype(int)


def chroma(rgb: np.ndarray) -> np.ndarray:
    """Cb, Cr (0..255 scale, float) of an HxWx3 uint8 array."""
    m = np.asarray(contract.RGB_TO_YCBCR, np.float64)
    return rgb[..., :3].astype(np.float64) @ m[1:].T


def unclipped(rgb: np.ndarray) -> np.ndarray:
    """Pixels where no channel hit 0 or 255 (colour inside the RGB gamut)."""
    return ((rgb > 0) & (rgb < 255)).all(axis=2)


@pytest.fixture(scope="module")
def small(astronaut) -> np.ndarray:
    """A 96x128 real photo."""
    return np.asarray(Image.fromarray(astronaut).resize((128, 96), Image.BILINEAR))


@pytest.fixture(scope="module")
def stylized_small(small) -> np.ndarray:
    """A stand-in stylized image of ``small``: its colours posterised and blurred, under a brushy
    texture of its own (fusion is judged on what it keeps of each input, whatever made the second)."""
    from PIL import ImageFilter

    base = np.asarray(Image.fromarray(small).filter(ImageFilter.GaussianBlur(1))).astype(np.int16) // 32 * 32
    texture = np.random.default_rng(7).integers(-20, 20, small.shape[:2] + (1,))
    return np.clip(base + 16 + texture, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def midtone_pair(small, stylized_small):
    """Content and stylized images squeezed into mid-tones, so fusion never clips and stays linear."""
    c = (small.astype(np.uint16) // 2 + 64).astype(np.uint8)
    s = (stylized_small.astype(np.uint16) // 4 + 96).astype(np.uint8)
    return c, s


# ------------------------------------------------------------------------------------ work_shape
@pytest.mark.parametrize(
    "hw, expected",
    [
        ((3072, 4096), (192, 256)),
        ((4096, 3072), (256, 192)),
        ((1080, 1920), (144, 256)),
        ((512, 512), (256, 256)),
        ((100, 50), (256, 128)),
        ((33, 65), (128, 256)),
        ((1, 1), (256, 256)),
        ((7, 300), (16, 256)),
        ((300, 7), (256, 16)),
        ((1000, 30), (256, 16)),
    ],
)
def test_work_shape_examples(hw, expected):
    """work_shape gives the documented working shapes (long side 256, multiples of 16, at least 16)."""
    assert resample.work_shape(*hw, 256, 16) == expected


@pytest.mark.parametrize("work_size", [256, 512])
def test_work_shape_properties(work_size):
    """For many sizes: long side = work size, sides multiples of 16, aspect kept to within rounding."""
    rng = np.random.default_rng(0)
    for h, w in rng.integers(16, 5000, (200, 2)):
        wh, ww = resample.work_shape(int(h), int(w), work_size, 16)
        assert wh % 16 == 0 and ww % 16 == 0 and min(wh, ww) >= 16
        assert max(wh, ww) == work_size
        scale = work_size / max(h, w)
        for got, side in ((wh, h), (ww, w)):
            assert abs(got - side * scale) <= 8 or got == 16


# ------------------------------------------------------------------------------------- pyramid
@pytest.mark.parametrize("shape", [(37, 53, 3), (96, 128, 3), (2, 3, 3), (1, 1, 3), (64, 7, 1)])
def test_laplacian_pyramid_reconstructs_exactly(shape):
    """reconstruct(laplacian_pyramid(x)) == x to float precision (max abs err < 1e-3)."""
    x = np.random.default_rng(shape[0]).uniform(0, 255, shape).astype(np.float32)
    pyr = fusion.laplacian_pyramid(x, 5)
    assert np.abs(fusion.reconstruct(pyr) - x).max() < 1e-3


def test_laplacian_pyramid_structure(astronaut):
    """Bands halve in size (rounding up), finest first, then the low-pass residual; a real photo reconstructs."""
    x = astronaut[:101, :77].astype(np.float32)
    pyr = fusion.laplacian_pyramid(x, 4)
    assert [b.shape[:2] for b in pyr] == [(101, 77), (51, 39), (26, 20), (13, 10), (7, 5)]
    assert np.abs(pyr[0]).mean() < np.abs(x - x.mean()).mean()  # a band-pass, not the image
    assert np.abs(fusion.reconstruct(pyr) - x).max() < 1e-3


# -------------------------------------------------------------------------------- laplacian fuse
@pytest.mark.parametrize("k", [1, 2, 3])
def test_laplacian_fuse_keeps_content_detail_bands(midtone_pair, k):
    """detail=1 keeps the content's k finest bands: output = content + coarse part of (stylized - content)."""
    c, s = midtone_pair
    out = sdk.fuse(c, s, method="laplacian", detail=1.0, detail_levels=k)
    assert out.shape == c.shape and out.dtype == np.uint8
    diff = fusion.laplacian_pyramid(s.astype(np.float32) - c, k)
    coarse = fusion.reconstruct([np.zeros_like(b) for b in diff[:-1]] + [diff[-1]])
    expected = np.clip(c + coarse + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("k, max_err, mean_err", [(1, 20.0, 2.0), (2, 8.0, 0.8), (3, 1.5, 0.35), (5, 1.0, 0.3)])
def test_laplacian_fuse_reproduces_finest_band(midtone_pair, k, max_err, mean_err):
    """The output's finest pyramid band matches the content's, far closer than the stylized image's does.

    With k >= 3 bands kept the difference is rounding only. With fewer it is a little larger: a
    Laplacian pyramid is not idempotent (down(up(x)) != x), so re-analysing the output leaks some of
    the stylized coarse bands into the finest one (the exact relation is tested above).
    """
    c, s = midtone_pair
    out = sdk.fuse(c, s, method="laplacian", detail=1.0, detail_levels=k)
    fine = lambda im: fusion.laplacian_pyramid(im.astype(np.float32), 5)[0]  # noqa: E731
    err_out = np.abs(fine(out) - fine(c))
    err_sty = np.abs(fine(s) - fine(c))
    assert err_out.max() < max_err and err_out.mean() < mean_err
    assert err_sty.mean() > 2 * err_out.mean() and err_sty.mean() > 3


def test_laplacian_fuse_detail_zero_is_stylized(small, stylized_small):
    """detail=0 returns the stylized image (up to rounding)."""
    out = sdk.fuse(small, stylized_small, method="laplacian", detail=0.0, detail_levels=3)
    assert np.abs(out.astype(int) - stylized_small).max() <= 1


def test_laplacian_fuse_is_linear_in_detail(midtone_pair):
    """detail=0.5 lies halfway between detail=0 and detail=1."""
    c, s = midtone_pair
    f = {d: sdk.fuse(c, s, method="laplacian", detail=d).astype(float) for d in (0.0, 0.5, 1.0)}
    assert np.abs(f[0.5] - (f[0.0] + f[1.0]) / 2).max() <= 1.0
    assert np.abs(f[1.0] - f[0.0]).mean() > 1  # detail really changes the result


# ------------------------------------------------------------------------- weighted / luminance
def test_weighted_fuse_endpoints(small, stylized_small):
    """weighted: weight 0 gives the content, 1 the stylized image, exactly; 0.5 the mean."""
    np.testing.assert_array_equal(sdk.fuse(small, stylized_small, method="weighted", weight=0.0), small)
    np.testing.assert_array_equal(sdk.fuse(small, stylized_small, method="weighted", weight=1.0), stylized_small)
    half = sdk.fuse(small, stylized_small, method="weighted", weight=0.5).astype(float)
    assert np.abs(half - (small.astype(float) + stylized_small) / 2).max() <= 1.0


def test_luminance_fuse_content_luma_stylized_chroma(midtone_pair):
    """luminance (weight 1): the content's luminance (PIL 'L' within 2) and the stylized chroma."""
    c, s = midtone_pair
    out = sdk.fuse(c, s, method="luminance", weight=1.0)
    assert unclipped(out).all()  # the fixture keeps colours in gamut, so the check is exact
    assert np.abs(luma(out) - luma(c)).max() <= 2
    assert np.abs(chroma(out) - chroma(s)).max() <= 1.5
    assert np.abs(chroma(c) - chroma(s)).mean() > 3  # the chroma did change


def test_luminance_fuse_weight_zero_is_content(midtone_pair):
    """luminance with weight 0 keeps the content's own colour."""
    c, s = midtone_pair
    out = sdk.fuse(c, s, method="luminance", weight=0.0)
    assert np.abs(out.astype(int) - c).max() <= 1


def test_colour_fuse_keeps_the_content_colour_under_the_stylized_luminance(midtone_pair):
    """colour (the colour-preserving stylize): weight 1 gives the stylized luminance (PIL 'L' within 2)
    with the content's chroma; weight 0 the stylized image; it is luminance with the roles swapped."""
    c, s = midtone_pair
    out = sdk.fuse(c, s, method="colour", weight=1.0)
    assert unclipped(out).all()
    assert np.abs(luma(out) - luma(s)).max() <= 2
    assert np.abs(chroma(out) - chroma(c)).max() <= 1.5
    assert np.abs(luma(c) - luma(s)).mean() > 3 and np.abs(chroma(c) - chroma(s)).mean() > 3  # both did change
    assert np.abs(sdk.fuse(c, s, method="colour", weight=0.0).astype(int) - s).max() <= 1
    np.testing.assert_array_equal(sdk.fuse(c, s, method="colour", weight=0.3), sdk.fuse(s, c, method="luminance", weight=0.3))


def test_tone_fuse_takes_the_content_tone_and_keeps_the_stylized_strokes_and_colour(midtone_pair):
    """tone (weight 1): the luminance the result adds to the stylized image is smooth (the tone grid's
    bilinear upsampling), its image mean is the content's; the stylized chroma is kept."""
    c, s = midtone_pair
    out = sdk.fuse(c, s, method="tone", weight=1.0)
    assert unclipped(out).all()
    added = luma(out) - luma(s)

    def blocks(y: np.ndarray) -> np.ndarray:  # 4x4 block means: the tonal layout
        return y.reshape(4, y.shape[0] // 4, 4, y.shape[1] // 4).mean(axis=(1, 3))

    assert np.abs(blocks(luma(out)) - blocks(luma(c))).mean() < 0.3 * np.abs(blocks(luma(s)) - blocks(luma(c))).mean()
    assert np.abs(np.diff(added, axis=1)).mean() < 0.3 * np.abs(np.diff(luma(c) - luma(s), axis=1)).mean()  # 8-bit rounding aside
    assert np.abs(chroma(out) - chroma(s)).max() <= 1.5
    assert np.abs(sdk.fuse(c, s, method="tone", weight=0.0).astype(int) - s).max() <= 1


def test_tone_fuse_keeps_a_dark_sky_dark():
    """A photo dark above and bright below, a stylized image lightly textured mid-grey everywhere:
    the result is dark above and bright below, with the stylized texture in both halves."""
    rng = np.random.default_rng(5)
    photo = np.full((240, 320, 3), 200, np.uint8)
    photo[:120] = 25
    texture = rng.normal(0, 12, (240, 320, 1))
    stylized = np.clip(128 + texture + np.array([[[10, 0, -10]]]), 0, 255).astype(np.uint8)
    out = luma(sdk.fuse(photo, stylized, method="tone", weight=1.0))
    assert out[:100].mean() < 45 and out[140:].mean() > 180
    for part in (slice(10, 100), slice(140, 230)):  # away from the transition, the strokes are the stylized ones
        assert np.corrcoef(out[part, 10:-10].ravel(), luma(stylized)[part, 10:-10].ravel())[0, 1] > 0.9


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (17, 40), (301, 517), (1000, 700)])
def test_fast_tone_matches_reference_for_any_thread_count(monkeypatch, shape):
    rng = np.random.default_rng(shape[1])
    c = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    s = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    monkeypatch.setattr(tiling, "TILE_PIXELS", 4096)  # many tiles
    fast = [fusion.fuse_tone(c, s, 0.7, workers=n) for n in (1, 3)]
    assert np.array_equal(fast[0], fast[1])
    monkeypatch.setenv(tiling.FAST_PATH_ENV, "0")
    diff = np.abs(fast[0].astype(int) - fusion.fuse_tone(c, s, 0.7))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float rounding only


def test_tone_grid_cells():
    """16 near-equal cells along the longer side, the other side's in proportion, never more cells than pixels."""
    rows, cols = fusion.tone_grid(3072, 4096)
    assert len(cols) == 17 and len(rows) == 13 and set(np.diff(cols)) == set(np.diff(rows)) == {256}
    rows, cols = fusion.tone_grid(1000, 700)
    assert len(rows) == 17 and len(cols) == 12 and set(np.diff(rows)) == {62, 63}
    assert [len(a) - 1 for a in fusion.tone_grid(5, 9)] == [5, 9]
    assert [len(a) - 1 for a in fusion.tone_grid(1, 1)] == [1, 1]


def test_fuse_resizes_stylized_to_content(small, stylized_small):
    """A stylized image of another size is resized (bilinear) to the content's size."""
    half = np.asarray(Image.fromarray(stylized_small).resize((64, 48), Image.BILINEAR))
    out = sdk.fuse(small, half, method="weighted", weight=1.0)
    assert out.shape == small.shape
    up = np.dstack([np.asarray(Image.fromarray(half[..., i].astype(np.float32), "F").resize((128, 96), Image.BILINEAR))
                    for i in range(3)])
    assert np.abs(out.astype(float) - up).max() <= 1.0
    for method in ("laplacian", "luminance"):
        assert sdk.fuse(small, half, method=method).shape == small.shape


def test_fuse_keeps_content_type_and_alpha(small, stylized_small, tmp_path):
    """fuse returns the content's type (PIL / ndarray / float / bytes / path->PIL) and its alpha."""
    alpha = np.random.default_rng(3).integers(0, 256, small.shape[:2], dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([small, alpha]), "RGBA")
    out = sdk.fuse(rgba, Image.fromarray(stylized_small))
    assert isinstance(out, Image.Image) and out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[..., 3], alpha)
    arr = sdk.fuse(small, stylized_small)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape == small.shape
    f = sdk.fuse(small / 255.0, stylized_small)
    assert f.dtype == np.float32 and np.array_equal(np.round(f * 255).astype(np.uint8), arr)
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, format="PNG")
    b = sdk.fuse(buf.getvalue(), stylized_small)
    assert isinstance(b, bytes) and np.array_equal(np.asarray(Image.open(io.BytesIO(b))), arr)
    p = tmp_path / "content.png"
    Image.fromarray(small).save(p)
    assert np.array_equal(np.asarray(sdk.fuse(p, stylized_small)), arr)
    grey_content = sdk.fuse(np.ascontiguousarray(small[..., 0]), stylized_small)
    assert isinstance(grey_content, np.ndarray) and grey_content.shape == small.shape  # grey in -> RGB out


# ------------------------------------------------------------------ colorize keeps full-res luma
def test_colorize_keeps_luminance_astronaut(tiny_pipeline, astronaut):
    """Colorizing the 512x512 astronaut keeps its luminance (within 2) wherever colour is in gamut."""
    out = tiny_pipeline.colorize(astronaut)
    ok = unclipped(out)
    assert ok.mean() > 0.2  # enough pixels to make the check meaningful
    assert np.abs(luma(out) - luma(astronaut))[ok].max() <= 2


def test_colorize_keeps_luminance_everywhere(tiny_pipeline, astronaut):
    """Every pixel of the colorized astronaut has the input's luminance within 2 levels."""
    out = tiny_pipeline.colorize(astronaut)
    assert np.abs(luma(out) - luma(astronaut)).max() <= 2


def test_colorize_keeps_full_resolution_luminance_1000x700(tiny_pipeline, astronaut):
    """A 1000x700 mid-tone photo with 1-pixel texture keeps that texture: luminance within 2 in gamut.

    The generator runs at 256x176, so the 1-px checkerboard can only survive if the colour is put
    on the input's own full-resolution luminance.
    """
    base = np.asarray(Image.fromarray(astronaut).convert("L").resize((1000, 700), Image.BICUBIC)).astype(np.float32)
    yy, xx = np.mgrid[:700, :1000]
    grey = np.clip(96 + base * (64 / 255) + np.where((yy + xx) % 2 == 0, 12, -12), 0, 255).astype(np.uint8)
    out = tiny_pipeline.colorize(grey)
    assert out.shape == (700, 1000, 3)
    L = luma(out)
    assert np.abs(L - grey).max() <= 2  # gamut mapping keeps the luminance on every pixel
    assert np.abs(np.diff(L, axis=1)).mean() > 20  # the checkerboard is there
    assert np.abs(out[..., 0].astype(int) - out[..., 2]).mean() > 5  # and colour was added


# ------------------------------------------------------------------------------------- styles
def test_styles_follow_manifest(tiny_pipeline, tiny_model_dir):
    """styles() is the manifest's list, in order, starting with 'natural'."""
    import json

    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert tiny_pipeline.styles() == manifest["styles"] == list(contract.STYLES)
    assert tiny_pipeline.styles()[0] == "natural"
    assert tiny_pipeline.styles() is not tiny_pipeline.styles()  # a copy callers may change


def test_different_styles_give_different_outputs(tiny_pipeline, small):
    """Every pair of styles gives visibly different results; the same style twice is identical."""
    outs = {s: tiny_pipeline.stylize(small, s).astype(int) for s in tiny_pipeline.styles()}
    for a, b in itertools.combinations(outs, 2):
        assert np.abs(outs[a] - outs[b]).mean() > 2, (a, b)
    np.testing.assert_array_equal(tiny_pipeline.stylize(small, "rococo"), outs["rococo"])


def test_style_vector_blend_normalises(tiny_pipeline):
    """A blend {'ukiyoe': 1, 'rococo': 1} normalises to 0.5 / 0.5 in manifest order."""
    names = tiny_pipeline.styles()
    v = tiny_pipeline.style_vector({"ukiyoe": 1, "rococo": 1})
    expected = np.zeros(len(names), np.float32)
    expected[names.index("ukiyoe")] = expected[names.index("rococo")] = 0.5
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, expected, atol=1e-7)
    np.testing.assert_allclose(tiny_pipeline.style_vector({"ukiyoe": 3, "rococo": 1}), expected * [1, 1.5, 1, 1, 0.5], atol=1e-7)


def test_numpy_scalars_are_numbers(tiny_pipeline, midtone_pair):
    """numpy scalars (np.float32 weights and strength, np.int64 levels) are accepted like Python numbers."""
    v = tiny_pipeline.style_vector({"ukiyoe": np.float32(1), "rococo": np.float32(1)}, strength=np.float32(1))
    np.testing.assert_allclose(v, tiny_pipeline.style_vector({"ukiyoe": 1, "rococo": 1}), atol=1e-7)
    c, s = midtone_pair
    np.testing.assert_array_equal(
        sdk.fuse(c, s, detail=np.float32(0.5), detail_levels=np.int64(3), levels=np.int32(4)),
        sdk.fuse(c, s, detail=0.5, detail_levels=3, levels=4),
    )


def test_style_vector_strength(tiny_pipeline):
    """strength=0 gives the natural one-hot; 0.25 moves a quarter of the way to the style."""
    names = tiny_pipeline.styles()
    natural = np.eye(len(names), dtype=np.float32)[names.index("natural")]
    np.testing.assert_array_equal(tiny_pipeline.style_vector("rococo", strength=0.0), natural)
    v = tiny_pipeline.style_vector("rococo", strength=0.25)
    np.testing.assert_allclose(v, 0.75 * natural + 0.25 * np.eye(len(names))[names.index("rococo")], atol=1e-7)
    assert abs(v.sum() - 1) < 1e-6


def test_stylize_strength_zero_equals_natural(tiny_pipeline, small):
    """stylize(..., strength=0) equals stylize with the natural style; a blend differs from both ends."""
    zero = tiny_pipeline.stylize(small, {"ukiyoe": 0.6, "rococo": 0.4}, strength=0.0)
    np.testing.assert_array_equal(zero, tiny_pipeline.stylize(small, "natural"))
    full = tiny_pipeline.stylize(small, {"ukiyoe": 0.6, "rococo": 0.4})
    assert np.abs(full.astype(int) - zero).mean() > 2
    assert np.abs(full.astype(int) - tiny_pipeline.stylize(small, "ukiyoe")).mean() > 1


def test_saturation_scales_the_chroma_and_keeps_the_luminance(tiny_pipeline, small):
    """saturation=1 is the default; 0 gives the input's own luminance as grey; 0.5 and 1.5 scale Cb and Cr
    (up to rounding and the RGB gamut), for colorize and stylize, with the luminance unchanged."""
    grey = np.asarray(Image.fromarray(small).convert("L"))
    base = tiny_pipeline.colorize(grey)
    np.testing.assert_array_equal(tiny_pipeline.colorize(grey, saturation=1.0), base)
    np.testing.assert_array_equal(tiny_pipeline.colorize(grey, saturation=0.0), np.repeat(grey[:, :, None], 3, axis=2))
    for out, ref in ((lambda s: tiny_pipeline.colorize(grey, saturation=s), base),
                     (lambda s: tiny_pipeline.stylize(small, "rococo", saturation=s), tiny_pipeline.stylize(small, "rococo"))):
        y0, c0 = _ycc(ref)
        for s in (0.5, 1.5):
            scaled = out(s)
            y, c = _ycc(scaled)
            # where neither result touches the RGB gamut's walls (clipping moves colour and luminance)
            inside = ((scaled > 2) & (scaled < 253) & (ref > 2) & (ref < 253)).all(axis=-1)
            assert inside.mean() > 0.5
            assert np.abs(y - y0)[inside].mean() < 1.0  # luminance kept, up to rounding
            assert np.abs(c[inside] - s * c0[inside]).mean() < 1.0


def _ycc(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB -> (Y, CbCr) in 0..255 levels (BT.601 full range)."""
    from sdk import contract

    ycc = rgb.astype(np.float64) @ np.asarray(contract.RGB_TO_YCBCR).T
    return ycc[..., 0], ycc[..., 1:]


# ------------------------------------------------------------------ tiled fast path vs reference
def _random_case(seed: int, full: tuple[int, int], small_hw: tuple[int, int]):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 256, full, dtype=np.uint8)
    y[0, :] = 0  # the gamut edges: black and white rows
    y[-1, :] = 255
    ycc = ((rng.random((3,) + small_hw) - 0.5) * 1.2).astype(np.float32)  # chroma well outside the gamut too
    ycc[0] = rng.random(small_hw) * 1.2 - 0.1  # the generator's Y may overshoot [0, 1]
    return y, ycc


@pytest.mark.parametrize("full,small_hw", [((1, 1), (16, 16)), ((7, 5), (16, 16)), ((300, 200), (192, 256)),
                                           ((256, 256), (256, 256)), ((1000, 700), (256, 176)), ((513, 2047), (64, 256))])
def test_fast_post_matches_reference(monkeypatch, full, small_hw):
    y, ycc = _random_case(sum(full), full, small_hw)
    fast = colour.colour_onto_luma(y, ycc[1:], workers=2), colour.ycbcr_small_to_rgb(ycc, full, workers=2)
    monkeypatch.setenv(tiling.FAST_PATH_ENV, "0")
    ref = colour.colour_onto_luma(y, ycc[1:]), colour.ycbcr_small_to_rgb(ycc, full)
    for a, b in zip(fast, ref):
        assert a.shape == b.shape == full + (3,) and a.dtype == np.uint8
        diff = np.abs(a.astype(int) - b)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float rounding only


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_fast_fusion_matches_reference(monkeypatch, weight):
    rng = np.random.default_rng(3)
    c = rng.integers(0, 256, (301, 517, 3), dtype=np.uint8)
    s = rng.integers(0, 256, (301, 517, 3), dtype=np.uint8)
    fast = fusion.fuse_weighted(c, s, weight, workers=2), fusion.fuse_luminance(c, s, weight, workers=2)
    monkeypatch.setenv(tiling.FAST_PATH_ENV, "0")
    ref = fusion.fuse_weighted(c, s, weight), fusion.fuse_luminance(c, s, weight)
    for a, b in zip(fast, ref):
        assert np.abs(a.astype(int) - b).max() <= 1


def test_fast_post_same_for_any_thread_count(monkeypatch):
    y, ycc = _random_case(0, (700, 333), (256, 128))
    monkeypatch.setattr(tiling, "TILE_PIXELS", 4096)  # many tiles, so threads really interleave
    outs = [colour.colour_onto_luma(y, ycc[1:], workers=n) for n in (1, 2, 3)]
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_fast_post_upsamples_like_pillow():
    plane = np.random.default_rng(1).random((24, 40)).astype(np.float32)
    up = resample.Upsampled(plane, (96, 150))
    ours = up.tile(0, 96)
    pillow = resample.resize_plane(plane, (96, 150))
    assert np.abs(ours - pillow).max() < 1e-5


def test_fast_path_env_switch(monkeypatch):
    assert tiling.fast_path_enabled()
    monkeypatch.setenv(tiling.FAST_PATH_ENV, "0")
    assert not tiling.fast_path_enabled()


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (5, 9), (96, 128), (301, 517)])
@pytest.mark.parametrize("detail,detail_levels,levels", [(0.7, 2, 5), (1.0, 1, 5), (0.3, 4, 3), (1.0, 6, 6), (0.0, 2, 5)])
def test_fast_laplacian_matches_reference(monkeypatch, shape, detail, detail_levels, levels):
    rng = np.random.default_rng(shape[0])
    c = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    s = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    fast = fusion.fuse_laplacian(c, s, detail, detail_levels, levels, workers=2)
    monkeypatch.setenv(tiling.FAST_PATH_ENV, "0")
    ref = fusion.fuse_laplacian(c, s, detail, detail_levels, levels)
    diff = np.abs(fast.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float summation order only


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_fast_post_works_in_a_forked_child():
    """A child forked after the thread pool exists must not wait on the parent's dead threads."""
    import multiprocessing as mp

    y, ycc = _random_case(5, (400, 300), (256, 192))
    expected = colour.colour_onto_luma(y, ycc[1:], workers=2)  # creates the pool in the parent
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(colour.colour_onto_luma, (y, ycc[1:], 2)).get(timeout=60)
    assert np.array_equal(got, expected)


def test_ab_auc_with_the_truths_lab_given_once(astronaut: np.ndarray):
    """Scoring several outputs against one photo may pass its a*b* planes once: same score; a
    wrongly sized one is refused with the sizes named."""
    from training import metrics

    truth = astronaut[:96, :128]
    grey = np.repeat(np.asarray(Image.fromarray(truth).convert("L"))[..., None], 3, axis=2)
    ab = metrics.rgb_to_lab(truth)[..., 1:]
    for out in (grey, truth[::-1].copy()):
        assert metrics.ab_auc(out, truth, truth_ab=ab) == metrics.ab_auc(out, truth)
    assert metrics.ab_auc(truth, truth) == 100.0
    assert metrics.ab_auc(grey, truth) < 100.0
    with pytest.raises(ValueError, match=r"\(96, 128, 2\)"):
        metrics.ab_auc(grey, truth, truth_ab=ab[:64])
