"""The server side: one protocol per client connection, with limits on everything the client controls.

Why not a framework: the router's budget is a fraction of a model server's per-request cost (the
server spends about 160 µs per small request; aiohttp's server plus client spent 300 µs just passing
one through). Here parsing is httptools (the C parser uvicorn uses) and a request is answered through
a callback, never a task.

Limits (``ServerLimits``), each refused with a JSON ``{"error": ...}`` naming the limit and its setting,
and the connection closed (the stream cannot be trusted after a refused message):

* request target over ``max_url_bytes`` → 414; headers over ``max_header_bytes`` or ``max_header_count``
  → 431, checked as they arrive: httptools buffers a header value until it is complete, so bytes read
  while a head is incomplete are counted too and a 16 MB header costs at most one read past the limit;
* body over ``max_body_bytes`` → 413 (from Content-Length before any body byte is read);
* request smuggling (RFC 9112 §6.1, §6.3): Content-Length with Transfer-Encoding, duplicate or invalid
  Content-Length (llhttp refuses these), and a Transfer-Encoding other than plain ``chunked`` or on an
  HTTP/1.0 request (refused here) → 400;
* a head not complete ``header_timeout_s`` after its first byte → 408 (slowloris); a body not complete
  ``body_timeout_s`` after its head (a client that trickles the body) → 408; a connection with nothing
  in progress for ``idle_timeout_s`` is closed; all by one scan of the open connections a few times per
  timeout instead of a timer per request (a timer costs a heap push and a cancel each). While reading
  is paused for pipelining the wait is the server's, not the client's, so a paused connection is not
  timed and its clock restarts when reading resumes;
* beyond ``max_connections`` open at once a new connection gets 503 with Retry-After at once and is
  closed, without being read: cheaper than parsing for a connection that cannot be served, and unlike
  a silent close a client (or load balancer) learns to back off rather than retry at once;
* at most ``max_pipelined`` parsed requests wait per connection; beyond that reading pauses.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools
import orjson

from modelfleet.transport.wire import (
    JSON_HEADERS,
    SEPARATE_BODY_BYTES,
    Body,
    Headers,
    Request,
    Response,
    encode_response,
)

Answer = Callable[[Response], None]
# Answers a request: returns the response now, or returns None and calls ``answer`` exactly once later
# (never from inside the call itself). Forwarding needs no task, coroutine or future that way.
Dispatcher = Callable[[Request, Answer], "Response | None"]

_now = time.monotonic
# uvloop reads at most 256 KiB per data_received: a head's byte count may include that much of the
# requests pipelined before it in the same read, so the in-progress check allows that much slack.
_READ_SLACK_BYTES = 256 * 1024
# Connection phases, for the timeout scan.
_IDLE, _HEAD, _BODY = 0, 1, 2


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client may send. ``setting_prefix`` names where refusals say the setting lives."""

    max_url_bytes: int = 8192
    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    max_body_bytes: int = 64 * 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    max_connections: int = 4096
    max_pipelined: int = 32
    retry_after_s: int = 1
    setting_prefix: str = "router."

    def refusal(self, status: int, message: str, setting: str | None = None) -> bytes:
        """The whole response that refuses a request and closes the connection."""
        if setting is not None:
            message = f"{message} ({self.setting_prefix}{setting})"
        headers = list(JSON_HEADERS)
        if status == 503:
            headers.append((b"Retry-After", str(self.retry_after_s).encode()))
        return encode_response(status, headers, orjson.dumps({"error": message}), keep_alive=False)


def internal_error(exc: BaseException) -> Response:
    message = f'{{"error":"router internal error: {type(exc).__name__}"}}'.encode()
    return Response(500, list(JSON_HEADERS), message)


class _Stop(Exception):
    """Raised from a parser callback after a refusal: httptools then stops parsing this read."""


class Connections:
    """The open connections of one listening server: the connection cap and the timeout scan."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.open: set[ServerProtocol] = set()
        # Refusals by setting name (a fixed set), for the router's metrics.
        self.refused: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        # A connection is closed between its timeout and one scan later: scanning 20 times per timeout
        # keeps that overshoot at 5 % (a scan of 4,096 connections costs about a millisecond).
        self._every_s = max(
            0.05,
            min(0.5, limits.header_timeout_s / 20, limits.body_timeout_s / 20, limits.idle_timeout_s / 20),
        )
        self._over_cap = limits.refusal(
            503,
            f"the router has {limits.max_connections} connections open, its limit; retry shortly",
            "max_connections",
        )
        self._too_slow = limits.refusal(
            408, f"request headers not complete within {limits.header_timeout_s:g} s", "header_timeout_s"
        )
        self._body_too_slow = limits.refusal(
            408,
            f"request body not complete within {limits.body_timeout_s:g} s of its headers",
            "body_timeout_s",
        )

    def count(self, setting: str) -> None:
        self.refused[setting] = self.refused.get(setting, 0) + 1

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._every_s, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        now = _now()
        header_deadline = now - self.limits.header_timeout_s
        body_deadline = now - self.limits.body_timeout_s
        idle_deadline = now - self.limits.idle_timeout_s
        for connection in list(self.open):
            phase, since = connection.phase, connection.since
            if phase == _HEAD and since < header_deadline and not connection.paused:
                self.count("header_timeout_s")
                connection.refuse(self._too_slow)
            elif phase == _BODY and since < body_deadline and not connection.paused:
                self.count("body_timeout_s")
                connection.refuse(self._body_too_slow)
            elif phase == _IDLE and since < idle_deadline and connection.idle:
                connection.close()
        self._timer = asyncio.get_running_loop().call_later(self._every_s, self._sweep)


class ServerProtocol(asyncio.Protocol):
    """One client connection: parse requests, answer them in order (pipelining-safe), keep alive."""

    def __init__(self, dispatch: Dispatcher, connections: Connections) -> None:
        self._dispatch = dispatch
        self._connections = connections
        limits = connections.limits
        self._limits = limits
        self._max_url_bytes = limits.max_url_bytes
        self._max_header_bytes = limits.max_header_bytes
        self._max_header_count = limits.max_header_count
        self._max_body_bytes = limits.max_body_bytes
        self._max_pipelined = limits.max_pipelined
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: Headers = []
        self._header_bytes = 0
        self._head_read = 0
        self._transfer_encoding: bytes | None = None
        self._expect_continue = False
        self._body: list[bytes] = []
        self._body_size = 0
        # A declared body of SEPARATE_BODY_BYTES or more is read into one buffer of its size: joining
        # chunks would hold the body twice at once.
        self._body_buffer: bytearray | None = None
        self._pending: collections.deque[Request] = collections.deque()
        self._current: Request | None = None
        self._busy = False
        self._closed = False
        self.paused = False  # reading paused: too many pipelined requests wait
        self._rejected = False
        # Read by the timeout scan: what the connection is doing and since when.
        self.phase = _IDLE
        self.since = _now()

    @property
    def idle(self) -> bool:
        return not self._busy and not self._pending

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        connections = self._connections
        if len(connections.open) >= self._limits.max_connections:
            connections.count("max_connections")
            self.refuse(connections._over_cap)
            return
        connections.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # An answer still being computed is dropped when it arrives; the upstream call ends by itself.
        self._closed = True
        self._connections.open.discard(self)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse_request(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self._rejected:
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "unparseable"
                self._refuse_request(400, f"malformed HTTP request: {reason}")
            return
        if self.phase == _HEAD:
            # httptools holds an unfinished header value until it ends: count what this head has read.
            self._head_read += len(data)
            if self._head_read > self._max_header_bytes + self._max_url_bytes + _READ_SLACK_BYTES:
                self._refuse_request(
                    431, f"request headers are larger than {self._max_header_bytes} bytes", "max_header_bytes"
                )

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.phase = _HEAD
        self.since = _now()
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._head_read = 0
        self._transfer_encoding = None
        self._expect_continue = False
        self._body = []
        self._body_size = 0
        self._body_buffer = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_url_bytes:
            self._refuse_request(
                414, f"request target is longer than {self._max_url_bytes} bytes", "max_url_bytes"
            )
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        headers.append((name, value))
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self._max_header_bytes or len(headers) > self._max_header_count:
            if len(headers) > self._max_header_count:
                message, setting = f"more than {self._max_header_count} request headers", "max_header_count"
            else:
                message = f"request headers are larger than {self._max_header_bytes} bytes"
                setting = "max_header_bytes"
            self._refuse_request(431, message, setting)
            raise _Stop
        size = len(name)
        if size == 14:
            if name.lower() == b"content-length" and value.isdigit():
                declared = int(value)
                if declared > self._max_body_bytes:
                    self._refuse_too_large()
                    raise _Stop
                if declared >= SEPARATE_BODY_BYTES:
                    self._body_buffer = bytearray(declared)
        elif size == 17:
            if name.lower() == b"transfer-encoding":
                # llhttp accepts "gzip, chunked" and HTTP/1.0 chunking; a proxy must not (RFC 9112 §6.1).
                self._transfer_encoding = value if self._transfer_encoding is None else b"repeated"
        elif size == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        self.phase = _BODY
        self.since = _now()  # the body has body_timeout_s from here
        coding = self._transfer_encoding
        if coding is not None and (
            coding.strip().lower() != b"chunked" or self._parser.get_http_version() != "1.1"
        ):
            self._refuse_request(
                400,
                "Transfer-Encoding other than a single 'chunked' on HTTP/1.1 is refused (request smuggling)",
            )
            raise _Stop
        if self._expect_continue and self._transport is not None:
            # The router reads whole bodies; tell the client to send it now rather than wait.
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        start = self._body_size
        self._body_size += len(body)
        if self._body_size > self._max_body_bytes:
            self._refuse_too_large()
            raise _Stop
        buffer = self._body_buffer
        if buffer is not None and self._body_size <= len(buffer):
            buffer[start : self._body_size] = body
        else:  # small, chunked, or (never with llhttp) more than declared
            self._body.append(body)

    def on_message_complete(self) -> None:
        self.phase = _IDLE
        if self._rejected:
            return
        body: Body
        buffer = self._body_buffer
        if buffer is not None and not self._body and self._body_size == len(buffer):
            body, self._body_buffer = buffer, None
        else:
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(
            self._parser.get_method(), self._url, self._headers, body, self._parser.should_keep_alive()
        )
        self._pending.append(request)
        if len(self._pending) >= self._max_pipelined and self._transport is not None and not self.paused:
            self.paused = True
            self._transport.pause_reading()
        if not self._busy:
            self._answer_pending()

    # answering: one request at a time, in arrival order (pipelining-safe)
    def _answer_pending(self) -> None:
        while self._pending and not self._closed:
            request = self._pending.popleft()
            if self.paused and len(self._pending) < self._max_pipelined // 2 and self._transport is not None:
                self.paused = False
                self._transport.resume_reading()
                if self.phase != _IDLE:
                    self.since = _now()  # a head or body cut off by the pause gets its full time again
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
        self.since = _now()  # idle from here, unless a pipelined head is being read

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
            self.close()

    def _refuse_too_large(self) -> None:
        self._refuse_request(
            413, f"request body is larger than {self._max_body_bytes} bytes", "max_body_bytes"
        )

    def _refuse_request(self, status: int, message: str, setting: str | None = None) -> None:
        if setting is not None:
            self._connections.count(setting)
        self.refuse(self._limits.refusal(status, message, setting))

    def refuse(self, response: bytes) -> None:
        """Answer ``response`` and close: the stream can no longer be trusted for further requests."""
        self._rejected = True
        self._pending.clear()
        if self._transport is not None and not self._closed:
            self._transport.write(response)
            self.close()

    def close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    def close_if_idle(self) -> bool:
        if self.idle and not self._closed:
            self.close()
            return True
        return False
