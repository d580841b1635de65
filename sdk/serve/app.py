"""The ASGI application of ``chromaforge serve`` (Starlette on uvicorn).

Endpoints:
    ``POST /v1/colorize`` (``saturation``), ``POST /v1/stylize`` (``style``: a name or ``ukiyoe=0.6,rococo=0.4``;
    ``strength``; ``fuse``: laplacian, weighted or luminance; ``detail``; ``saturation``), ``POST /v1/fuse``
    (``content`` and ``stylized``; ``method``, ``detail``, ``weight``). The image is the raw
    request body or the multipart field ``image``; parameters come in the query string or as
    multipart fields. The answer is PNG, or JPEG / WebP when ``Accept`` asks for it.
    ``GET /v1/models``, ``GET /healthz`` (200 once the model is loaded and warmed), ``GET /metrics``
    (Prometheus), ``GET /openapi.json`` and ``GET /docs``, ``GET /`` (the browser page).

Errors are JSON ``{"error": ..., "status": ...}``: 408 (body not received within ``read_timeout_s``),
413 (body or pixels over the limit, the pixels read from the header before decoding, or more memory
than the budget holds), 415 (not a readable image), 422 (bad parameters, unknown style), 503 with
``Retry-After`` (no memory in time, queue full, not ready, shutting down), 504 (``timeout_s``
passed; the request's work stops at its next stage), 500 (the backend failed; the worker keeps running).

Memory: every request reserves its estimated peak (from the image header) from a budget of
``max_memory`` bytes before it decodes, and waits in turn when it does not fit
(:mod:`sdk.serve.admission`). Connections: :mod:`sdk.serve.connections` (header timeout, open
connection limit, requests per connection).

Logging: ``sdk.serve`` says where the service listens once the model is ready and when it stops;
``sdk.serve.access`` has one line per request (method, path, status, bytes, milliseconds, client).
:func:`serve` sends both to stderr; under another ASGI server they go wherever logging is configured.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from sdk import stages
from sdk.errors import BackendUnavailableError, ChromaforgeError, ImageTooLargeError, InvalidArgumentError, InvalidImageError, UnknownStyleError
from sdk.fusion import FUSE_METHODS, FuseParams, fuse_rgb
from sdk.images import MAX_PIXELS, check_max_pixels, decode
from sdk.serve.admission import MemoryBudget, Refused, Reservation, TooLarge, default_budget, estimate, format_bytes, probe
from sdk.serve.batcher import Batcher, QueueFullError
from sdk.serve.connections import DEFAULT_MAX_HEADER_BYTES, ConnectionGuard

log = logging.getLogger("sdk.serve")
access_logger = logging.getLogger("sdk.serve.access")

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
"""Response media types and their Pillow format names; PNG unless ``Accept`` prefers another."""
PAGE = Path(__file__).resolve().parent / "page.html"
MAX_ECHO = 80
"""Longest user-given value an error message repeats whole (longer ones are cut, with their length)."""
MAX_MESSAGE = 2000
"""Longest error message in a JSON answer (the middle of a longer one is cut)."""
MAX_STYLE = 1000
"""Longest ``style`` parameter read (a name or a blend; no model has a style name near it)."""


@dataclass(frozen=True)
class ServeConfig:
    """Settings of the service (``chromaforge serve --help`` names them in kebab-case).

    Args:
        host, port: where to listen (loopback by default; put a load balancer in front).
        model_dir: model folder; None for the bundled model.
        backend: ``"auto"`` or a name from :func:`sdk.backends.names`.
        threads: CPU threads for inference and post-processing (None: the runtime's default).
        precision: ``"fp32"`` / ``"fp16"`` to ask the backend for it; None for its default.
        max_batch: most jobs per generator call (1: no batching).
        max_wait_ms: longest a job waits for others to join its batch.
        queue: most jobs waiting for a batch; more are refused with 503.
        max_pixels: refuse images with more pixels (413, from the header); None for no limit.
        max_body_mb: refuse request bodies above this many MiB (413).
        timeout_s: a request not answered by then gets 504 (its work stops at the next stage).
        max_memory: bytes requests may reserve in all (:mod:`sdk.serve.admission`); None: half the
            cgroup's memory limit, else of the physical RAM.
        read_timeout_s: a request's line and headers, and then its body, must arrive within this
            (connection closed, or 408).
        keep_alive_s: an idle keep-alive connection is closed after this (uvicorn's ``timeout_keep_alive``).
        max_connections: most open connections; more are answered 503 and closed at once.
        keep_alive_requests: most requests on one connection (0: no limit).

    Raises:
        InvalidArgumentError: a value out of range.

    Example:
        >>> ServeConfig(port=0, max_batch=1).max_wait_ms
        5.0
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model_dir: str | None = None
    backend: str = "auto"
    threads: int | None = None
    precision: str | None = None
    max_batch: int = 8
    max_wait_ms: float = 5.0
    queue: int = 64
    max_pixels: int | None = MAX_PIXELS
    max_body_mb: float = 64.0
    timeout_s: float = 30.0
    max_memory: int | None = None
    read_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 512
    keep_alive_requests: int = 1000

    def __post_init__(self) -> None:
        check_max_pixels(self.max_pixels)
        m = self.max_memory
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 2**20):
            raise InvalidArgumentError(f"max_memory is {self.max_memory!r}; expected bytes >= 1 MiB (e.g. 2G), or None for the default")
        for name, lo in (("port", 0), ("max_batch", 1), ("queue", 1), ("max_connections", 1), ("keep_alive_requests", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (name == "port" and v > 65535):
                raise InvalidArgumentError(f"{name} is {v!r}; expected an integer >= {lo}")
        for name in ("max_wait_ms", "max_body_mb", "timeout_s", "read_timeout_s", "keep_alive_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name != "max_wait_ms" and v == 0):
                raise InvalidArgumentError(f"{name} is {v!r}; expected a finite number > 0")


class HTTPError(Exception):
    """An answer other than 200, with its JSON message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def status_of(error: ChromaforgeError) -> int:
    """The HTTP status of an SDK error: 413 too many pixels, 415 unreadable image, 422 bad option, 500 backend, else 400."""
    if isinstance(error, ImageTooLargeError):
        return 413
    if isinstance(error, InvalidImageError):
        return 415
    if isinstance(error, (InvalidArgumentError, UnknownStyleError)):
        return 422
    if isinstance(error, BackendUnavailableError):
        return 500
    return 400


def cut(value: str, limit: int = MAX_ECHO) -> str:
    """``repr(value)``, or for a long value its start and end around ``...`` and its length.

    Example:
        >>> cut("a" * 900_000, 20)
        "'aaaaaaaaaaaaa...aaaaa' (900000 characters)"
    """
    if len(value) <= limit:
        return repr(value)
    head = limit * 3 // 4
    return f"{value[:head]!r}...{value[len(value) - (limit - head):]!r} ({len(value)} characters)".replace("'...'", "...")


def clip_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """An error message of at most about ``limit`` characters: a longer one loses its middle."""
    if len(message) <= limit:
        return message
    return f"{message[:limit * 2 // 3]} [... {len(message) - limit} characters cut ...] {message[-(limit // 3):]}"


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("chromaforge_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("chromaforge_request_seconds", "request latency", ["route"], registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.batch = Histogram("chromaforge_batch_size", "jobs per generator call", registry=r,
                               buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64))
        self.depth = Gauge("chromaforge_queue_depth", "jobs waiting for a batch", registry=r)
        self.budget = Gauge("chromaforge_memory_budget_bytes", "bytes requests may reserve in all (--max-memory)", registry=r)
        self.reserved = Gauge("chromaforge_memory_reserved_bytes", "bytes reserved by requests now, by pool", ["pool"], registry=r)
        self.reserved_peak = Gauge("chromaforge_memory_reserved_peak_bytes", "most bytes reserved at once since start", registry=r)
        self.waiting = Gauge("chromaforge_memory_queue_length", "requests waiting for memory", registry=r)
        self.waiting_bytes = Gauge("chromaforge_memory_queue_bytes", "bytes the requests waiting for memory ask for", registry=r)
        self.refused = Counter("chromaforge_admission_refused", "requests refused by admission control, by reason", ["reason"], registry=r)
        self.estimate = Histogram("chromaforge_memory_estimate_bytes", "estimated peak memory of admitted requests", registry=r,
                                  buckets=tuple(2.0**k for k in range(20, 36)))
        self.stages = Counter("chromaforge_stage_runs", "request stages run on a worker thread, by stage", ["stage"], registry=r)
        self.cancelled = Counter("chromaforge_cancelled", "requests whose work stopped early, by reason and the stage they were in",
                                 ["reason", "stage"], registry=r)
        self.connections = Gauge("chromaforge_connections_open", "open HTTP connections", registry=r)
        self.dropped = Counter("chromaforge_connections_dropped", "connections closed by the server's limits, by reason", ["reason"],
                               registry=r)


class RequestWork:
    """One request's deadline, memory reservation and stages; cancelled on timeout or when the client goes.

    Stages run on the service's worker threads (:meth:`run`). A cancelled request stops at the next
    stage boundary: a stage already running finishes on its thread (and keeps the request's memory
    reserved until it does), the next one never starts, and a job waiting for a batch leaves the queue.
    """

    def __init__(self, service: Service, deadline: float) -> None:
        self.service, self.deadline = service, deadline
        self.reservation = Reservation()
        self.stage = "body"
        self.cancelled: str | None = None
        self.task: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None

    async def run(self, stage: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on a worker thread as stage ``stage`` (counted when it really starts)."""
        self.stage = stage
        service, res = self.service, self.reservation
        loop = asyncio.get_running_loop()

        def counted() -> Any:
            service.metrics.stages.labels(stage).inc()
            return fn(*args)

        service.budget.thread_started(res)
        future = service.pool.submit(counted)

        def done(_: concurrent.futures.Future) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown): nothing to free
                loop.call_soon_threadsafe(service.budget.thread_done, res)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def watch(self, receive: Any) -> None:
        """Cancel this request's work when the client disconnects (call once the body is read)."""
        async def watcher() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.cancel("disconnect")

        self._watcher = asyncio.create_task(watcher())

    def cancel(self, reason: str) -> None:
        """Stop the request's work (``reason``: ``timeout`` or ``disconnect``), once."""
        if self.cancelled is None and self.task is not None and not self.task.done():
            self.cancelled = reason
            self.service.metrics.cancelled.labels(reason, self.stage).inc()
            self.task.cancel()

    def close(self) -> None:
        """The answer is ready: stop watching, free the memory (once no worker thread holds it).

        Drops the tasks too: a finished task keeps its exception, whose traceback holds the frames
        that hold this object; without this, the request's images stayed alive in that reference
        cycle until the garbage collector happened to run.
        """
        if self._watcher is not None:
            self._watcher.cancel()
        self._watcher = self.task = None
        self.service.budget.close(self.reservation)


class Service:
    """The model, the batcher, the memory budget and the request handling behind the routes."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.pipe = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        self.url: str | None = None
        """Where the server listens (set by :func:`serve`), for the line logged once ready."""
        self.requests = 0
        """HTTP requests answered so far (counted by :class:`AccessLog`)."""
        self._task: asyncio.Task | None = None
        if config.max_memory is None:
            total, self.budget_source = default_budget()
        else:
            total, self.budget_source = config.max_memory, "--max-memory"
        self.budget = MemoryBudget(total, config.queue)
        self.pool = concurrent.futures.ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="chromaforge-work")
        """Worker threads for decoding, finishing and encoding (never the event loop)."""
        m, b = self.metrics, self.budget
        m.budget.set(b.total)
        m.reserved.labels("body").set_function(lambda: b.body_held)
        m.reserved.labels("work").set_function(lambda: b.work_held)
        m.reserved_peak.set_function(lambda: b.peak_held)
        m.waiting.set_function(lambda: b.waiting)
        m.waiting_bytes.set_function(lambda: b.waiting_bytes)
        self.guard = ConnectionGuard(config.read_timeout_s, config.max_connections, config.keep_alive_requests,
                                     lambda kind: m.dropped.labels(kind).inc())
        m.connections.set_function(lambda: self.guard.open)

    def memory(self) -> dict[str, Any]:
        """The budget and what is reserved from it now (for /healthz and /v1/models)."""
        b = self.budget
        return {"budget_bytes": b.total, "budget": format_bytes(b.total), "source": self.budget_source,
                "body_pool_bytes": b.body_pool, "work_pool_bytes": b.work_pool, "reserved_bytes": b.held,
                "reserved_peak_bytes": b.peak_held, "waiting": b.waiting, "waiting_bytes": b.waiting_bytes}

    # ------------------------------------------------------------------ lifetime
    def _load(self) -> None:
        import sdk

        c = self.config
        pipe = sdk.load(c.model_dir, backend=c.backend, threads=c.threads, max_pixels=c.max_pixels, max_batch=c.max_batch,
                       precision=c.precision)
        # Warm-up: a full batch at the largest working shape with every style, so the runtime's
        # arena reaches its working size now (the memory bound counts from the RSS once ready).
        grey = np.full((pipe.manifest.work_size, pipe.manifest.work_size), 128, np.uint8)
        pipe.stylize([grey] * c.max_batch, {name: 1.0 for name in pipe.styles()})
        self.pipe = pipe

    async def start(self) -> None:
        """Load and warm the model off the event loop, then start the batcher."""
        c = self.config
        log.info("chromaforge serve: %sloading the model (%s, backend %s); /healthz answers 503 until it is ready",
                 f"bound to {self.url}, " if self.url else "", c.model_dir or "bundled", c.backend)
        try:
            await asyncio.to_thread(self._load)
        except Exception as e:  # /healthz says why; the process stays up for the operator to see
            self.load_error = f"{type(e).__name__}: {e}"
            where = f"; listening on {self.url}, /healthz answers 503" if self.url else ""
            log.error("chromaforge serve: model not loaded: %s%s", self.load_error, where)
            return
        self.batcher = Batcher(self.pipe.runner, c.max_batch, c.max_wait_ms / 1000, c.queue, self.metrics.batch.observe)
        self.metrics.depth.set_function(lambda: self.batcher.depth)  # read when /metrics is scraped
        self._task = asyncio.create_task(self.batcher.run())
        self.ready = True
        what = (f"model {self.pipe.manifest.name}, backend {self.pipe.backend_name}, {self.pipe.precision}, max batch {c.max_batch}, "
                f"memory {format_bytes(self.budget.total)}")
        if self.url:
            log.info("chromaforge serve: listening on %s (%s, page at /)", self.url, what)
        else:
            log.info("chromaforge serve: ready (%s)", what)

    async def stop(self) -> None:
        """Finish waiting jobs, stop the batcher and the worker threads, free the model."""
        self.draining, self.ready = True, False
        if self.batcher is not None:
            self.batcher.stop()
        if self._task is not None:
            await self._task
        await asyncio.to_thread(self.pool.shutdown, True)
        if self.pipe is not None:
            self.pipe.close()

    def check_ready(self) -> None:
        """Raise 503 (with ``Retry-After``) unless the model is loaded, warmed and not draining."""
        if not self.ready:
            why = "shutting down" if self.draining else (f"model failed to load: {self.load_error}" if self.load_error else "model loading")
            raise HTTPError(503, f"not ready ({why}); retry later", {"Retry-After": "1"})

    # ------------------------------------------------------------------ input
    async def body(self, request: Request, work: RequestWork) -> bytes:
        """The request body, held from the memory budget's body pool as it comes; refused with 413
        past ``max_body_mb`` (before reading it when declared), 408 past ``read_timeout_s``."""
        limit = int(self.config.max_body_mb * 2**20)
        declared = request.headers.get("content-length")
        copies = 2  # the chunks and their join; then, for multipart, the body and its parsed parts
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body is {int(declared)} bytes, above the limit of {limit} bytes (--max-body-mb)")
        try:
            if declared and declared.isdigit():
                self.budget.hold_body(work.reservation, copies * int(declared))
            chunks, size = [], 0

            async def read() -> None:
                nonlocal size
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise HTTPError(413, f"request body is above the limit of {limit} bytes (--max-body-mb)")
                    if copies * size > work.reservation.body:  # undeclared length: hold as it comes, 1 MiB at a time
                        self.budget.hold_body(work.reservation, max(copies * size - work.reservation.body, 2**20))
                    chunks.append(chunk)

            await asyncio.wait_for(read(), self.config.read_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPError(408, f"request body not received within {self.config.read_timeout_s:g} s (--read-timeout-s)",
                            {"Connection": "close"}) from None
        except (Refused, TooLarge) as e:
            raise self.refusal(e) from e
        data = b"".join(chunks)
        del chunks
        kept = size * (2 if request.headers.get("content-type", "").startswith("multipart/form-data") else 1)  # + its parts
        self.budget.release_body(work.reservation, work.reservation.body - kept)
        return data

    async def inputs(self, request: Request, fields: tuple[str, ...], work: RequestWork) -> tuple[dict[str, bytes], dict[str, str]]:
        """Images (multipart fields ``fields``, or the raw body for the first) and the parameters;
        from here on a client that disconnects cancels the request."""
        data = await self.body(request, work)
        work.watch(request.receive)
        params = dict(request.query_params)
        images: dict[str, bytes] = {}
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}

            try:
                async with Request(request.scope, replay).form(max_files=4, max_fields=32) as form:
                    for key, value in form.multi_items():
                        if isinstance(value, str):
                            params[key] = value
                        else:
                            images[key] = await value.read()
            except HTTPError:
                raise
            except Exception as e:  # malformed multipart
                raise HTTPError(422, f"cannot parse the multipart body ({type(e).__name__}: {clip_message(str(e), 200)}); "
                                     f"send fields {list(fields)} as files") from e
        elif data:
            images[fields[0]] = data
        missing = [f for f in fields if not images.get(f)]
        if missing:
            how = "the raw request body or a multipart field 'image'" if fields == ("image",) else "multipart file fields"
            raise HTTPError(422, f"missing image {missing}; send it as {how}")
        return images, params

    # ------------------------------------------------------------------ memory
    def refusal(self, error: Refused | TooLarge) -> HTTPError:
        """The answer for an admission refusal: 413 (never fits) or 503 with ``Retry-After``."""
        if isinstance(error, TooLarge):
            self.metrics.refused.labels("too_large").inc()
            return HTTPError(413, str(error))
        self.metrics.refused.labels(error.reason).inc()
        return HTTPError(503, f"server busy: {error}; retry later", {"Retry-After": str(error.retry_after)})

    async def admit(self, work: RequestWork, op: str, images: list[bytes], multipart: bool, media: str) -> None:
        """Read the images' headers (a worker thread), estimate the request's memory and reserve it,
        waiting in turn (:meth:`MemoryBudget.admit`).

        Raises:
            ImageTooLargeError: a header declares more pixels than allowed (413).
            HTTPError: 413 more memory than the budget holds; 503 none in time.
        """
        def headers() -> list:
            return [probe(data, name, self.config.max_pixels) for name, data in zip(("content", "stylized"), images)] \
                if len(images) == 2 else [probe(images[0], "image", self.config.max_pixels)]

        infos = await work.run("probe", headers)
        need = estimate(op, infos, sum(map(len, images)), multipart, media)
        work.stage = "admission"
        try:
            await self.budget.admit(work.reservation, need, work.deadline)
        except (Refused, TooLarge) as e:
            raise self.refusal(e) from e
        self.metrics.estimate.observe(need)

    # ------------------------------------------------------------------ work
    def prepare(self, data: bytes, options: stages.ResolvedOptions) -> stages.Job:
        """:func:`sdk.stages.prepare` on a worker thread; the job's result will be uint8 pixels (not PNG bytes).

        Raises:
            InvalidImageError, ImageTooLargeError: mapped to 415 / 413.
        """
        job = stages.prepare(data, options, "image", self.config.max_pixels)
        job.source.kind = "array"  # finish returns pixels; the response is encoded per Accept
        job.source.float_out = False  # a float input (32-bit TIFF) is answered as 8-bit like any other
        return job

    def finish(self, job: stages.Job, output: np.ndarray, media: str) -> bytes:
        """:func:`sdk.stages.finish`, then encoded as ``media``."""
        return encode_image(stages.finish(job, output, self.pipe.workers), media)

    async def run_model(self, work: RequestWork, data: bytes, options: stages.ResolvedOptions, media: str, multipart: bool) -> bytes:
        """admission -> prepare (thread) -> the batcher (shared generator call) -> finish and encode (thread).

        Raises:
            HTTPError: 503 when the queue is full, no memory comes in time or the service is not ready.
        """
        op = "stylize+fuse" if options.task == "stylize" and options.fusion is not None else options.task
        await self.admit(work, op, [data], multipart, media)
        job = await work.run("prepare", self.prepare, data, options)
        self.check_ready()
        try:
            future = self.batcher.submit(job)
        except QueueFullError as e:
            raise HTTPError(503, f"server busy: {e}; retry later", {"Retry-After": "1"}) from e
        work.stage = "infer"
        output = await future
        return await work.run("finish", self.finish, job, output, media)


class AccessLog:
    """ASGI middleware: counts HTTP requests in ``service.requests`` and, when ``enabled``, logs one
    line per answer on ``sdk.serve.access``: method, path, status, body bytes, milliseconds, client."""

    def __init__(self, app: Any, service: Service, enabled: bool = True) -> None:
        self.app, self.service, self.enabled = app, service, enabled

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status: int | None = None
        size = 0

        async def counted(message: dict[str, Any]) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self.service.requests += 1
            if self.enabled:
                client = scope.get("client")
                path = scope.get("path", "").encode("unicode_escape").decode("ascii")[:200]  # no control characters in the log
                access_logger.info("chromaforge serve: %s %s %s %d B %.1f ms from %s", scope.get("method", "-"), path,
                                status or 500, size, (time.perf_counter() - t0) * 1000,
                                f"{client[0]}:{client[1]}" if client else "-")


def encode_image(pixels: np.ndarray, media: str) -> bytes:
    """HxWx3 or HxWx4 uint8 (float in [0, 1] is scaled) -> encoded bytes of ``media`` (JPEG drops alpha)."""
    if pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    im = Image.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    fmt = FORMATS[media]
    if fmt == "JPEG" and im.mode == "RGBA":
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 92} if fmt != "PNG" else {"compress_level": 1}))
    return buf.getvalue()


def negotiate(accept: str | None) -> str:
    """The response media type for an ``Accept`` header: the supported type of highest q, else PNG.

    Example:
        >>> negotiate("image/webp,image/*;q=0.8")
        'image/webp'
    """
    best, best_q = "image/png", -1.0
    for i, part in enumerate((accept or "").split(",")):
        media, *opts = [p.strip() for p in part.split(";")]
        q = 1.0
        for o in opts:
            if o.startswith("q="):
                try:
                    q = float(o[2:])
                except ValueError:
                    q = 0.0
        if media in FORMATS and q > best_q and q > 0:
            best, best_q = media, q
    return best


def _number(params: dict[str, str], name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HTTPError(422, f"{name} is {cut(raw)}; expected a number") from None
    return value


def create_app(config: ServeConfig | None = None, *, access_log: bool = True) -> Starlette:
    """The ASGI app for ``config`` (model loaded in the background on startup; /healthz says when).

    Args:
        config: the settings; None for the defaults.
        access_log: one INFO line per request on the ``sdk.serve.access`` logger.

    Returns:
        A Starlette app; ``app.state.service`` is its :class:`Service`.

    Example:
        >>> uvicorn.run(create_app(ServeConfig(max_batch=8)), host="127.0.0.1", port=8000)
    """
    config = config or ServeConfig()
    service = Service(config)
    m = service.metrics

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": clip_message(message), "status": status}, status, headers=headers)

    def endpoint(route: str, handler):
        """``handler(request, work)`` under the request's timeout, its client watched, its memory freed after."""
        async def wrapped(request: Request) -> Response:
            t0 = time.perf_counter()
            work = RequestWork(service, time.monotonic() + config.timeout_s)
            task = work.task = asyncio.create_task(handler(request, work))
            try:
                done, _ = await asyncio.wait({task}, timeout=config.timeout_s)
                if not done:
                    work.cancel("timeout")
                    with contextlib.suppress(BaseException):
                        await task
                    raise asyncio.TimeoutError
                response = task.result()
            except HTTPError as e:
                response = error(e.status, e.message, e.headers)
            except ChromaforgeError as e:
                response = error(status_of(e), str(e))
            except Image.DecompressionBombError as e:  # Pillow's own limit, if the decoder meets it before ours
                response = error(413, f"image above Pillow's decompression-bomb limit ({e}); downscale it")
            except asyncio.TimeoutError:
                response = error(504, f"no answer within {config.timeout_s:g} s (--timeout-s); retry later")
            except asyncio.CancelledError:
                if work.cancelled != "disconnect":
                    task.cancel()
                    raise  # the server is stopping this request
                response = error(499, "client closed the connection before the answer")  # nobody reads it: for the log
            except Exception as e:  # a bug or a backend failure: this request fails, the worker stays
                log.exception("chromaforge serve: %s failed", route)
                response = error(500, f"internal error ({type(e).__name__}: {e})")
            finally:
                work.close()
            m.requests.labels(route, str(response.status_code)).inc()
            m.latency.labels(route).observe(time.perf_counter() - t0)
            return response
        return wrapped

    def style_of(p: dict[str, str]) -> stages.StyleSpec:
        text = p.get("style") or "ukiyoe"
        if len(text) > MAX_STYLE:
            raise HTTPError(422, f"style is {cut(text)}; expected a style name (GET /v1/models) or a blend like ukiyoe=0.6,rococo=0.4")
        return stages.parse_style(text)

    def multipart(request: Request) -> bool:
        return request.headers.get("content-type", "").startswith("multipart/form-data")

    async def colorize(request: Request, work: RequestWork) -> Response:
        service.check_ready()
        images, p = await service.inputs(request, ("image",), work)
        media = negotiate(request.headers.get("accept"))
        options = stages.check_options("colorize", stages.Params(saturation=_number(p, "saturation", 1.0)), service.pipe.manifest)
        return Response(await service.run_model(work, images["image"], options, media, multipart(request)), media_type=media)

    async def stylize(request: Request, work: RequestWork) -> Response:
        service.check_ready()
        images, p = await service.inputs(request, ("image",), work)
        method = p.get("fuse") or None
        if method is not None and method not in FUSE_METHODS:
            raise HTTPError(422, f"fuse is {cut(method)}; expected one of {FUSE_METHODS} or nothing")
        fusion = FuseParams(method, detail=_number(p, "detail", 0.7), weight=_number(p, "fuse_weight", 0.5)) if method else None
        params = stages.Params(style_of(p), _number(p, "strength", 1.0), fusion, _number(p, "saturation", 1.0))
        options = stages.check_options("stylize", params, service.pipe.manifest)
        media = negotiate(request.headers.get("accept"))
        return Response(await service.run_model(work, images["image"], options, media, multipart(request)), media_type=media)

    async def fuse(request: Request, work: RequestWork) -> Response:
        service.check_ready()
        images, p = await service.inputs(request, ("content", "stylized"), work)
        method = p.get("method") or "laplacian"
        if method not in FUSE_METHODS:
            raise HTTPError(422, f"method is {cut(method)}; expected one of {FUSE_METHODS}")
        params = FuseParams(method, detail=_number(p, "detail", 0.7), weight=_number(p, "weight", 0.5))
        media = negotiate(request.headers.get("accept"))

        def prepare() -> tuple:
            return decode(images["content"], "content", config.max_pixels), decode(images["stylized"], "stylized", config.max_pixels)

        def finish(c, s) -> bytes:
            rgb = fuse_rgb(c.rgb_or_gray(), s.rgb_or_gray(), params, service.pipe.workers)
            if c.alpha is not None:
                rgb = np.concatenate([rgb, c.alpha[:, :, None]], axis=2)
            return encode_image(rgb, media)

        await service.admit(work, "fuse", [images["content"], images["stylized"]], multipart(request), media)
        decoded = await work.run("prepare", prepare)
        return Response(await work.run("finish", finish, *decoded), media_type=media)

    async def models(request: Request, work: RequestWork) -> Response:
        service.check_ready()
        from sdk.describe import describe

        settings = {k: v for k, v in asdict(config).items() if k not in ("host", "port")}
        settings["max_memory"] = service.budget.total  # the budget in force (None in the config: the default)
        return JSONResponse({**describe(service.pipe, paths=False), "config": {**settings, "memory": service.memory()}})

    async def healthz(request: Request) -> Response:
        if service.ready:
            return JSONResponse({"status": "ready", "backend": service.pipe.backend_name, "memory": service.memory()})
        state = "draining" if service.draining else ("failed" if service.load_error else "loading")
        return JSONResponse({"status": state, "error": service.load_error}, 503, headers={"Retry-After": "1"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    page_html = PAGE.read_text(encoding="utf-8")

    async def page(request: Request) -> Response:
        return HTMLResponse(page_html)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_spec())

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_html(openapi_spec()))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        loader = asyncio.create_task(service.start())
        try:
            yield
        finally:
            await loader
            await service.stop()

    routes = [
        Route("/v1/colorize", endpoint("/v1/colorize", colorize), methods=["POST"]),
        Route("/v1/stylize", endpoint("/v1/stylize", stylize), methods=["POST"]),
        Route("/v1/fuse", endpoint("/v1/fuse", fuse), methods=["POST"]),
        Route("/v1/models", endpoint("/v1/models", models), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    async def http_error(request: Request, exc: Exception) -> Response:  # Starlette's own 404 / 405, as JSON
        code = getattr(exc, "status_code", 500)
        return error(code, str(getattr(exc, "detail", "")) or "error", getattr(exc, "headers", None))

    async def crash(request: Request, exc: Exception) -> Response:
        log.error("chromaforge serve: %s failed", request.url.path, exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__})")

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(AccessLog, service=service, enabled=access_log)],
                    exception_handlers={StarletteHTTPException: http_error, Exception: crash})
    app.state.service = service
    return app


_IMAGE_BODY = {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                           "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}}}}
_IMAGE_OUT = {"200": {"description": "the result (PNG; JPEG or WebP per Accept)", "content": {m: {} for m in FORMATS}},
              "408": {"description": "body not received within --read-timeout-s"},
              "413": {"description": "body or pixels over the limit, or more memory than --max-memory holds"},
              "415": {"description": "not a readable image"}, "422": {"description": "bad parameters"},
              "503": {"description": "no memory in time, queue full or not ready (Retry-After)"},
              "504": {"description": "timeout (the request's work stops at its next stage)"}}


def _query(name: str, kind: str, text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": text}


_SATURATION = _query("saturation", "number", "0..2, factor on the result's colour (1 = the model's, 0 = grey)")


def openapi_spec() -> dict[str, Any]:
    """The service's OpenAPI 3.1 description (served at ``/openapi.json``)."""
    from sdk import __version__

    fuse_body = {"content": {"multipart/form-data": {"schema": {"type": "object", "required": ["content", "stylized"], "properties": {
        "content": {"type": "string", "format": "binary"}, "stylized": {"type": "string", "format": "binary"}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "chromaforge", "version": __version__, "description": "Colorize grey photos and render painting styles."},
        "paths": {
            "/v1/colorize": {"post": {"summary": "Colorize an image (natural style)", "requestBody": _IMAGE_BODY, "responses": _IMAGE_OUT,
                                      "parameters": [_SATURATION]}},
            "/v1/stylize": {"post": {"summary": "Render an image in a style or a blend", "requestBody": _IMAGE_BODY, "responses": _IMAGE_OUT,
                                     "parameters": [_query("style", "string", "a name (GET /v1/models) or a blend ukiyoe=0.6,rococo=0.4"),
                                                    _query("strength", "number", "0..1, 1 = full style"),
                                                    _query("fuse", "string", "laplacian, weighted or luminance (optional)"),
                                                    _query("detail", "number", "0..1, detail restored by fuse=laplacian"),
                                                    _SATURATION]}},
            "/v1/fuse": {"post": {"summary": "Blend a stylized image with its original", "requestBody": fuse_body, "responses": _IMAGE_OUT,
                                  "parameters": [_query("method", "string", "laplacian, weighted or luminance"),
                                                 _query("detail", "number", "0..1"), _query("weight", "number", "0..1")]}},
            "/v1/models": {"get": {"summary": "Styles, backend and why, precision, model checksum", "responses": {"200": {"description": "JSON"}}}},
            "/healthz": {"get": {"summary": "200 once the model is loaded and warmed (with the memory budget and what is reserved), else 503", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
        },
    }


def docs_html(spec: dict[str, Any]) -> str:
    """A self-contained HTML page listing the endpoints of ``spec`` (no external assets)."""
    import html

    rows = []
    for path, ops in spec["paths"].items():
        for verb, op in ops.items():
            params = ", ".join(f"<code>{html.escape(p['name'])}</code>: {html.escape(p['description'])}" for p in op.get("parameters", []))
            codes = ", ".join(op.get("responses", {}))
            rows.append(f"<tr><td><b>{verb.upper()}</b> <code>{html.escape(path)}</code></td><td>{html.escape(op['summary'])}"
                        f"{'<br>' + params if params else ''}</td><td>{codes}</td></tr>")
    return ("<!doctype html><meta charset=utf-8><title>chromaforge API</title>"
            "<style>body{font:14px sans-serif;margin:2em}td{border-top:1px solid #ccc;padding:6px;vertical-align:top}</style>"
            f"<h1>chromaforge API {html.escape(spec['info']['version'])}</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a></p>"
            f"<table>{''.join(rows)}</table>")


MALLOC_ARENAS = 2
"""glibc heap arenas of the serving process (its default is 8 per core). Every worker thread that
decodes or encodes an image would otherwise get an arena of its own, and the process's RSS crept up
by 8-12 % over 10,000 requests (fragmentation, not a leak); with 2 it stays flat and is as fast
(benchmarks/README.md, "Service load"). ``MALLOC_ARENA_MAX`` in the environment takes precedence."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's heap arenas for this process (``mallopt(M_ARENA_MAX)``); False where not glibc
    or ``MALLOC_ARENA_MAX`` is set already. Call it before worker threads start."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):  # musl, macOS, Windows: nothing to do
        return False


MMAP_THRESHOLD = 1 << 20
"""Allocations of at least this many bytes get pages of their own from glibc (``mmap``), handed back
to the system when freed. glibc's default raises this threshold up to 32 MiB as large blocks are
freed, so a 8192x8192 request's full-size tiles and planes stayed in the heap afterwards, and the
next large request's pieces did not always fit in what was kept: RSS then rose above what the
admitted requests reserved. Requests of photo size allocate below it and are not affected."""


def mmap_large_allocations(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (``mallopt(M_MMAP_THRESHOLD)``); False where
    not glibc or ``MALLOC_MMAP_THRESHOLD_`` is set already. Call it before worker threads start."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port), as uvicorn binds one.

    Raises:
        InvalidArgumentError: the address cannot be used (port taken, unknown host, no permission).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InvalidArgumentError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port or --host") from e
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _log_to_stderr():
    """INFO lines of ``sdk.serve`` to stderr for the block: through a handler of its own unless
    logging is configured already (then through that); restored afterwards."""
    handler = None
    if not log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.setLevel(level)
        if handler is not None:
            log.removeHandler(handler)


def uvicorn_config(app: Starlette, **overrides: Any):
    """The ``uvicorn.Config`` :func:`serve` runs ``app`` (from :func:`create_app`) with: its
    connection limits (:mod:`sdk.serve.connections`), keep-alive timeout, header size bound,
    graceful shutdown as long as a request may take, and uvicorn's own logging off (:class:`AccessLog`
    writes the request lines)."""
    import uvicorn

    service: Service = app.state.service
    c = service.config
    settings = dict(log_level="warning", access_log=False, http=service.guard.protocol(), timeout_keep_alive=c.keep_alive_s,
                    h11_max_incomplete_event_size=DEFAULT_MAX_HEADER_BYTES, timeout_graceful_shutdown=max(c.timeout_s, 1.0))
    return uvicorn.Config(app, **{**settings, **overrides})


def serve(config: ServeConfig, *, access_log: bool = True) -> int:
    """Run the service until SIGINT / SIGTERM; in-flight requests finish first. Returns 0.

    Logs to stderr where it listens (once the model is ready), one line per request unless
    ``access_log`` is False (uvicorn's own access log stays off), and the request count when it stops.

    Raises:
        InvalidArgumentError: ``config.host`` / ``config.port`` cannot be listened on.

    Example:
        >>> serve(ServeConfig(port=8000), access_log=False)
    """
    import uvicorn

    sock = listen(config.host, config.port)  # first: a taken port fails before anything else is set up
    try:
        limit_malloc_arenas()
        mmap_large_allocations()
        app = create_app(config, access_log=access_log)
        service: Service = app.state.service
        port = sock.getsockname()[1]
        service.url = f"http://[{config.host}]:{port}" if ":" in config.host else f"http://{config.host}:{port}"
        server = uvicorn.Server(uvicorn_config(app))
        # uvicorn re-raises SIGTERM / SIGINT once its graceful shutdown is done, to the handlers found
        # at start: quiet ones make that the end of a clean run (exit 0, no KeyboardInterrupt trace).
        main = threading.current_thread() is threading.main_thread()
        with _log_to_stderr():
            previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
            try:
                server.run(sockets=[sock])
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            n = service.requests
            log.info("chromaforge serve: stopped after %d request%s", n, "" if n == 1 else "s")
    finally:
        sock.close()
    return 0
