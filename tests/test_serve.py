"""``chromaforge serve``: every endpoint and error status, dynamic batching seen through the
metrics, graceful shutdown on SIGTERM, and the browser page in a real headless Chromium.

Servers run the tiny test model on 127.0.0.1, on a port the OS picks; every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is not installed")

from sdk.backends import Backend  # noqa: E402
from sdk.serve.app import ServeConfig, create_app, negotiate, uvicorn_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running(config: ServeConfig, wait_ready: bool = True, app=None):
    """Run the app (or ``create_app(config)``) on a free loopback port in a thread; yields the base
    URL; stops on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = app or create_app(config)
    server = uvicorn.Server(uvicorn_config(app))  # the limits `chromaforge serve` runs with
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(url + "/healthz", timeout=5)
                if r.status_code == 200 or (not wait_ready and r.status_code == 503 and r.json()["status"] != "loading"):
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("server did not become ready within 60 s")
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "server thread did not stop"


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def grey(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 255 // max(w - 1, 1) + rng.integers(0, 40, (h, w))) % 256).astype(np.uint8)


def decoded(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with running(ServeConfig(port=0, model_dir=str(tiny_model_dir), backend="onnxruntime-cpu", threads=1,
                             max_batch=8, max_wait_ms=5, max_pixels=1_000_000, max_body_mb=1.0)) as url:
        yield url


def test_negotiate():
    assert negotiate(None) == "image/png"
    assert negotiate("*/*") == "image/png"
    assert negotiate("image/webp,image/*;q=0.8") == "image/webp"
    assert negotiate("image/jpeg;q=0.5, image/png;q=0.4") == "image/jpeg"
    assert negotiate("image/webp;q=0") == "image/png"


def test_config_is_checked():
    from sdk.errors import InvalidArgumentError

    for bad in (dict(max_batch=0), dict(queue=0), dict(timeout_s=0), dict(port=70000), dict(max_pixels=-1)):
        with pytest.raises(InvalidArgumentError):
            ServeConfig(**bad)


def test_cli_serve_refuses_bad_options(capsys):
    from sdk.cli import main

    assert main(["serve", "--max-batch", "0"]) == 2
    assert "max_batch is 0" in capsys.readouterr().err


def test_info_endpoints(server, tiny_pipeline):
    r = httpx.get(server + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    info = httpx.get(server + "/v1/models").json()
    assert info["styles"] == tiny_pipeline.styles()
    assert info["backend"] == "onnxruntime-cpu" and info["reason"] and info["precision"] == "fp32"
    assert info["sha256"] == tiny_pipeline.manifest.sha256
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "<script>" in page.text and "/v1/stylize" in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), "the page must not load anything from outside"
    spec = httpx.get(server + "/openapi.json").json()
    assert {"/v1/colorize", "/v1/stylize", "/v1/fuse", "/v1/models", "/healthz", "/metrics"} <= set(spec["paths"])
    assert "/v1/stylize" in httpx.get(server + "/docs").text
    m = httpx.get(server + "/metrics")
    assert m.status_code == 200 and "chromaforge_queue_depth" in m.text and "chromaforge_batch_size_bucket" in m.text
    assert 'chromaforge_requests_total{route="/v1/models",status="200"}' in m.text


def test_colorize_raw_and_multipart_and_formats(server, tiny_pipeline):
    img = grey(90, 130)
    expected = tiny_pipeline.colorize(img)
    raw = httpx.post(server + "/v1/colorize", content=png(img))
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    out = decoded(raw.content)
    assert out.shape == (90, 130, 3)
    assert np.abs(out.astype(int) - expected).max() <= 2
    multi = httpx.post(server + "/v1/colorize", files={"image": ("g.png", png(img), "image/png")})
    assert multi.status_code == 200 and np.array_equal(decoded(multi.content), out)
    for accept, fmt in (("image/jpeg", "JPEG"), ("image/webp", "WEBP")):
        r = httpx.post(server + "/v1/colorize", content=png(img), headers={"Accept": accept})
        assert r.status_code == 200 and r.headers["content-type"] == accept
        assert Image.open(io.BytesIO(r.content)).format == fmt and Image.open(io.BytesIO(r.content)).size == (130, 90)


def test_stylize_parameters(server, tiny_pipeline):
    import sdk

    img = grey(100, 80, 1)
    r = httpx.post(server + "/v1/stylize", params={"style": "ukiyoe=0.6,rococo=0.4", "strength": "0.8"}, content=png(img))
    assert r.status_code == 200
    expected = tiny_pipeline.stylize(img, {"ukiyoe": 0.6, "rococo": 0.4}, strength=0.8)
    assert np.abs(decoded(r.content).astype(int) - expected).max() <= 2
    r = httpx.post(server + "/v1/stylize", params={"style": "rococo", "saturation": "1.5"}, content=png(img))
    assert r.status_code == 200
    assert np.abs(decoded(r.content).astype(int) - tiny_pipeline.stylize(img, "rococo", saturation=1.5)).max() <= 2
    r = httpx.post(server + "/v1/colorize", params={"saturation": "0"}, content=png(img))
    assert r.status_code == 200 and np.array_equal(decoded(r.content), np.repeat(img[:, :, None], 3, axis=2))
    # fuse and detail as multipart fields
    r = httpx.post(server + "/v1/stylize", files={"image": ("g.png", png(img), "image/png")},
                   data={"style": "pointillism", "fuse": "laplacian", "detail": "1.0"})
    assert r.status_code == 200
    art = tiny_pipeline.stylize(img, "pointillism")
    fused = sdk.fuse(img, art, method="laplacian", detail=1.0)
    assert np.abs(decoded(r.content).astype(int) - fused).max() <= 3
    # fuse_weight reaches the tone fusion
    r = httpx.post(server + "/v1/stylize", params={"style": "pointillism", "fuse": "tone", "fuse_weight": "1"}, content=png(img))
    assert r.status_code == 200
    assert np.abs(decoded(r.content).astype(int) - sdk.fuse(img, art, method="tone", weight=1.0)).max() <= 3
    assert np.abs(decoded(r.content).astype(int) - sdk.fuse(img, art, method="tone", weight=0.5)).max() > 3  # the weight mattered


def test_fuse_endpoint(server):
    import sdk

    a, b = np.stack([grey(64, 96, 2)] * 3, -1), np.stack([grey(64, 96, 3)] * 3, -1)
    r = httpx.post(server + "/v1/fuse", params={"method": "weighted", "weight": "0.25"},
                   files={"content": ("a.png", png(a), "image/png"), "stylized": ("b.png", png(b), "image/png")})
    assert r.status_code == 200
    assert np.array_equal(decoded(r.content), sdk.fuse(a, b, method="weighted", weight=0.25))


def test_error_statuses(server):
    img = png(grey(32, 32))

    def post(path, expect, **kw):
        r = httpx.post(server + path, **kw)
        assert r.status_code == expect, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json") and r.json()["error"]
        return r.json()["error"]

    # 413: body above --max-body-mb (1 MiB here), and pixels above --max-pixels read from the header
    post("/v1/colorize", 413, content=os.urandom(1_100_000))
    big = io.BytesIO()
    Image.new("L", (2000, 1000)).save(big, format="PNG")  # a few kB, 2 MP
    assert "2000x1000" in post("/v1/colorize", 413, content=big.getvalue())
    # 415: not an image, a truncated image
    post("/v1/colorize", 415, content=b"definitely not an image")
    post("/v1/stylize", 415, content=img[: len(img) // 2])
    # 422: bad parameters, unknown style (the message lists the valid ones), missing image
    assert "ukiyoe" in post("/v1/stylize", 422, params={"style": "cubism"}, content=img)
    post("/v1/stylize", 422, params={"strength": "2"}, content=img)
    post("/v1/stylize", 422, params={"strength": "strong"}, content=img)
    assert "saturation" in post("/v1/colorize", 422, params={"saturation": "-1"}, content=img)
    post("/v1/stylize", 422, params={"saturation": "vivid"}, content=img)
    post("/v1/stylize", 422, params={"style": "ukiyoe=lots"}, content=img)
    post("/v1/stylize", 422, params={"fuse": "median"}, content=img)
    post("/v1/stylize", 422, params={"fuse": "laplacian", "detail": "-1"}, content=img)
    post("/v1/colorize", 422, content=b"")
    post("/v1/fuse", 422, files={"content": ("a.png", img, "image/png")})
    post("/v1/fuse", 422, params={"method": "median"}, files={"content": ("a.png", img, "image/png"), "stylized": ("b.png", img, "image/png")})
    post("/v1/colorize", 422, content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"})
    assert httpx.get(server + "/v1/colorize").status_code == 405
    # random bodies and parameters: always a 4xx answer (or 200), never a dead worker
    rng = np.random.default_rng(11)
    for i in range(24):
        body = img[: int(rng.integers(0, len(img)))] + rng.bytes(int(rng.integers(0, 64))) if i % 2 else rng.bytes(int(rng.integers(1, 4096)))
        params = {"style": rng.choice(["ukiyoe", "x=1", "=", "ukiyoe=1e400", ",", "natural=0"]),
                  "strength": rng.choice(["0.5", "nan", "-0", "1e9", ""]), "fuse": rng.choice(["", "weighted", "laplacian"])}
        r = httpx.post(server + rng.choice(["/v1/colorize", "/v1/stylize", "/v1/fuse"]), params=params, content=body)
        assert r.status_code in (200, 413, 415, 422), (params, r.status_code, r.text)
    # the worker is still fine
    assert httpx.post(server + "/v1/colorize", content=img).status_code == 200
    text = httpx.get(server + "/metrics").text
    for status in ("413", "415", "422"):
        assert f'status="{status}"' in text


def test_queue_full_timeout_and_not_ready(tiny_model_dir):
    img = png(grey(32, 32))
    # A job waits 1.5 s for company; capacity 1: the next one is refused with 503 + Retry-After.
    with running(ServeConfig(model_dir=str(tiny_model_dir), backend="onnxruntime-cpu", threads=1, max_batch=8,
                             max_wait_ms=1500, queue=1, timeout_s=0.5)) as url:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, url + "/v1/colorize", content=img, timeout=30)
            deadline = time.monotonic() + 10
            while metric(httpx.get(url + "/metrics").text, "chromaforge_queue_depth") < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            busy = httpx.post(url + "/v1/colorize", content=img)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            # the first one outlives --timeout-s (0.5 s) waiting for its batch: 504
            assert first.result().status_code == 504
    # A model that cannot load: /healthz and the endpoints say 503 with the reason.
    with running(ServeConfig(model_dir=str(tiny_model_dir / "missing")), wait_ready=False) as url:
        h = httpx.get(url + "/healthz")
        assert h.status_code == 503 and h.json()["status"] == "failed" and "missing" in h.json()["error"]
        assert httpx.post(url + "/v1/colorize", content=img).status_code == 503


class BrokenBackend(Backend):
    """A backend that answers with the wrong shape (a broken engine): infer raises."""

    name = "broken"

    def run(self, luma: np.ndarray, style: np.ndarray) -> np.ndarray:
        return np.zeros((1, 3, 2, 2), np.float32)


def test_backend_failure_is_a_500_and_the_worker_survives(tiny_model_dir):
    config = ServeConfig(model_dir=str(tiny_model_dir), backend="onnxruntime-cpu", threads=1)
    app = create_app(config)
    img = png(grey(32, 48))
    with running(config, app=app) as url:
        batcher = app.state.service.batcher
        real, batcher.runner = batcher.runner, BrokenBackend()
        r = httpx.post(url + "/v1/colorize", content=img)
        assert r.status_code == 500 and "broken" in r.json()["error"]
        batcher.runner = real
        assert httpx.post(url + "/v1/colorize", content=img).status_code == 200
        assert httpx.get(url + "/healthz").status_code == 200


def test_concurrent_styles_share_batches(tiny_model_dir, tiny_pipeline):
    styles = tiny_pipeline.styles()
    jobs = [(grey(96 + 8 * (i % 2), 128, i), styles[i % len(styles)]) for i in range(12)]
    with running(ServeConfig(model_dir=str(tiny_model_dir), backend="onnxruntime-cpu", threads=1, max_batch=8, max_wait_ms=300)) as url:
        def call(job):
            img, style = job
            return httpx.post(url + "/v1/stylize", params={"style": style}, content=png(img), timeout=30)

        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(call, jobs))
        text = httpx.get(url + "/metrics").text
    for (img, style), r in zip(jobs, answers):
        assert r.status_code == 200
        assert np.abs(decoded(r.content).astype(int) - tiny_pipeline.stylize(img, style)).max() <= 2, style
    batches, jobs_run = metric(text, "chromaforge_batch_size_count"), metric(text, "chromaforge_batch_size_sum")
    assert jobs_run == len(jobs)  # the warm-up runs through the pipeline, not the batcher
    assert batches < len(jobs), f"{len(jobs)} concurrent requests ran in {batches} batches: none was shared"


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def wait_healthy(url: str, proc: subprocess.Popen, err: Path) -> int:
    """Poll /healthz until 200 (60 s at most); returns how many answers the server sent."""
    answers, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}: {err.read_text()}"
        try:
            r = httpx.get(url + "/healthz", timeout=2)
        except httpx.TransportError:  # not listening yet: no answer
            pass
        else:
            answers += 1
            if r.status_code == 200:
                return answers
        time.sleep(0.1)
    raise AssertionError(f"server not ready within 60 s: {err.read_text()}")


ACCESS_LINE = re.compile(r"^chromaforge serve: (GET|POST) (/\S*) (\d{3}) (\d+) B \d+\.\d ms from 127\.0\.0\.1:\d+$", re.M)


def test_sigterm_finishes_in_flight_and_exits_0(tiny_model_dir, tmp_path):
    """Through the CLI: the in-flight request is answered, exit 0; stderr has the listening line
    with the real port, one line per request and the stop line with their count."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    err = tmp_path / "stderr.txt"
    with err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "sdk", "--model-dir", str(tiny_model_dir), "--backend", "onnxruntime-cpu",
                                 "--threads", "1", "serve", "--port", str(port), "--max-wait-ms", "1000"],
                                stdout=subprocess.PIPE, stderr=stderr, cwd=REPO)
    try:
        wait_healthy(url, proc, err)
        deadline = time.monotonic() + 60
        assert httpx.post(url + "/v1/colorize", content=b"not an image").status_code == 415
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            inflight = pool.submit(httpx.post, url + "/v1/colorize", content=png(grey(40, 60)), timeout=30)
            while metric(httpx.get(url + "/metrics").text, "chromaforge_queue_depth") < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            r = inflight.result()
        assert r.status_code == 200 and decoded(r.content).shape == (40, 60, 3)
        assert proc.wait(30) == 0, err.read_text()
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = err.read_text()
    assert re.search(rf"^chromaforge serve: listening on {url} \(model \S+, backend onnxruntime-cpu, fp32, max batch 8, memory [\d.]+ [KMG]iB, page at /\)$",
                     text, re.M), text
    lines = ACCESS_LINE.findall(text)
    colorize = [(status, int(size)) for method, path, status, size in lines if (method, path) == ("POST", "/v1/colorize")]
    assert colorize[0][0] == "415" and colorize[1] == ("200", len(r.content)), text
    assert ("GET", "/healthz", "200") in {line[:3] for line in lines}
    assert all(status == "200" for method, path, status, _ in lines if path == "/metrics")
    assert text.rstrip().endswith(f"chromaforge serve: stopped after {len(lines)} requests"), text
    assert "INFO" not in text and "Uvicorn" not in text  # uvicorn's own lines stay off


def test_serve_without_access_log(tiny_model_dir, tmp_path):
    """serve(config, access_log=False): the listening and stop lines, no request lines."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    err = tmp_path / "stderr.txt"
    code = ("import sys; from sdk.serve.app import ServeConfig, serve; "
            f"sys.exit(serve(ServeConfig(port={port}, model_dir={str(tiny_model_dir)!r}, backend='onnxruntime-cpu', threads=1), "
            "access_log=False))")
    with err.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, cwd=REPO)
    try:
        answers = wait_healthy(url, proc, err)
        assert httpx.post(url + "/v1/colorize", content=png(grey(24, 24))).status_code == 200
        assert httpx.get(url + "/nowhere").status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = err.read_text()
    assert f"chromaforge serve: listening on {url} (" in text
    assert not ACCESS_LINE.search(text) and "/v1/colorize" not in text, text
    assert text.rstrip().endswith(f"chromaforge serve: stopped after {answers + 2} requests"), text


def test_serve_refuses_a_taken_port(capsys):
    from sdk.cli import main
    from sdk.errors import InvalidArgumentError
    from sdk.serve.app import serve

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(InvalidArgumentError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(ServeConfig(port=port))
        assert main(["serve", "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        taken.close()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


BROKEN_IMAGES = """Array.from(document.images)
    .filter(i => i.getClientRects().length > 0 && !(i.complete && i.naturalWidth > 0)).map(i => i.id || i.alt)"""
"""Images on screen without a loaded picture (each would show a broken-image icon)."""
RESULT_SHOWN = "!document.getElementById('after').hidden && document.getElementById('after').naturalWidth > 0"


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it")
def test_browser_page_end_to_end(astronaut, tmp_path: Path):
    """The bundled model, on a 320x240 grey photo: no download link and no broken images before a
    result, the result and its link after, an error clears the result, no sideways scrolling at a
    390-px phone width. The page's screenshot goes to tmp_path; with CHROMAFORGE_UPDATE_DOCS=1 it
    also replaces the README's picture, docs/serve.png (a test run does not rewrite tracked files
    otherwise)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    photo = np.asarray(Image.fromarray(astronaut).convert("L").resize((320, 240)))
    with running(ServeConfig(backend="onnxruntime-cpu", threads=1)) as url:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 560})
                page.set_default_timeout(30_000)
                page.goto(url + "/")
                page.wait_for_selector("#mode option[value='style:ukiyoe']", state="attached")
                assert not page.is_visible("#download"), "a download link before any result"
                assert page.evaluate(BROKEN_IMAGES) == [] and page.is_visible("#after-empty")
                page.set_input_files("#file", files=[{"name": "photo.png", "mimeType": "image/png", "buffer": png(photo)}])
                page.wait_for_function("!document.getElementById('before').hidden")
                assert page.evaluate(BROKEN_IMAGES) == [] and not page.is_visible("#download")
                page.select_option("#mode", "style:ukiyoe")
                page.select_option("#fuse", "laplacian")
                page.click("#run")
                page.wait_for_function(RESULT_SHOWN)
                assert page.inner_text("#status").startswith("done")
                assert page.is_visible("#download") and page.get_attribute("#download", "href") == page.get_attribute("#after", "src")
                assert page.evaluate(BROKEN_IMAGES) == [] and not page.is_visible("#after-empty")
                data = page.evaluate("""async () => {
                    const r = await fetch(document.getElementById('after').src);
                    return Array.from(new Uint8Array(await r.arrayBuffer()));
                }""")
                size = page.evaluate("[document.getElementById('after').naturalWidth, document.getElementById('after').naturalHeight]")
                page.screenshot(path=str(tmp_path / "serve.png"))
                # the saturation slider reaches the service: colorize at 0 gives the photo's own grey
                page.select_option("#mode", "colorize")
                page.select_option("#fuse", "")
                page.fill("#saturation", "0")
                page.click("#run")
                page.wait_for_function("document.getElementById('status').textContent.startsWith('done')")
                grey_data = page.evaluate("""async () => {
                    const r = await fetch(document.getElementById('after').src);
                    return Array.from(new Uint8Array(await r.arrayBuffer()));
                }""")
                # an error (unknown style) clears the previous result and says why
                page.select_option("#mode", "blend")
                page.fill("#blend", "cubism=1")
                page.click("#run")
                page.wait_for_function("document.getElementById('status').className === 'error'")
                error = page.inner_text("#status")
                assert "cubism" in error and "ukiyoe" in error, error
                assert not page.is_visible("#after") and page.get_attribute("#after", "src") is None
                assert not page.is_visible("#download") and page.is_visible("#after-empty")
                assert page.evaluate(BROKEN_IMAGES) == []
                # a phone: nothing wider than the screen, before and after a result
                page.set_viewport_size({"width": 390, "height": 844})
                widths = [page.evaluate("document.documentElement.scrollWidth")]
                page.select_option("#mode", "colorize")
                page.click("#run")
                page.wait_for_function(RESULT_SHOWN)
                widths.append(page.evaluate("document.documentElement.scrollWidth"))
                assert widths == [390, 390], f"the page is {widths} px wide at a 390-px viewport"
                assert page.evaluate(BROKEN_IMAGES) == [] and page.is_visible("#download")
                page.screenshot(path=str(tmp_path / "serve_phone.png"), full_page=True)
            finally:
                browser.close()
    result = decoded(bytes(data))
    assert size == [320, 240] and result.shape == (240, 320, 3)
    assert np.abs(result.astype(int) - photo[:, :, None]).mean() > 1.0, "the rendered result equals the input"
    assert np.array_equal(decoded(bytes(grey_data)), np.repeat(photo[:, :, None], 3, axis=2))
    assert (tmp_path / "serve.png").stat().st_size < 300_000
    if os.environ.get("CHROMAFORGE_UPDATE_DOCS") == "1":
        shutil.copyfile(tmp_path / "serve.png", REPO / "docs" / "serve.png")
