"""Property-based fuzzing (Hypothesis) of the HTTP API of ``chromaforge serve``, driven by the
service's own OpenAPI document (``GET /openapi.json``).

For every operation the document lists, requests are drawn from its parameters (absent, valid,
or any text: huge, negative, ``nan``, unicode), its request body's media types (the raw image body
or multipart, with extra fields) and bodies of every kind (images of several formats and modes,
truncated, bit-flipped, random bytes, empty, header-declared bombs), plus ``Accept`` headers, other
methods and unknown paths. Each answer must keep the contract:

- no 5xx other than 503 (with ``Retry-After``) and 504;
- every error answer is JSON ``{"error": text, "status": its code}``;
- a 200 from an image endpoint is an image of a type ``Accept`` allows.

Budget: a few dozen requests in CI (derandomised, well under a minute on the bundled model). A long run::

    CHROMAFORGE_FUZZ_EXAMPLES=5000 python -m pytest tests/test_serve_fuzz.py -q -p no:cacheprovider
"""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is not installed")

from test_serve import running  # noqa: E402

from sdk.serve.app import FORMATS, ServeConfig  # noqa: E402

LONG = int(os.environ.get("CHROMAFORGE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=LONG or 40, deadline=None, database=None, derandomize=not LONG, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
MAX_PIXELS = 256 * 256
"""The fuzz server's pixel limit: a mutated header may claim any size; decoding stays fast."""

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:PIL"), pytest.mark.filterwarnings("ignore::DeprecationWarning:PIL")]


@pytest.fixture(scope="module")
def api():
    """(base URL, OpenAPI document, style names) of a server on the bundled model."""
    with running(ServeConfig(port=0, backend="onnxruntime-cpu", threads=1, max_batch=4, max_wait_ms=2, max_pixels=MAX_PIXELS,
                             max_body_mb=1.0, timeout_s=20)) as url:
        spec = httpx.get(url + "/openapi.json").json()
        styles = httpx.get(url + "/v1/models").json()["styles"]
        yield url, spec, styles


# ------------------------------------------------------------------------------------ bodies
def _encode(mode: str, fmt: str, h: int, w: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    im = Image.fromarray(base, "RGBA").convert(mode) if mode not in ("I;16", "F") else \
        Image.fromarray((base[:, :, 0].astype(np.uint16) * 257) if mode == "I;16" else base[:, :, 0].astype(np.float32) / 255)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im.save(buf, format=fmt)
    return buf.getvalue()


FORMS = [("PNG", m) for m in ("L", "LA", "RGB", "RGBA", "P", "I;16")] + [("JPEG", "L"), ("JPEG", "RGB"), ("WEBP", "RGB"),
                                                                          ("TIFF", "F"), ("TIFF", "CMYK"), ("BMP", "RGB"), ("GIF", "P")]


def _bomb(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(1 + w))) + chunk(b"IEND", b""))


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["image", "image", "image", "truncated", "flipped", "random", "empty", "bomb"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "empty":
        return b""
    if kind == "bomb":
        return _bomb(draw(st.integers(257, 200_000)), draw(st.integers(257, 200_000)))
    fmt, mode = draw(st.sampled_from(FORMS))
    data = _encode(mode, fmt, draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(0, 2**16)))
    if kind == "truncated":
        return data[:draw(st.integers(0, len(data)))]
    if kind == "flipped":
        raw = bytearray(data)
        for i in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(raw)
    return data


def values(name: str, schema: dict, styles: list[str]):
    """A query or form value for parameter ``name`` (any text, or something it means)."""
    anything = st.text(max_size=40) | st.sampled_from(["", "nan", "-inf", "1e400", "-1", "0", "1", "2", " ", "\x00", "é", "a" * 3000])
    if schema.get("type") == "number":
        return anything | st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.floats(0, 1).map(str)
    if name == "style":
        blend = st.dictionaries(st.sampled_from(styles), st.floats(0, 2), min_size=1, max_size=3).map(
            lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
        return anything | st.sampled_from(styles) | blend
    if name in ("fuse", "method"):
        return anything | st.sampled_from(["laplacian", "weighted", "luminance", "tone", "colour"])
    return anything


ACCEPT = st.none() | st.sampled_from(["image/png", "image/jpeg", "image/webp", "image/webp,image/*;q=0.8", "*/*", "text/html",
                                      "image/jpeg;q=0", "application/json", "image/png;q=abc"]) \
    | st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=30).map(
        lambda t: t.strip().encode("latin-1"))


@st.composite
def requests(draw, spec: dict, styles: list[str]) -> dict:
    """One request for an operation of ``spec`` (or an unknown path / another method)."""
    ops = [(path, verb, op) for path, item in spec["paths"].items() for verb, op in item.items()]
    choice = draw(st.integers(0, len(ops) + 1))
    if choice == len(ops):
        return {"method": "GET", "url": "/" + draw(st.text("abcdefghijklmnopqrstuvwxyz/._-%", max_size=20)), "kw": {}}
    if choice == len(ops) + 1:
        path = draw(st.sampled_from([p for p, _, _ in ops]))
        return {"method": draw(st.sampled_from(["PUT", "DELETE", "PATCH", "GET", "POST"])), "url": path, "kw": {}}
    path, verb, op = ops[choice]
    params = {}
    for p in op.get("parameters", []):
        if draw(st.booleans()):
            params[p["name"]] = draw(values(p["name"], p.get("schema", {}), styles))
    kw: dict = {"params": params}
    headers = {}
    accept = draw(ACCEPT)
    if accept is not None:
        headers["accept"] = accept
    body = op.get("requestBody")
    if body is not None:
        media = draw(st.sampled_from(sorted(body["content"])))
        if media == "multipart/form-data":
            props = body["content"][media]["schema"].get("properties", {})
            files = {name: (f"{name}.bin", draw(bodies()), "application/octet-stream")
                     for name in props if draw(st.integers(0, 5)) > 0}
            fields = {k: kw["params"].pop(k) for k in list(params) if draw(st.booleans())}  # some parameters as form fields
            kw.update(files=files or None, data=fields or None)
        else:
            kw["content"] = draw(bodies())
            if draw(st.booleans()):
                headers["content-type"] = draw(st.sampled_from(["image/png", "application/octet-stream", "multipart/form-data",
                                                               "multipart/form-data; boundary=x", "text/plain"]))
    kw["headers"] = headers
    return {"method": verb.upper(), "url": path, "kw": kw}


def check(r: httpx.Response, req: dict) -> None:
    where = f"{req['method']} {req['url']} -> {r.status_code}: {r.text[:300]!r}"
    assert r.status_code < 500 or r.status_code in (503, 504), where
    if r.status_code == 503:
        assert int(r.headers["retry-after"]) >= 1, where
    if r.status_code >= 400:
        assert r.headers.get("content-type", "").startswith("application/json"), where
        answer = json.loads(r.content)
        assert isinstance(answer["error"], str) and answer["error"] and answer["status"] == r.status_code, where
        assert len(r.content) < 4000, where  # nothing long echoed back
    elif r.status_code == 200 and req["url"].startswith("/v1/") and req["method"] == "POST":
        media = r.headers["content-type"]
        assert media in FORMATS, where
        with Image.open(io.BytesIO(r.content)) as im:
            assert im.format == FORMATS[media], where


def test_http_api_keeps_its_contract(api):
    url, spec, styles = api
    assert {"/v1/colorize", "/v1/stylize", "/v1/fuse"} <= set(spec["paths"])

    @FUZZ
    @given(st.data())
    def run(data) -> None:
        req = data.draw(requests(spec, styles))
        with httpx.Client(base_url=url, timeout=60) as client:
            r = client.request(req["method"], req["url"], **req["kw"])
        check(r, req)

    run()
    assert httpx.get(url + "/healthz").status_code == 200  # and the server is still fine
