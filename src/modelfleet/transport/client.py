"""The client side: one keep-alive connection pool, used by the router's upstreams and the load generator.

Why not aiohttp: measured on this project's loopback no-op server, an aiohttp session with one task
per request tops out near 6,000 requests/s per process and sends 3 % of requests more than 2 ms late
already at 2,000/s, while `wrk` reaches 100,000/s; and the router's budget is a fraction of a model
server's ~160 µs per request. Here a request is one pre-encoded ``bytes`` write and one callback when
httptools has read the response: no task, coroutine, future or timer per request.

One interface serves both users. ``submit(request, token, deadline)`` sends now or queues (FIFO, at most
``max_connections`` open and in flight, one request per connection); the pool's single ``on_done(token,
written_at, finished_at, status, response)`` reports every outcome the same way: an HTTP status, or a
negative code (TIMEOUT, CONNECTION_ERROR, RESPONSE_TOO_LARGE) instead of an exception. The caller's
token carries its own state (the generator's endpoint and intended time, the router's request), so a
request allocates no closure. ``keep_responses`` chooses whether a Response (headers and body) is built:
the generator only needs the status, and a protocol without header and body callbacks makes httptools
skip them entirely.

Deadlines are absolute (``time.monotonic``): the generator sets them from the intended send time so a
queued request times out like one on the wire, the router from the client's deadline. A scan of the
open connections every few milliseconds while anything is in flight costs less than a timer per
request, and a timeout a few milliseconds late does not matter. A response larger than the limits
(an upstream or target gone wrong) ends its exchange with RESPONSE_TOO_LARGE before it is buffered.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools

from modelfleet.transport.wire import Headers, Payload, Response

# Outcome codes passed to on_done instead of an HTTP status.
TIMEOUT = -1
CONNECTION_ERROR = -2  # could not connect, or the connection failed or answered garbage mid-exchange
RESPONSE_TOO_LARGE = -3  # the response went past ClientLimits
OUTCOMES = {TIMEOUT: "timeout", CONNECTION_ERROR: "connection", RESPONSE_TOO_LARGE: "response_too_large"}

# What submit() did with a request.
SENT = 0
QUEUED_CONNECTING = 1  # waits for a connection being opened (below the cap)
QUEUED_AT_CAP = 2  # every allowed connection is busy: the target is holding the sender back

# (token, written_at_s, finished_at_s, status_or_outcome, response); written_at_s is 0.0 when never
# written, response is None unless the pool keeps responses and an HTTP status came back.
OnDone = Callable[[Any, float, float, int, "Response | None"], None]

_now = time.monotonic
_SWEEP_EVERY_S = 0.005
# httptools holds an unfinished header value until it ends; a head may run this far past the limit
# (one read) before the byte count stops it.
_READ_SLACK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host and port of one target."""

    host: str
    port: int
    tls: bool = False
    verify_tls: bool = True

    @property
    def host_header(self) -> bytes:
        return f"{self.host}:{self.port}".encode("latin-1")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context()
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The most one response may bring. Header limits apply where responses are kept."""

    max_response_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 200


class _Connection(asyncio.Protocol):
    """One connection that reports only the status (no header or body callbacks for httptools)."""

    __slots__ = (
        "alive",
        "busy",
        "byte_limit",
        "deadline",
        "parser",
        "pool",
        "received",
        "request",
        "reused",
        "token",
        "transport",
        "written_at",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.token: Any = None
        self.request: Payload | None = None
        self.written_at = 0.0
        self.deadline = 0.0
        self.received = 0
        self.byte_limit = pool.limits.max_response_bytes
        self.busy = False
        self.alive = False
        self.reused = False

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.alive = True
        self.pool._on_connected(self)

    def data_received(self, data: bytes) -> None:
        received = self.received + len(data)
        self.received = received
        if received > self.byte_limit:
            self.pool._on_broken(self, RESPONSE_TOO_LARGE)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.alive:
                self.pool._on_broken(self, CONNECTION_ERROR)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.alive:
            self.pool._on_broken(self, CONNECTION_ERROR)

    # httptools callback, once per response.
    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:  # below: an interim answer (100 Continue); the final one follows
            self.pool._on_response(self, status, None)


class _KeepingConnection(_Connection):
    """One connection that also keeps headers and body, within the pool's ClientLimits."""

    __slots__ = ("body", "body_bytes", "header_bytes", "headers")

    def __init__(self, pool: ConnectionPool) -> None:
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.header_bytes = self.body_bytes = 0
        super().__init__(pool)

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []
        self.header_bytes = self.body_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.header_bytes += len(name) + len(value)
        limits = self.pool.limits
        if self.header_bytes > limits.max_header_bytes or len(self.headers) > limits.max_header_count:
            self.pool._on_broken(self, RESPONSE_TOO_LARGE)
            raise _Stop

    def on_headers_complete(self) -> None:
        self.byte_limit = self.pool.limits.max_response_bytes

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.pool.limits.max_response_bytes:  # a read can hold the whole body
            self.pool._on_broken(self, RESPONSE_TOO_LARGE)
            raise _Stop
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            body = self.body
            data = body[0] if len(body) == 1 else b"".join(body)
            self.pool._on_response(self, status, Response(status, self.headers, data))


class _Stop(Exception):
    """Raised from a parser callback after the exchange has ended: httptools stops parsing."""


class _RefusalConnection(_Connection):
    """Status only, except that a 503 keeps its Retry-After header and its body (at most the head limit):
    what a closed-loop user of the load generator needs to wait as the refusal asks. A 200 costs one
    status check per header and per body chunk, where keeping every response built a Response for each."""

    __slots__ = ("refusal_body", "retry_after")

    def __init__(self, pool: ConnectionPool) -> None:
        super().__init__(pool)
        self.retry_after: bytes | None = None
        self.refusal_body: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and self.parser.get_status_code() == 503 and name.lower() == b"retry-after":
            self.retry_after = value

    def on_body(self, body: bytes) -> None:
        if self.parser.get_status_code() == 503 and len(self.refusal_body) < 4:
            self.refusal_body.append(body[:4096])

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 503:
            headers = [(b"retry-after", self.retry_after)] if self.retry_after is not None else []
            response = Response(503, headers, b"".join(self.refusal_body))
            self.retry_after, self.refusal_body = None, []
            self.pool._on_response(self, status, response)
        elif status >= 200:
            self.pool._on_response(self, status, None)


class ConnectionPool:
    """Keep-alive connections to one origin, at most ``max_connections`` open (and in flight) at once."""

    def __init__(
        self,
        origin: Origin,
        max_connections: int,
        on_done: OnDone,
        connect_timeout_s: float = 10.0,
        limits: ClientLimits | None = None,
        keep_responses: bool = False,
        keep_refusals: bool = False,
    ) -> None:
        """`keep_responses`: on_done gets each Response (headers and body); `keep_refusals` (without it):
        only a 503's, with its Retry-After header and body, and None for every other status."""
        self.origin = origin
        self.max_connections = max_connections
        self.on_done = on_done
        self.connect_timeout_s = connect_timeout_s
        self.limits = limits or ClientLimits()
        self._protocol: type[_Connection] = (
            _KeepingConnection if keep_responses else _RefusalConnection if keep_refusals else _Connection
        )
        # Until a kept response's head is complete, only this many bytes may arrive.
        self._head_limit = (
            self.limits.max_header_bytes + _READ_SLACK_BYTES
            if keep_responses
            else self.limits.max_response_bytes
        )
        self._ssl = origin.ssl_context()
        self._open: list[_Connection] = []  # connected, busy or idle
        self._idle: list[_Connection] = []
        self._in_flight = 0
        self._connecting = 0
        self._pending: deque[tuple[Payload, Any, float]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._connect_tasks: set[asyncio.Task[None]] = set()
        self.connect_errors = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        return not self._in_flight and not self._pending and self._connecting == 0

    def submit(self, request: Payload, token: Any, deadline: float) -> int:
        """Send ``request`` now if a connection is free, else queue it. Returns SENT or a QUEUED_* code."""
        if self._sweeper is None:
            self._start_sweeping()
        idle = self._idle
        if idle and not self._pending:
            self._write(idle.pop(), request, token, deadline)
            return SENT
        self._pending.append((request, token, deadline))
        if len(self._open) + self._connecting < self.max_connections:
            self._open_connection()
            return QUEUED_CONNECTING
        return QUEUED_AT_CAP

    async def prewarm(self, count: int) -> None:
        """Open up to ``count`` connections (within the cap) and wait until each is open or has failed.

        Connecting is far costlier than a request on an open connection, for the target as much as for
        the generator, so connections opened on demand at a point's start pile up a backlog that its
        measured part inherits; wrk and friends likewise connect before the clock starts. A connection
        that fails here only counts in ``connect_errors``: the requests that follow report it.
        """
        for _ in range(min(count, self.max_connections) - len(self._open) - self._connecting):
            self._open_connection()
        if self._connect_tasks:
            await asyncio.gather(*self._connect_tasks, return_exceptions=True)

    async def close(self) -> None:
        """Fail what is still queued or in flight (CONNECTION_ERROR), close every connection."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._connect_tasks):
            task.cancel()
        now = _now()
        while self._pending:
            _, token, _ = self._pending.popleft()
            self.on_done(token, 0.0, now, CONNECTION_ERROR, None)
        for connection in list(self._open):
            busy, token, written_at = connection.busy, connection.token, connection.written_at
            connection.alive = connection.busy = False
            if connection.transport is not None:
                connection.transport.close()
            if busy:
                self.on_done(token, written_at, now, CONNECTION_ERROR, None)
        self._open.clear()
        self._idle.clear()
        self._in_flight = 0
        await asyncio.sleep(0)

    # internals
    def _write(self, connection: _Connection, request: Payload, token: Any, deadline: float) -> None:
        connection.token = token
        connection.request = request
        connection.deadline = deadline
        connection.busy = True
        connection.received = 0
        connection.byte_limit = self._head_limit
        self._in_flight += 1
        connection.written_at = _now()
        if type(request) is bytes:
            connection.transport.write(request)
        else:  # a head and a large body, written without joining them
            connection.transport.writelines(request)

    def _on_response(self, connection: _Connection, status: int, response: Response | None) -> None:
        finished = _now()
        if not connection.busy:
            return  # ended already (timed out or too large); a late answer is dropped
        token, written_at = connection.token, connection.written_at
        connection.token = connection.request = None
        connection.busy = False
        connection.reused = True
        self._in_flight -= 1
        if connection.parser.should_keep_alive() and not self._closed:
            self._release(connection)
        else:
            self._retire(connection)
            if self._pending and not self._closed:
                self._open_connection()
        self.on_done(token, written_at, finished, status, response)

    def _open_connection(self) -> None:
        self._connecting += 1
        task = asyncio.get_running_loop().create_task(self._connect())
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: protocol(self),
                    self.origin.host,
                    self.origin.port,
                    ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                ),
                timeout=self.connect_timeout_s,
            )
        except (OSError, TimeoutError, ssl.SSLError):
            self._connecting -= 1
            self.connect_errors += 1
            # The request that asked for this connection fails; later ones may get a connection.
            if self._pending:
                _, token, _ = self._pending.popleft()
                self.on_done(token, 0.0, _now(), CONNECTION_ERROR, None)
            return
        except asyncio.CancelledError:
            self._connecting -= 1
            raise

    def _on_connected(self, connection: _Connection) -> None:
        self._connecting -= 1
        if self._closed:
            connection.alive = False
            connection.transport.close()
            return
        self._open.append(connection)
        self._release(connection)

    def _release(self, connection: _Connection) -> None:
        """A free connection takes the oldest queued request, or waits idle."""
        if self._pending:
            self._write(connection, *self._pending.popleft())
        else:
            self._idle.append(connection)

    def _retire(self, connection: _Connection, abort: bool = False) -> None:
        connection.alive = False
        if connection in self._open:
            self._open.remove(connection)
        if connection.transport is not None:
            if abort:
                connection.transport.abort()
            else:
                connection.transport.close()

    def _on_broken(self, connection: _Connection, outcome: int) -> None:
        self._retire(connection, abort=True)
        if not connection.busy:
            if connection in self._idle:
                self._idle.remove(connection)
            return
        connection.busy = False
        self._in_flight -= 1
        token, written_at, request = connection.token, connection.written_at, connection.request
        connection.token = connection.request = None
        if self._closed:
            self.on_done(token, written_at, _now(), outcome, None)
            return
        if outcome == CONNECTION_ERROR and connection.reused and connection.received == 0 and request:
            # The server closed this idle keep-alive connection as we sent on it (RFC 9112 §9.3.1):
            # once more, first in line, on a new connection.
            self._pending.appendleft((request, token, connection.deadline))
            self._open_connection()
            return
        if self._pending:
            self._open_connection()
        self.on_done(token, written_at, _now(), outcome, None)

    def _start_sweeping(self) -> None:
        if not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_EVERY_S, self._sweep)

    def _sweep(self) -> None:
        """Time out what passed its deadline: on the wire (the connection is dropped) or still queued."""
        now = _now()
        expired = [c for c in self._open if c.busy and c.deadline <= now]
        for connection in expired:
            self._on_broken(connection, TIMEOUT)
        pending = self._pending
        while pending and pending[0][2] <= now:
            _, token, _ = pending.popleft()
            self.on_done(token, 0.0, now, TIMEOUT, None)
        self._sweeper = None
        if self._in_flight or self._pending or self._connecting:
            self._start_sweeping()


def _settle(future: asyncio.Future[tuple[int, Response | None]], *outcome: Any) -> None:
    if not future.done():  # the caller may have given up (cancelled)
        future.set_result((outcome[2], outcome[3]))


class FetchPool(ConnectionPool):
    """A pool for calls awaited from coroutines (health polls, the repository index), kept apart from
    the hot path's pool so they never queue behind its requests."""

    def __init__(
        self,
        origin: Origin,
        max_connections: int = 2,
        connect_timeout_s: float = 10.0,
        limits: ClientLimits | None = None,
    ) -> None:
        super().__init__(origin, max_connections, _settle, connect_timeout_s, limits, keep_responses=True)

    async def fetch(self, request: Payload, timeout_s: float) -> tuple[int, Response | None]:
        """(status or outcome code, response): the same outcomes ``on_done`` reports, never an exception."""
        future: asyncio.Future[tuple[int, Response | None]] = asyncio.get_running_loop().create_future()
        self.submit(request, future, _now() + timeout_s)
        return await future
