"""uvicorn's httptools protocol with the request-head limits and timeouts it lacks.

uvicorn 0.54's `HttpToolsProtocol` (the fast parser the server runs) accumulates the URL and every
header without a bound (a 16 MB header value got 200 OK), has no header-read timeout (its
keep-alive timer is armed only after a response, so a connection that never finishes its head, or
never sends a byte, stays open forever), and its `limit_concurrency` counts in-flight requests as
well as connections and answers a plain-text 503 after reading the head. This subclass adds, per
request head: a URL size limit (414), a header count and a head size limit (431), a header-read
timeout (408, then close), and a connection limit per process (JSON 503 with Retry-After, then
close). Every refusal is a JSON `{"error": ...}` naming the limit and its setting.

The head is counted as it arrives (`data_received`), before httptools buffers a header, so a huge
header costs at most one socket read (uvloop reads up to 256 KiB) beyond the limit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """The server config's fields of the same names."""

    max_url_bytes: int
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    max_connections: int


# How long a refused connection keeps reading (and dropping) what its client still sends.
_LINGER_S = 2.0

# The scope key of a request's ConnectionState (an ASGI scope carries no connection identity: "client"
# is rewritten from X-Forwarded-For behind a proxy, so many connections can share it).
CONNECTION_STATE = "modelfleet.connection"


class ConnectionState:
    """What the app remembers of one connection between its requests."""

    __slots__ = ("impatient", "infer_task", "lost", "refused_until")

    def __init__(self) -> None:
        # time.monotonic() until which the retry-after of this connection's last 503 runs (0: none).
        self.refused_until = 0.0
        # It resent before that retry-after had run: its client does not wait when asked, from then on.
        self.impatient = False
        # The task of its inference in progress, cancelled when the connection is lost: a client that
        # hung up (its own timeout, a load test ending) leaves no work queued for nobody.
        self.infer_task: asyncio.Task[Any] | None = None
        self.lost = False


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One connection. `limits` is set on the subclass `protocol_class` makes."""

    limits: HeadLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._refusal: _Refused | None = None
        self._discarding = False
        self._state = ConnectionState()

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._state.lost = True
        if self._state.infer_task is not None:
            self._state.infer_task.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades here: the request was answered as a plain one
        except httptools.HttpParserError:
            refusal = self._refusal or _Refused(400, "invalid HTTP/1.1 request")
            self._refuse(refusal.status, refusal.message)
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, self._head_too_large())

    # -- parser callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[CONNECTION_STATE] = self._state  # type: ignore[literal-required]
        self._in_head = True
        self._header_count = 0
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes:
            self._fail(
                414,
                f"request target over the limit of {self.limits.max_url_bytes} bytes (server.max_url_bytes)",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        # Counted here too: the first read of a keep-alive request arrives before on_message_begin.
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.limits.max_header_bytes:
            self._fail(431, self._head_too_large())
        if self._header_count > self.limits.max_headers:
            self._fail(431, f"more than {self.limits.max_headers} header fields (server.max_headers)")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_header_timer()
        if len(self.connections) > self.limits.max_connections:
            self._fail(
                503,
                f"this server process holds more than {self.limits.max_connections} connections "
                "(server.max_connections); retry on a new connection",
            )
        super().on_headers_complete()

    # -- refusals -----------------------------------------------------------------------------
    def _head_too_large(self) -> str:
        return (
            f"request line and headers over the limit of {self.limits.max_header_bytes} bytes "
            "(server.max_header_bytes)"
        )

    def _fail(self, status: int, message: str) -> None:
        # Raised inside a parser callback: httptools stops parsing and feed_data raises, and
        # data_received answers with this refusal.
        self._refusal = _Refused(status, message)
        raise self._refusal

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": message})
        extra = b"retry-after: 1\r\n" if status == 503 else b""
        self._discarding = True
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    extra,
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        # Lingering close: a client still sending (a huge header) would get a reset, and lose the
        # answer, if the socket closed with its bytes unread; end our side, discard theirs a while.
        self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._in_head:
            self._refuse(
                408,
                f"request head not received within {self.limits.header_timeout_s:g} s "
                "(server.header_timeout_s)",
            )


def protocol_class(limits: HeadLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` (uvicorn instantiates it per connection)."""
    return type("HttpToolsProtocolWithLimits", (LimitedHttpToolsProtocol,), {"limits": limits})
