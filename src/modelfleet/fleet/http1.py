"""Minimal HTTP/1.1 plumbing for the router: a server protocol, upstream connections, keep-alive pools.

Why not a framework: the router's budget is a fraction of a model server's per-request cost (the
server spends about 160 µs per small request; aiohttp's server plus client spent 300 µs just passing
one through). Here the parsing is httptools (the C parser uvicorn uses), the event loop is uvloop,
and a request costs two parses and two joins of byte strings. Bodies are never decoded: the router
forwards the exact bytes it received, with only hop-by-hop headers replaced (RFC 9110 §7.6.1).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

# Headers that describe one connection, not the message; the router writes its own.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
Headers = list[tuple[bytes, bytes]]
MAX_PIPELINED = 32
MAX_IDLE_PER_UPSTREAM = 512
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("latin-1") for status in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")


def encode_response(
    status: int, headers: Headers, body: bytes, keep_alive: bool, head: bool = False
) -> bytes:
    parts = [status_line(status)]
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"Content-Length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)


def encode_request(method: bytes, target: bytes, host: bytes, headers: Headers, body: bytes) -> bytes:
    parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    parts += (b"Content-Length: %d\r\n\r\n" % len(body), body)
    return b"".join(parts)


class Request:
    """One parsed client request. ``target`` is the raw request target (path and query)."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "target")

    def __init__(self, method: bytes, target: bytes, headers: Headers, body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        query_at = target.find(b"?")
        self.path = (target if query_at < 0 else target[:query_at]).decode("latin-1")
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


Handler = Callable[[Request], Awaitable[Response]]


class ServerProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them in order (pipelining-safe), keep alive."""

    def __init__(self, handler: Handler, max_body_bytes: int, connections: set[ServerProtocol]) -> None:
        self._handler = handler
        self._max_body_bytes = max_body_bytes
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._pending: collections.deque[Request] = collections.deque()
        self._busy = False
        self._closed = False
        self._paused = False
        self._rejected = False

    @property
    def idle(self) -> bool:
        return not self._busy and not self._pending

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # An answer still being computed is dropped when it arrives; the upstream call ends by itself.
        self._closed = True
        self._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b'{"error":"protocol upgrades are not supported"}')
        except httptools.HttpParserError:
            if not self._rejected:
                self._reject(400, b'{"error":"malformed HTTP request"}')

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.strip().isdigit() and int(value) > self._max_body_bytes:
                self._reject_too_large()
                return
            if lowered == b"expect" and value.lower() == b"100-continue" and self._transport is not None:
                # The router reads whole bodies; tell the client to send it now rather than wait.
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body_bytes:
            self._reject_too_large()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(
            self._parser.get_method(), self._url, self._headers, body, self._parser.should_keep_alive()
        )
        self._pending.append(request)
        if len(self._pending) >= MAX_PIPELINED and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())

    # answering
    async def _drain(self) -> None:
        try:
            while self._pending and not self._closed:
                request = self._pending.popleft()
                if self._paused and len(self._pending) < MAX_PIPELINED // 2 and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
                try:
                    response = await self._handler(request)
                except Exception as exc:  # a bug must cost one request, never the connection loop
                    message = f'{{"error":"router internal error: {type(exc).__name__}"}}'.encode()
                    response = Response(500, [(b"Content-Type", b"application/json")], message)
                self._write(request, response)
        finally:
            self._busy = False

    def _write(self, request: Request, response: Response) -> None:
        if self._closed or self._transport is None:
            return
        self._transport.write(
            encode_response(
                response.status,
                response.headers,
                response.body,
                request.keep_alive,
                request.method == b"HEAD",
            )
        )
        if not request.keep_alive:
            self._closed = True
            self._transport.close()

    def _reject_too_large(self) -> None:
        self._reject(413, b'{"error":"request body is larger than %d bytes"}' % self._max_body_bytes)

    def _reject(self, status: int, body: bytes) -> None:
        # The stream can no longer be trusted for further requests: answer and close.
        self._rejected = True
        self._pending.clear()
        if self._transport is not None and not self._closed:
            self._transport.write(
                encode_response(status, [(b"Content-Type", b"application/json")], body, keep_alive=False)
            )
            self._closed = True
            self._transport.close()

    def close_if_idle(self) -> bool:
        if self.idle and self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()
            return True
        return False


class UpstreamError(Exception):
    """The upstream connection failed. ``answered`` says whether any response bytes had arrived."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class UpstreamTimeout(Exception):
    pass


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a model server; one request at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[Response] | None = None
        self._answered = False
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        self._fail(UpstreamError(f"connection closed{f': {exc}' if exc else ''}", self._answered))

    def data_received(self, data: bytes) -> None:
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response: {exc}", answered=True))
            self.close()

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue); the final one follows on this connection
        waiter = self._waiter
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, self._headers, body))

    def _fail(self, exc: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(UpstreamTimeout())
        self.close()  # a late answer would be read as the next request's

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    async def exchange(self, data: bytes, timeout_s: float) -> Response:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._answered = False
        self._timer = loop.call_later(timeout_s, self._on_timeout)
        self.transport.write(data)
        try:
            response: Response = await waiter
            return response
        except asyncio.CancelledError:
            self.close()
            raise


class UpstreamPool:
    """Idle keep-alive connections to one upstream, handed out one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}".encode("latin-1")
        self._idle: list[UpstreamConnection] = []

    def forget(self, connection: UpstreamConnection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    def take_idle(self) -> UpstreamConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port)
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        if connection.closed:
            return
        if len(self._idle) >= MAX_IDLE_PER_UPSTREAM:
            connection.close()
            return
        self._idle.append(connection)

    def close(self) -> None:
        for connection in list(self._idle):
            connection.close()
        self._idle.clear()

    async def request(self, data: bytes, timeout_s: float, connect_timeout_s: float) -> Response:
        """Send one request. Raises UpstreamError (connection failed), UpstreamTimeout, or OSError on connect."""
        connection = self.take_idle()
        if connection is not None:
            try:
                response = await connection.exchange(data, timeout_s)
            except UpstreamError as exc:
                if exc.answered:
                    raise
                # The server closed this idle keep-alive connection as we sent on it: try once on a new one.
            else:
                self.release(connection)
                return response
        try:
            connection = await asyncio.wait_for(self.connect(), connect_timeout_s)
        except TimeoutError:
            raise UpstreamError(f"connect to {self.host}:{self.port} timed out", answered=False) from None
        response = await connection.exchange(data, timeout_s)
        self.release(connection)
        return response
