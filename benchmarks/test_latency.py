"""End-to-end latency: decoded uint8 array in, array out, through the Pipeline."""

from __future__ import annotations

import pytest

from conftest import SIZES, info, photo


@pytest.mark.parametrize("size", list(SIZES))
def test_colorize(benchmark, pipeline, size):
    img = photo(size, grey=True)
    info(benchmark, pipeline, size)
    out = benchmark(pipeline.colorize, img)
    assert out.shape == img.shape + (3,)


@pytest.mark.parametrize("size", list(SIZES))
def test_stylize(benchmark, pipeline, size):
    img = photo(size, grey=False)
    info(benchmark, pipeline, size, style="ukiyoe")
    out = benchmark(pipeline.stylize, img, "ukiyoe")
    assert out.shape == img.shape


@pytest.mark.parametrize("size", list(SIZES))
def test_fuse_laplacian(benchmark, pipeline, size):
    img = photo(size, grey=False)
    sty = pipeline.stylize(img, "pointillism")
    info(benchmark, pipeline, size, method="laplacian")
    out = benchmark(pipeline.fuse, img, sty)
    assert out.shape == img.shape


@pytest.mark.parametrize("batch", [1, 8])
def test_colorize_batch_512(benchmark, pipeline, batch):
    imgs = [photo("512", grey=True)] * batch
    info(benchmark, pipeline, "512", batch=batch)
    outs = benchmark(pipeline.colorize, imgs)
    assert len(outs) == batch
