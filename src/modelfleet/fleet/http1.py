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
from collections.abc import Callable
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


Answer = Callable[[Response], None]
# Answers a request: returns the response now, or returns None and calls ``answer`` exactly once later
# (never from inside the call itself). Forwarding needs no task, coroutine or future that way.
Dispatcher = Callable[[Request, Answer], "Response | None"]
# An upstream exchange's outcome: the response, or the exception that ended it.
OnUpstreamDone = Callable[["Response | None", "BaseException | None"], None]


def internal_error(exc: BaseException) -> Response:
    message = f'{{"error":"router internal error: {type(exc).__name__}"}}'.encode()
    return Response(500, [(b"Content-Type", b"application/json")], message)


class ServerProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them in order (pipelining-safe), keep alive."""

    def __init__(self, dispatch: Dispatcher, max_body_bytes: int, connections: set[ServerProtocol]) -> None:
        self._dispatch = dispatch
        self._max_body_bytes = max_body_bytes
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._pending: collections.deque[Request] = collections.deque()
        self._current: Request | None = None
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
            self._answer_pending()

    # answering: one request at a time, in arrival order (pipelining-safe)
    def _answer_pending(self) -> None:
        while self._pending and not self._closed:
            request = self._pending.popleft()
            if self._paused and len(self._pending) < MAX_PIPELINED // 2 and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            self._busy = True
            self._current = request
            try:
                response = self._dispatch(request, self._on_answer)
            except Exception as exc:  # a bug must cost one request, never the connection
                response = internal_error(exc)
            if response is None:
                return  # the answer comes through _on_answer
            self._write(request, response)
        self._busy = False

    def _on_answer(self, response: Response) -> None:
        request, self._current = self._current, None
        if request is None:
            return  # answered twice: the first one counted
        self._write(request, response)
        self._answer_pending()

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
        self._on_done: OnUpstreamDone | None = None
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
        on_done = self._on_done
        self._on_done = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if not self._parser.should_keep_alive():
            self.close()
        if on_done is not None:
            on_done(Response(status, self._headers, body), None)

    def _fail(self, exc: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        on_done = self._on_done
        self._on_done = None
        if on_done is not None:
            on_done(None, exc)

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

    def send(self, data: bytes, timeout_s: float, on_done: OnUpstreamDone) -> None:
        """Write one request; ``on_done`` gets the response or the failure (UpstreamError, UpstreamTimeout)."""
        assert self.transport is not None
        self._on_done = on_done
        self._answered = False
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._on_timeout)
        self.transport.write(data)


class UpstreamPool:
    """Idle keep-alive connections to one upstream, handed out one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}".encode("latin-1")
        self._idle: list[UpstreamConnection] = []
        self._connecting: set[asyncio.Task[None]] = set()

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
        for task in list(self._connecting):
            task.cancel()
        for connection in list(self._idle):
            connection.close()
        self._idle.clear()

    def send(self, data: bytes, timeout_s: float, connect_timeout_s: float, on_done: OnUpstreamDone) -> None:
        """Send one request on an idle connection, or a new one; ``on_done`` gets the outcome.

        Failures: UpstreamError (the connection failed), UpstreamTimeout, or OSError (cannot connect).
        """
        connection = self.take_idle()
        if connection is None:
            self._send_on_new_connection(data, timeout_s, connect_timeout_s, on_done)
            return

        def done(response: Response | None, exc: BaseException | None) -> None:
            if exc is None:
                self.release(connection)
                on_done(response, None)
            elif isinstance(exc, UpstreamError) and not exc.answered:
                # The server closed this idle keep-alive connection as we sent on it: once more, on a new one.
                self._send_on_new_connection(data, timeout_s, connect_timeout_s, on_done)
            else:
                on_done(None, exc)

        connection.send(data, timeout_s, done)

    def _send_on_new_connection(
        self, data: bytes, timeout_s: float, connect_timeout_s: float, on_done: OnUpstreamDone
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._connect_and_send(data, timeout_s, connect_timeout_s, on_done)
        )
        self._connecting.add(task)  # a task nobody references may be collected mid-flight
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(
        self, data: bytes, timeout_s: float, connect_timeout_s: float, on_done: OnUpstreamDone
    ) -> None:
        try:
            connection = await asyncio.wait_for(self.connect(), connect_timeout_s)
        except TimeoutError:
            on_done(None, UpstreamError(f"connect to {self.host}:{self.port} timed out", answered=False))
            return
        except OSError as exc:
            on_done(None, exc)
            return

        def done(response: Response | None, exc: BaseException | None) -> None:
            if exc is None:
                self.release(connection)
            on_done(response, exc)

        connection.send(data, timeout_s, done)

    async def request(self, data: bytes, timeout_s: float, connect_timeout_s: float) -> Response:
        """`send` for coroutines (health polls, repository index). Raises what `send` reports."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def done(response: Response | None, exc: BaseException | None) -> None:
            if future.done():
                return  # the caller gave up (cancelled); the connection finishes on its own
            if exc is not None:
                future.set_exception(exc)
            else:
                assert response is not None
                future.set_result(response)

        self.send(data, timeout_s, connect_timeout_s, done)
        return await future
