"""Connection hygiene on top of uvicorn's h11 protocol: what uvicorn's settings do not cover.

uvicorn closes a keep-alive connection idle ``timeout_keep_alive`` seconds after a response, bounds
a request line plus headers at ``h11_max_incomplete_event_size`` bytes, and answers 503 past
``limit_concurrency`` connections or tasks only once a request arrives. It has no limit on the time a
client takes to send its request line and headers (a new connection that sends nothing, or a
partial request line, stays open forever: slowloris), no cap on open connections that closes the
extra ones, and no limit of requests per keep-alive connection. :class:`GuardedH11Protocol` adds:

- **header timeout**: a request's line and headers must arrive within ``header_timeout_s`` of the
  connection opening or of the previous response; otherwise the connection is closed (with a 408
  if part of a request came);
- **open connections**: past ``max_connections`` a new connection gets a 503 and is closed at once;
- **requests per connection**: the ``keep_alive_requests``-th response on a connection says
  ``Connection: close`` and closes it (0: no limit);
- protocol errors (a malformed request, headers above the size limit: 431) are answered with the
  service's JSON error body instead of uvicorn's plain text.

The request body's time limit is the app's (``ServeConfig.read_timeout_s``, 408).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol, STATUS_PHRASES

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
"""uvicorn's (h11's) default bound on a request line plus headers."""


@dataclass
class ConnectionGuard:
    """The limits, and the live count and events shared by every connection of one server.

    Args:
        header_timeout_s: seconds for a request line and headers to arrive.
        max_connections: most connections open at once.
        keep_alive_requests: most requests on one connection (0: no limit).
        on_event: called with ``"header_timeout"``, ``"over_limit"`` or ``"protocol_error"``.
    """

    header_timeout_s: float = 10.0
    max_connections: int = 512
    keep_alive_requests: int = 0
    on_event: Callable[[str], None] = field(default=lambda kind: None)
    open: int = 0
    """Connections open now."""

    def protocol(self) -> type[asyncio.Protocol]:
        """A :class:`GuardedH11Protocol` class bound to this guard (for ``uvicorn.Config(http=...)``)."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})


def raw_response(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with the service's JSON error body and ``Connection: close``,
    for answering outside a request cycle."""
    body = json.dumps({"error": message, "status": status}).encode()
    lines = [f"HTTP/1.1 {status} {STATUS_PHRASES[status]}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits of :attr:`guard` (see the module docstring)."""

    guard: ConnectionGuard = ConnectionGuard()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._served = 0
        self._counted = False

    # ------------------------------------------------------------------ lifetime
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = self.guard.open >= self.guard.max_connections
        super().connection_made(transport)
        if over:
            self.guard.on_event("over_limit")
            transport.write(raw_response(503, f"too many open connections ({self.guard.max_connections}, --max-connections); "
                                              "retry later", {"retry-after": "1"}))
            transport.close()
            return
        self._counted = True
        self.guard.open += 1
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._counted:
            self._counted = False
            self.guard.open -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._counted:  # refused: closing already
            return
        super().data_received(data)

    # ------------------------------------------------------------------ header timeout
    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.guard.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return
        self.guard.on_event("header_timeout")
        if self.conn.trailing_data[0]:  # part of a request came
            self.transport.write(raw_response(408, f"request line and headers not received within {self.guard.header_timeout_s:g} s "
                                                   "(--read-timeout-s)"))
        self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not None and self.cycle is not before:  # a request's headers arrived
            self._cancel_header_timer()
            self._served += 1
            limit = self.guard.keep_alive_requests
            if limit and self._served >= limit:
                self.cycle.keep_alive = False
                self.cycle.default_headers = self.cycle.default_headers + [(b"connection", b"close")]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers get the same time

    # ------------------------------------------------------------------ protocol errors
    def send_400_response(self, msg: str) -> None:
        limit = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self.guard.on_event("protocol_error")
        if len(self.conn.trailing_data[0]) > limit:
            status, text = 431, (f"request line and headers are above {limit // 1024} KiB; send long parameters "
                                 "as multipart fields in the body")
        else:
            status, text = 400, "malformed HTTP request (not HTTP/1.1 as h11 reads it)"
        self.transport.write(raw_response(status, text))
        self.transport.close()
