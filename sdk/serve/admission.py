"""Admission control by memory: every request reserves what it will use before it decodes.

A request's memory is estimated from its image header (read with Pillow, nothing decoded): the
pixel count, the mode (bit depth, colour or grey, alpha) and the operation (:func:`estimate`, with
per-pixel costs measured as peak RSS of real requests: :data:`BYTES_PER_PIXEL`). The service holds
one :class:`MemoryBudget` of ``--max-memory`` bytes, split in two pools:

- **bodies** (a quarter): a request body is held from it, by twice its declared length, before it
  is read (its chunks and their join), then by what stays (once; twice for multipart, the body and
  its parts); a body that does not fit is refused at once (503). Bodies leave this pool when admitted.
- **admitted work** (the rest): a request reserves its whole estimate (body included) before it
  decodes, and keeps it until its last worker thread has returned. When it does not fit, the request
  waits in a first-come first-served queue of at most ``queue`` requests; when the queue is full, or
  its expected wait (the bytes to be freed ahead of it over the rate bytes were freed at recently,
  :meth:`MemoryBudget.expected_wait`) is past the request's deadline, it is refused at once
  (:class:`Refused`: 503 with ``Retry-After``). A request that needs more than the pool holds can never
  run (:class:`TooLarge`: 413).

The two pools never wait on each other (a waiting request holds nothing of the work pool), so the
queue cannot deadlock, and the bytes held never exceed ``--max-memory``.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import re
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdk.errors import ImageTooLargeError, InvalidArgumentError

BODY_SHARE = 0.25
"""Share of the budget for request bodies not yet admitted (read, or being read)."""
DEFAULT_FRACTION = 0.5
"""Default budget: this share of the cgroup's memory limit, else of the physical RAM. The rest is
for the process itself (model, runtime arena, Python) and what the allocator keeps between requests."""
MIN_DEFAULT = 256 * 2**20
"""The default budget is never below this (a tiny container still serves small images)."""
OVERHEAD = 4 * 2**20
"""Bytes every request reserves besides its pixels (working-size planes, Python objects)."""
MARGIN = 1.15
"""Factor on the measured per-pixel costs (the measurement's spread between runs and contents)."""

BYTES_PER_PIXEL: dict[str, dict[str, float]] = {
    # op -> input class -> peak bytes per input pixel above an idle, warmed server, the request body
    # excluded: measured at 8192x8192 (`python benchmarks/load.py --calibrate 8192`, docs/serve.md
    # "Memory"; the bundled photo upscaled with noise, answered as PNG), rounded up. Finishing at
    # full size and encoding the answer dominate; 16-bit and float inputs convert in tiles.
    "colorize": {"grey": 9.5, "grey16": 9.5, "float": 10.0, "rgb": 12.5},
    "stylize": {"grey": 9.0, "grey16": 9.0, "float": 9.5, "rgb": 12.0},
    "stylize+fuse": {"grey": 12.5, "grey16": 12.5, "float": 13.0, "rgb": 16.0},
    "fuse": {"grey": 4.5, "grey16": 4.5, "float": 5.0, "rgb": 6.0},  # per pixel of each of the two inputs
}
ALPHA_BPP = 3.0
"""Extra bytes per pixel for an input with alpha (the alpha plane, and the RGBA answer)."""
WEBP_BPP = 5.5
"""Extra bytes per pixel of the answer when it is WebP (libwebp's own ARGB and YUV planes)."""
BODY_COPIES = {False: 1, True: 2}
"""Copies of the body a request holds: raw (1) or multipart (the body and its parsed parts)."""


class Refused(Exception):
    """No memory now and none expected in time (queue full, or expected wait past the deadline): 503."""

    def __init__(self, message: str, retry_after: float, reason: str) -> None:
        super().__init__(message)
        self.retry_after = max(1, min(3600, math.ceil(retry_after)))
        self.reason = reason
        """``body_pool`` (bodies hold their share), ``queue_full`` or ``wait`` (expected past the deadline)."""


class TooLarge(Exception):
    """The request needs more memory than the whole budget holds: 413 (it can never run)."""


# ---------------------------------------------------------------------------------------- sizes
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str | int) -> int:
    """A size as written on a command line -> bytes: ``2G`` and ``2GiB`` are 2**31, ``2GB`` is 2e9,
    ``512M``, ``1.5g``, ``1000000``.

    Raises:
        InvalidArgumentError: not a positive size.

    Example:
        >>> parse_bytes("512M")
        536870912
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
        if m is None or m.group(2) not in _UNITS:
            raise InvalidArgumentError(f"memory size {str(text)[:40]!r} is not a size; expected e.g. 2G, 512M, 1.5GiB or bytes")
        value = int(float(m.group(1)) * _UNITS[m.group(2)])
    if value < 1:
        raise InvalidArgumentError(f"memory size {str(text)[:40]!r} is below 1 byte; expected e.g. 2G or 512M")
    return value


def format_bytes(n: float) -> str:
    """``1536 MiB`` -> ``'1.5 GiB'`` (binary units, for messages)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def memory_limit(root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """(bytes, where from) of the memory this process may use: the cgroup v2 ``memory.max`` or v1
    ``memory.limit_in_bytes`` when set, else the physical RAM."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < physical:  # v1 says "no limit" with a huge number
            return int(text), str(path)
    return physical, "physical RAM"


def default_budget() -> tuple[int, str]:
    """(bytes, why): :data:`DEFAULT_FRACTION` of :func:`memory_limit`, at least :data:`MIN_DEFAULT`."""
    limit, source = memory_limit()
    return max(MIN_DEFAULT, int(limit * DEFAULT_FRACTION)), f"{DEFAULT_FRACTION:g} of {format_bytes(limit)} ({source})"


# ------------------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class ImageInfo:
    """What an image header says: size, Pillow mode and the class its per-pixel cost is looked up by."""

    width: int
    height: int
    mode: str
    format: str | None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def kind(self) -> str:
        """``grey``, ``grey16`` (16- and 32-bit integer), ``float`` or ``rgb`` (any colour mode)."""
        m = self.mode
        if m in ("1", "L", "LA", "La"):
            return "grey"
        if m.startswith("I"):
            return "grey16"
        if m == "F":
            return "float"
        return "rgb"

    @property
    def alpha(self) -> bool:
        return "A" in self.mode or "a" in self.mode or self.mode == "P"  # P may carry transparency


def probe(data: bytes, name: str, max_pixels: int | None) -> ImageInfo | None:
    """The header of encoded ``data``, nothing decoded; None when Pillow does not recognise it (the
    decoder then says why, as 415).

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels``, or more than Pillow's own
            decompression-bomb limit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"{name} declares a size above Pillow's decompression-bomb limit ({e}); downscale it") from e
    except Exception:  # not an image: decoding reports it
        return None
    with im:
        w, h = im.size
        info = ImageInfo(w, h, im.mode, im.format)
    if max_pixels is not None and info.pixels > max_pixels:
        raise ImageTooLargeError(f"{name} is {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of {max_pixels} pixels "
                                 "(--max-pixels); downscale it")
    return info


def estimate(op: str, images: list[ImageInfo | None], body_bytes: int, multipart: bool, media: str = "image/png") -> int:
    """Bytes a request will use at its peak: its body, :data:`OVERHEAD`, and its pixels at
    :data:`BYTES_PER_PIXEL` (``op``: colorize, stylize, stylize+fuse or fuse), alpha and WebP extra,
    times :data:`MARGIN`. An unreadable image counts as nothing (it fails at decoding)."""
    table = BYTES_PER_PIXEL[op]
    pixels = 0.0
    for info in images:
        if info is None:
            continue
        bpp = table[info.kind] + (ALPHA_BPP if info.alpha else 0.0) + (WEBP_BPP if media == "image/webp" else 0.0)
        pixels += info.pixels * bpp
    return int(pixels * MARGIN) + OVERHEAD + BODY_COPIES[multipart] * body_bytes


# --------------------------------------------------------------------------------------- budget
@dataclass(eq=False)
class Reservation:
    """One request's hold on a :class:`MemoryBudget`: body bytes, then its admitted estimate.

    Freed by :meth:`MemoryBudget.close` once the request is done and the last worker thread it
    started (:meth:`thread_started` / :meth:`thread_done`) has returned: a request cancelled
    mid-stage keeps its memory until that stage's thread lets go of it.
    """

    body: int = 0
    """Bytes held in the body pool (0 once admitted)."""
    work: int = 0
    """Bytes held in the work pool (the estimate, once admitted)."""
    threads: int = 0
    closed: bool = False
    t_admitted: float | None = None


@dataclass(eq=False)
class _Waiter:
    reservation: Reservation
    need: int
    future: asyncio.Future


class MemoryBudget:
    """The service's memory budget (see the module docstring); used from the event loop only.

    Args:
        total: bytes in all (``--max-memory``).
        queue: most requests waiting for memory at once.
        clock: seconds, monotonic (``time.monotonic``; deadlines are on it too).

    Example:
        >>> budget = MemoryBudget(2 * 2**30, queue=64)
        >>> res = Reservation()
        >>> budget.hold_body(res, 1_000_000)
        >>> await budget.admit(res, estimate("colorize", [info], 1_000_000, False), deadline)
        >>> ...; budget.close(res)
    """

    RATE_WINDOW_S = 30.0
    """Time constant of the release-rate average (bytes freed per second while busy)."""

    def __init__(self, total: int, queue: int, clock=time.monotonic) -> None:
        self.clock = clock
        self.total = int(total)
        self.body_pool = int(total * BODY_SHARE)
        self.work_pool = self.total - self.body_pool
        self.queue = queue
        self.body_held = 0
        self.work_held = 0
        self.peak_held = 0
        self._waiters: deque[_Waiter] = deque()
        self._freed = 0.0  # decayed sums: bytes freed, and seconds the work pool was in use
        self._busy = 0.0
        self._t = clock()

    # ------------------------------------------------------------------ state
    @property
    def held(self) -> int:
        """Bytes reserved now (both pools)."""
        return self.body_held + self.work_held

    @property
    def waiting(self) -> int:
        """Requests waiting for memory."""
        return len(self._waiters)

    @property
    def waiting_bytes(self) -> int:
        """Bytes the waiting requests ask for."""
        return sum(w.need for w in self._waiters)

    def release_rate(self) -> float | None:
        """Bytes per second the work pool freed recently while in use (None before anything was freed)."""
        self._tick()
        return self._freed / self._busy if self._busy > 0.01 and self._freed > 0 else None

    def expected_wait(self, need: int) -> float | None:
        """Seconds until ``need`` more bytes fit after everyone waiting (0 if they fit now; None when
        nothing was freed yet to judge by)."""
        deficit = self.waiting_bytes + need - (self.work_pool - self.work_held)
        if deficit <= 0:
            return 0.0
        rate = self.release_rate()
        return None if rate is None else deficit / rate

    def _tick(self) -> None:
        now = self.clock()
        dt, self._t = now - self._t, now
        decay = math.exp(-dt / self.RATE_WINDOW_S)
        self._freed *= decay
        self._busy = self._busy * decay + (dt if self.work_held > 0 else 0.0)

    # ------------------------------------------------------------------ bodies
    def hold_body(self, res: Reservation, nbytes: int) -> None:
        """Hold ``nbytes`` more of the body pool for ``res`` (called before reading them).

        Raises:
            TooLarge: the body alone is above the body pool.
            Refused: the body pool is full.
        """
        if nbytes <= 0:
            return
        if res.body + nbytes > self.body_pool:
            raise TooLarge(f"request body of {format_bytes(res.body + nbytes)} is above the {format_bytes(self.body_pool)} "
                           "bodies may hold (a quarter of --max-memory); send a smaller file or raise --max-memory")
        if self.body_held + nbytes > self.body_pool:
            raise Refused(f"request bodies being received hold {format_bytes(self.body_held)} of "
                          f"{format_bytes(self.body_pool)} (a quarter of --max-memory); this one needs {format_bytes(nbytes)}",
                          self.expected_wait(0) or 1, "body_pool")
        res.body += nbytes
        self.body_held += nbytes
        self.peak_held = max(self.peak_held, self.held)

    def release_body(self, res: Reservation, nbytes: int) -> None:
        """Give back ``nbytes`` of what ``res`` holds in the body pool (a transient copy is gone)."""
        nbytes = max(0, min(nbytes, res.body))
        res.body -= nbytes
        self.body_held -= nbytes

    # ------------------------------------------------------------------ admission
    async def admit(self, res: Reservation, need: int, deadline: float) -> None:
        """Reserve ``need`` bytes of the work pool for ``res`` (its body moves out of the body pool),
        waiting in turn while they do not fit.

        Args:
            res: the request's reservation (its body held already).
            need: the request's estimate (:func:`estimate`), body included.
            deadline: ``time.monotonic()`` by which the request must be answered.

        Raises:
            TooLarge: ``need`` is above the work pool (it could never run).
            Refused: the queue is full, or the expected wait is past ``deadline``.
        """
        if need > self.work_pool:
            raise TooLarge(f"this request needs about {format_bytes(need)} of memory, above the "
                           f"{format_bytes(self.work_pool)} one request may use (three quarters of --max-memory "
                           f"{format_bytes(self.total)}); send a smaller image or raise --max-memory")
        if not self._waiters and self.work_held + need <= self.work_pool:
            self._grant(res, need)
            return
        if len(self._waiters) >= self.queue:
            raise Refused(f"{len(self._waiters)} requests are waiting for memory (--queue {self.queue})",
                          self.expected_wait(need) or 1, "queue_full")
        wait = self.expected_wait(need)
        left = deadline - self.clock()
        if wait is not None and wait > left:
            raise Refused(f"about {wait:.1f} s until {format_bytes(need)} of memory is free, past the request's "
                          f"timeout ({max(left, 0):.1f} s left)", wait, "wait")
        waiter = _Waiter(res, need, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._wake()  # the ones behind may fit now
            raise  # granted already: close() frees it with the rest

    def _grant(self, res: Reservation, need: int) -> None:
        self._tick()
        self.body_held -= res.body
        res.body = 0
        res.work += need
        res.t_admitted = self.clock()
        self.work_held += need
        self.peak_held = max(self.peak_held, self.held)

    def _wake(self) -> None:
        """Grant waiting requests in order while the first one fits."""
        while self._waiters and self.work_held + self._waiters[0].need <= self.work_pool:
            w = self._waiters.popleft()
            if w.future.done():  # cancelled, not yet removed
                continue
            self._grant(w.reservation, w.need)
            w.future.set_result(None)

    # ------------------------------------------------------------------ release
    def thread_started(self, res: Reservation) -> None:
        res.threads += 1

    def thread_done(self, res: Reservation) -> None:
        res.threads -= 1
        if res.closed and res.threads == 0:
            self._free(res)

    def close(self, res: Reservation) -> None:
        """The request is done: free its memory now, or when its last worker thread returns."""
        res.closed = True
        if res.threads == 0:
            self._free(res)

    def _free(self, res: Reservation) -> None:
        self._tick()
        self.body_held -= res.body
        self.work_held -= res.work
        self._freed += res.work
        res.body = res.work = 0
        self._wake()
