"""``chromaforge serve`` under pressure: admission control by memory, cancellation of work whose
request timed out or whose client went, connection limits (slow headers, idle connections, too
many connections, requests per connection), and the inputs that used to give 500 or echo
megabytes back (float TIFF, declared decompression bombs, a 900 KB style name).

The servers run the bundled model on 127.0.0.1 (a free port), with the limits ``chromaforge serve``
runs with (:func:`sdk.serve.app.uvicorn_config`). Every wait is bounded; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import socket
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is not installed")

from test_serve import decoded, grey, metric, png, running  # noqa: E402

from sdk.errors import ImageTooLargeError, InvalidArgumentError  # noqa: E402
from sdk.serve import admission  # noqa: E402
from sdk.serve.admission import MemoryBudget, Refused, Reservation, TooLarge, estimate, parse_bytes, probe  # noqa: E402
from sdk.serve.app import ServeConfig, create_app, cut  # noqa: E402

BUNDLED = dict(backend="onnxruntime-cpu", threads=1)


def png_declaring(w: int, h: int, bit_depth: int = 8, colour_type: int = 0, data: bool = True) -> bytes:
    """A PNG whose header says ``w`` x ``h``: with ``data`` complete and all zero (it compresses to a
    few kB even at 8192x8192), else only one row of data (a header-declared bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = 1 + w * channels * bit_depth // 8
    comp = zlib.compressobj(9)
    zero = bytes(row)
    idat = b"".join(comp.compress(zero) for _ in range(h if data else 1)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def wait_for(predicate, what: str, limit: float = 30.0) -> None:
    """Poll ``predicate`` until true (at most ``limit`` s)."""
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def metrics(url: str) -> str:
    return httpx.get(url + "/metrics").text


def read_all(sock: socket.socket, limit: float = 20.0) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout if it does not)."""
    sock.settimeout(limit)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def request_bytes(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


# ------------------------------------------------------------------------------- budget, units
def test_parse_bytes_and_the_default_budget(tmp_path):
    assert parse_bytes("2G") == 2 * 2**30 == parse_bytes("2GiB")
    assert parse_bytes("512M") == 512 * 2**20 and parse_bytes("1.5g") == 3 * 2**29 and parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("1000000") == 10**6 and parse_bytes(4096) == 4096
    for bad in ("lots", "-1G", "0", "2 X", ""):
        with pytest.raises(InvalidArgumentError):
            parse_bytes(bad)
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert admission.memory_limit(tmp_path) == (2**30, str(tmp_path / "memory.max"))
    (tmp_path / "memory.max").write_text("max\n")
    assert admission.memory_limit(tmp_path)[1] == "physical RAM"
    total, why = admission.default_budget()
    assert total >= admission.MIN_DEFAULT and "of" in why


def test_cli_takes_memory_and_connection_flags(capsys):
    from sdk.cli import main

    assert main(["serve", "--max-memory", "lots"]) == 2
    assert "not a size" in capsys.readouterr().err
    assert main(["serve", "--max-connections", "0"]) == 2
    assert "max_connections is 0" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError):
        ServeConfig(max_memory=1000)
    with pytest.raises(InvalidArgumentError):
        ServeConfig(read_timeout_s=0)


def test_estimate_from_the_header_of_an_8192_square_png():
    """8-bit and 16-bit 8192x8192 PNGs (solid: a few kB) are sized from their header, nothing decoded."""
    side = 8192
    eight, sixteen, rgba = png_declaring(side, side), png_declaring(side, side, 16), png_declaring(side, side, 8, 6)
    assert len(eight) < 200_000 and len(sixteen) < 400_000
    i8, i16, i4 = probe(eight, "image", None), probe(sixteen, "image", None), probe(rgba, "image", None)
    assert (i8.width, i8.height, i8.kind, i8.alpha) == (side, side, "grey", False)
    assert i16.kind == "grey16" and i4.kind == "rgb" and i4.alpha
    px = side * side
    per = admission.BYTES_PER_PIXEL
    e8 = estimate("colorize", [i8], len(eight), False)
    assert e8 == int(px * per["colorize"]["grey"] * admission.MARGIN) + admission.OVERHEAD + len(eight)
    assert estimate("stylize+fuse", [i8], len(eight), False) > estimate("stylize", [i8], len(eight), False)
    assert estimate("colorize", [i4], len(rgba), False) > e8
    assert estimate("colorize", [i8], len(eight), True) == e8 + len(eight)  # multipart: two copies of the body
    assert estimate("colorize", [i8], 0, False, "image/webp") > estimate("colorize", [i8], 0, False)
    assert estimate("fuse", [i8, i8], 0, False) > estimate("fuse", [i8, None], 0, False)
    assert probe(b"not an image", "image", None) is None
    with pytest.raises(ImageTooLargeError, match="8192x8192"):
        probe(eight, "image", 8192 * 8191)


def test_declared_bombs_are_too_large_from_the_header():
    bomb = png_declaring(100_000, 100_000, data=False)  # 10 GP declared, 1 row of data
    assert len(bomb) < 1000
    for limit in (8192 * 8192, None):  # ours, or Pillow's own when ours is off
        with pytest.raises(ImageTooLargeError):
            probe(bomb, "image", limit)


def test_memory_budget_queue_expected_wait_and_release():
    """One budget on a fake clock: admit, wait in turn, refuse when the queue is full or the expected
    wait is past the deadline, too large, cancelled waiters, and memory held until threads return."""
    now = [0.0]
    budget = MemoryBudget(400, queue=1, clock=lambda: now[0])
    assert (budget.body_pool, budget.work_pool) == (100, 300)

    async def main() -> None:
        a, b, c, d = Reservation(), Reservation(), Reservation(), Reservation()
        budget.hold_body(a, 50)
        assert budget.body_held == 50
        await budget.admit(a, 200, deadline=10)
        assert (budget.body_held, budget.work_held, a.work) == (0, 200, 200)  # the body moved to the work pool
        assert budget.expected_wait(200) is None  # nothing freed yet: no rate to judge by
        now[0] = 2.0
        budget.close(a)  # 200 bytes freed over 2 s in use: 100 B/s
        assert budget.work_held == 0 and budget.release_rate() == pytest.approx(100, rel=0.05)
        await budget.admit(b, 200, deadline=10)
        with pytest.raises(Refused) as refused:  # 100 bytes short at 100 B/s: ~1 s, with 0.5 s left
            await budget.admit(c, 200, deadline=now[0] + 0.5)
        assert refused.value.retry_after == 1 and "timeout" in str(refused.value)
        waiting = asyncio.ensure_future(budget.admit(c, 200, deadline=now[0] + 5))
        await asyncio.sleep(0)
        assert budget.waiting == 1 and budget.waiting_bytes == 200
        with pytest.raises(Refused, match="waiting for memory"):  # queue of 1: full
            await budget.admit(d, 10, deadline=100)
        with pytest.raises(TooLarge):
            await budget.admit(d, 301, deadline=100)
        budget.thread_started(b)
        budget.close(b)  # its worker thread still runs: nothing freed yet
        assert budget.work_held == 200 and not waiting.done()
        budget.thread_done(b)
        await asyncio.wait_for(waiting, 5)
        assert c.work == 200 and budget.work_held == 200 and budget.waiting == 0
        # a cancelled waiter leaves the queue and lets the ones behind it in
        late = asyncio.ensure_future(budget.admit(d, 200, deadline=100))
        await asyncio.sleep(0)
        late.cancel()
        with pytest.raises(asyncio.CancelledError):
            await late
        assert budget.waiting == 0
        budget.close(c)
        assert budget.held == 0 and budget.peak_held == 200  # the body moved into the estimate
        # bodies: refused when the pool is full, too large when one body is above it
        budget.hold_body(d, 80)
        with pytest.raises(Refused, match="bodies"):
            budget.hold_body(Reservation(), 30)
        budget.release_body(d, 40)  # a transient copy gone: room again
        budget.hold_body(e := Reservation(), 30)
        budget.close(e)
        with pytest.raises(TooLarge):
            budget.hold_body(Reservation(), 101)
        budget.close(d)
        assert budget.held == 0

    asyncio.run(main())


def test_cut_and_clip():
    long = "x" * 900_000
    text = cut(long)
    assert len(text) < 140 and "900000 characters" in text
    assert cut("ukiyoe") == "'ukiyoe'"


# ------------------------------------------------------------------------------- the service
@pytest.fixture(scope="module")
def bundled():
    import sdk

    pipe = sdk.load(**BUNDLED)
    yield pipe
    pipe.close()


@pytest.fixture(scope="module")
def server():
    with running(ServeConfig(port=0, max_batch=2, max_wait_ms=2, max_body_mb=2.0, **BUNDLED)) as url:
        yield url


def test_memory_is_shown_and_measured(server):
    h = httpx.get(server + "/healthz").json()
    assert h["memory"]["budget_bytes"] > 0 and h["memory"]["reserved_bytes"] == 0 and "of" in h["memory"]["source"]
    config = httpx.get(server + "/v1/models").json()["config"]
    assert config["memory"]["work_pool_bytes"] + config["memory"]["body_pool_bytes"] == config["memory"]["budget_bytes"]
    assert config["max_memory"] == config["memory"]["budget_bytes"] == h["memory"]["budget_bytes"]
    assert httpx.post(server + "/v1/colorize", content=png(grey(48, 64))).status_code == 200
    text = metrics(server)
    for name in ("chromaforge_memory_budget_bytes", 'chromaforge_memory_reserved_bytes{pool="work"}', "chromaforge_memory_queue_length",
                 "chromaforge_memory_reserved_peak_bytes", "chromaforge_connections_open", 'chromaforge_stage_runs_total{stage="finish"}'):
        assert name in text, name
    assert metric(text, "chromaforge_memory_reserved_peak_bytes") > 0
    assert metric(text, 'chromaforge_memory_reserved_bytes{pool="work"}') == 0  # freed after the answer


def test_float_tiff_is_answered_like_the_sdk(server, bundled):
    values = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    buf = io.BytesIO()
    Image.fromarray(values, "F").save(buf, format="TIFF")
    r = httpx.post(server + "/v1/colorize", content=buf.getvalue())
    assert r.status_code == 200, r.text
    out = decoded(r.content)
    assert out.shape == (48, 64, 3)
    expected = decoded(bundled.colorize(buf.getvalue()))  # bytes in, PNG bytes out
    assert np.abs(out.astype(int) - expected).max() <= 2


def test_bombs_and_oversized_headers_are_413_before_decoding(server):
    before = metric(metrics(server), 'chromaforge_stage_runs_total{stage="prepare"}')
    for body in (png_declaring(100_000, 100_000, data=False), png_declaring(9000, 9000, data=False)):
        r = httpx.post(server + "/v1/colorize", content=body)
        assert r.status_code == 413 and r.json()["status"] == 413, r.text
    r = httpx.post(server + "/v1/fuse", files={"content": ("a.png", png_declaring(100_000, 100_000, data=False)),
                                               "stylized": ("b.png", png(grey(8, 8)))})
    assert r.status_code == 413, r.text
    assert metric(metrics(server), 'chromaforge_stage_runs_total{stage="prepare"}') == before  # nothing decoded


def test_long_values_are_not_echoed(server):
    img = png(grey(16, 16))
    style = "x" * 900_000
    r = httpx.post(server + "/v1/stylize", files={"image": ("g.png", img, "image/png")}, data={"style": style})
    assert r.status_code == 422 and len(r.text) < 1000 and "900000 characters" in r.json()["error"], r.text[:300]
    r = httpx.post(server + "/v1/stylize", files={"image": ("g.png", img, "image/png")}, data={"style": "y" * 500})
    assert r.status_code == 422 and len(r.text) < 1000 and "ukiyoe" in r.json()["error"], r.text[:300]  # the SDK's message, cut
    for name in ("strength", "fuse"):
        r = httpx.post(server + "/v1/stylize", params={name: "z" * 5000}, content=img)
        assert r.status_code == 422 and len(r.text) < 1000, r.text[:300]
    # in the query string a 900 KB value is past the request-line limit: 431, as JSON
    with connect(server) as sock:
        sock.sendall(f"POST /v1/stylize?style={'x' * 20000}".encode())
        answer = read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431") and json.loads(body)["status"] == 431, answer[:300]


def test_long_query_value_in_process():
    """The app itself, called as ASGI (no HTTP server's line limit, no client's URL limit): a 900 KB
    style in the query string gives a short 422."""
    app = create_app(ServeConfig(**BUNDLED, max_batch=1))
    service = app.state.service
    body = png(grey(16, 16))

    async def call() -> tuple[int, bytes]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/stylize", "raw_path": b"/v1/stylize", "query_string": b"style=" + b"x" * 900_000, "root_path": "",
                 "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("t", 80)}
        sent, done = [], asyncio.Event()

        async def receive() -> dict:
            if not sent:
                sent.append(1)
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        out: list[dict] = []

        async def send(message: dict) -> None:
            out.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)
        return out[0]["status"], b"".join(m.get("body", b"") for m in out[1:])

    async def main() -> tuple[int, bytes]:
        async with app.router.lifespan_context(app):
            while not service.ready:
                assert service.load_error is None
                await asyncio.sleep(0.05)
            return await call()

    status, text = asyncio.run(main())
    assert status == 422 and len(text) < 1000 and "900000 characters" in json.loads(text)["error"], text[:300]


def test_requests_wait_for_memory_then_get_503(bundled):
    """A budget for one 512x512 request: the second waits for the first's memory (queue of 1), the
    third is refused at once with Retry-After; both waiting ones are answered; all memory comes back."""
    img = png(grey(512, 512, 5))
    need = estimate("colorize", [probe(img, "image", None)], len(img), False)
    config = ServeConfig(max_memory=2 * need, queue=1, max_batch=8, max_wait_ms=3000, **BUNDLED)  # work pool: 1.5 requests
    with running(config) as url, concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, url + "/v1/colorize", content=img, timeout=60)
        wait_for(lambda: metric(metrics(url), "chromaforge_queue_depth") >= 1, "the first request to wait for its batch")
        second = pool.submit(httpx.post, url + "/v1/colorize", content=img, timeout=60)
        wait_for(lambda: metric(metrics(url), "chromaforge_memory_queue_length") == 1, "the second request to wait for memory")
        third = httpx.post(url + "/v1/colorize", content=img)
        assert third.status_code == 503 and int(third.headers["retry-after"]) >= 1, third.text
        assert "waiting for memory" in third.json()["error"]
        assert first.result().status_code == 200 and second.result().status_code == 200
        text = metrics(url)
    assert metric(text, 'chromaforge_memory_reserved_bytes{pool="work"}') == 0
    assert metric(text, 'chromaforge_admission_refused_total{reason="queue_full"}') == 1
    assert need <= metric(text, "chromaforge_memory_reserved_peak_bytes") <= 2 * need


def test_request_above_the_budget_is_413_without_decoding():
    big = png_declaring(8192, 8192)
    with running(ServeConfig(max_memory=256 * 2**20, max_batch=1, **BUNDLED)) as url:
        r = httpx.post(url + "/v1/colorize", content=big)
        assert r.status_code == 413 and "memory" in r.json()["error"], r.text
        text = metrics(url)
    assert metric(text, 'chromaforge_stage_runs_total{stage="prepare"}') == 0
    assert metric(text, 'chromaforge_admission_refused_total{reason="too_large"}') == 1


def test_timed_out_request_stops_before_its_next_stage():
    """504 while the job waits for its batch: the job never reaches the generator or finish, and its
    memory is freed."""
    with running(ServeConfig(max_batch=8, max_wait_ms=4000, timeout_s=1.0, **BUNDLED)) as url:
        r = httpx.post(url + "/v1/colorize", content=png(grey(64, 64)), timeout=30)
        assert r.status_code == 504 and r.json()["status"] == 504
        wait_for(lambda: metric(metrics(url), "chromaforge_queue_depth") == 0, "the batcher to drop the job")
        text = metrics(url)
    assert metric(text, 'chromaforge_cancelled_total{reason="timeout",stage="infer"}') == 1
    assert metric(text, "chromaforge_batch_size_count") == 0  # the generator never ran it
    assert metric(text, 'chromaforge_stage_runs_total{stage="prepare"}') == 1
    assert metric(text, 'chromaforge_stage_runs_total{stage="finish"}') == 0
    assert metric(text, 'chromaforge_memory_reserved_bytes{pool="work"}') == 0


def test_client_that_goes_away_cancels_its_work():
    with running(ServeConfig(max_batch=8, max_wait_ms=4000, timeout_s=60, **BUNDLED)) as url:
        sock = connect(url)
        sock.sendall(request_bytes("/v1/colorize", png(grey(64, 64))))
        wait_for(lambda: metric(metrics(url), "chromaforge_queue_depth") >= 1, "the job to wait for its batch")
        sock.close()
        wait_for(lambda: metric(metrics(url), 'chromaforge_cancelled_total{reason="disconnect",stage="infer"}') == 1,
                 "the server to see the client go")
        wait_for(lambda: metric(metrics(url), "chromaforge_queue_depth") == 0, "the batcher to drop the job")
        text = metrics(url)
        assert httpx.post(url + "/v1/colorize", content=png(grey(32, 32)), timeout=30).status_code == 200  # still serving
    assert metric(text, "chromaforge_batch_size_count") == 0
    assert metric(text, 'chromaforge_stage_runs_total{stage="finish"}') == 0
    assert metric(text, 'chromaforge_memory_reserved_bytes{pool="work"}') == 0


def test_slow_headers_and_idle_connections_are_dropped_while_others_are_served():
    with running(ServeConfig(max_batch=1, read_timeout_s=1.0, **BUNDLED)) as url:
        idle = [connect(url) for _ in range(20)]
        slow = connect(url)
        slow.sendall(b"POST /v1/colorize HTTP/1.1\r\nHost: t\r\nContent-Len")  # and stalls
        body_slow = connect(url)
        body_slow.sendall(b"POST /v1/colorize HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n\x89PNG")  # headers, part of a body
        assert httpx.post(url + "/v1/colorize", content=png(grey(32, 32)), timeout=30).status_code == 200
        assert all(read_all(s) == b"" for s in idle)  # closed without a word
        head, _, body = read_all(slow).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and "headers" in json.loads(body)["error"]
        head, _, body = read_all(body_slow).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and "body" in json.loads(body)["error"], head
        for s in idle + [slow, body_slow]:
            s.close()
        assert httpx.get(url + "/healthz").status_code == 200
        text = metrics(url)
    assert metric(text, 'chromaforge_connections_dropped_total{reason="header_timeout"}') >= 21


def test_connection_limit_and_requests_per_connection():
    with running(ServeConfig(max_batch=1, max_connections=4, keep_alive_requests=2, **BUNDLED)) as url:
        idle = [connect(url) for _ in range(4)]

        def refused() -> bool:
            with connect(url) as extra:
                try:
                    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    return read_all(extra).startswith(b"HTTP/1.1 503")
                except (ConnectionResetError, BrokenPipeError):  # refused before its request was read
                    return True

        wait_for(refused, "a connection past --max-connections to be refused")
        for s in idle:
            s.close()
        wait_for(lambda: metric(metrics(url), "chromaforge_connections_open") <= 1, "the idle connections to close")
        with httpx.Client() as client:
            first, second = client.get(url + "/healthz"), client.get(url + "/healthz")
        assert first.headers.get("connection") != "close" and second.headers["connection"] == "close"
        text = metrics(url)
    assert metric(text, 'chromaforge_connections_dropped_total{reason="over_limit"}') >= 1
