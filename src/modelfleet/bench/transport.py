"""A lean HTTP/1.1 keep-alive connection pool for the load generator: asyncio protocols + httptools.

Why not aiohttp on the hot path: measured on this project's loopback no-op server, an aiohttp session
with one task per request tops out near 6,000 requests/s per process and sends 3 % of requests more
than 2 ms late already at 2,000/s, while `wrk` reaches 100,000/s. A generator that cannot hold its
rate reports the generator, not the server. Here a request is one pre-encoded ``bytes`` write and one
callback when httptools (the parser uvicorn uses) has read the response: no task, coroutine, future or
header object per request. aiohttp still does the control-plane calls (model metadata) in targets.py.

One request is in flight per connection (no pipelining), so ``max_connections`` is the in-flight cap.
Requests beyond it wait in a FIFO queue; timeouts count from each request's deadline, which the caller
sets from the intended send time, so a queued request times out just like one on the wire.
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

# Outcome codes passed to the completion callback instead of an HTTP status.
TIMEOUT = -1
CONNECTION_ERROR = -2

# What submit() did with a request.
SENT = 0
QUEUED_CONNECTING = 1  # waits for a connection being opened (below the cap)
QUEUED_AT_CAP = 2  # every allowed connection is busy: the target is holding the generator back

# (token, written_at_s, finished_at_s, status_or_outcome); written_at_s is 0.0 when never written.
OnDone = Callable[[Any, float, float, int], None]

_now = time.monotonic
_SWEEP_EVERY_S = 0.005


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host and port of one target."""

    host: str
    port: int
    tls: bool = False
    verify_tls: bool = True

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context()
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class _Connection(asyncio.Protocol):
    __slots__ = ("alive", "busy", "deadline", "parser", "pool", "token", "transport", "written_at")

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.token: Any = None
        self.written_at = 0.0
        self.deadline = 0.0
        self.busy = False
        self.alive = False

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.alive = True
        self.pool._on_connected(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.pool._on_broken(self, CONNECTION_ERROR)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.alive:
            self.pool._on_broken(self, CONNECTION_ERROR)

    # httptools callback, once per response.
    def on_message_complete(self) -> None:
        finished = _now()
        pool = self.pool
        token, written_at = self.token, self.written_at
        self.token = None
        self.busy = False
        pool._in_flight -= 1
        parser = self.parser
        status = parser.get_status_code()
        if parser.should_keep_alive() and not pool._closed:
            pool._release(self)
        else:
            pool._retire(self)
            if pool._pending and not pool._closed:
                pool._open_connection()
        pool.on_done(token, written_at, finished, status)


class ConnectionPool:
    """Keep-alive connections to one origin, at most ``max_connections`` open (and in flight) at once."""

    def __init__(
        self, origin: Origin, max_connections: int, on_done: OnDone, connect_timeout_s: float = 10.0
    ) -> None:
        self.origin = origin
        self.max_connections = max_connections
        self.on_done = on_done
        self.connect_timeout_s = connect_timeout_s
        self._ssl = origin.ssl_context()
        self._open: list[_Connection] = []  # connected, busy or idle
        self._idle: list[_Connection] = []
        self._in_flight = 0
        self._connecting = 0
        self._pending: deque[tuple[bytes, Any, float]] = deque()
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

    def submit(self, request: bytes, token: Any, deadline: float) -> int:
        """Send ``request`` now if a connection is free, else queue it. Returns SENT or a QUEUED_* code."""
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
        """Fail what is still queued, close every connection."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._connect_tasks):
            task.cancel()
        now = _now()
        while self._pending:
            _, token, _ = self._pending.popleft()
            self.on_done(token, 0.0, now, CONNECTION_ERROR)
        for connection in self._open:
            connection.alive = False
            if connection.transport is not None:
                connection.transport.close()
        self._open.clear()
        self._idle.clear()
        self._in_flight = 0
        await asyncio.sleep(0)

    # internals
    def _write(self, connection: _Connection, request: bytes, token: Any, deadline: float) -> None:
        connection.token = token
        connection.deadline = deadline
        connection.busy = True
        self._in_flight += 1
        connection.written_at = _now()
        connection.transport.write(request)

    def _open_connection(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_EVERY_S, self._sweep)
        self._connecting += 1
        task = asyncio.get_running_loop().create_task(self._connect())
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self),
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
                self.on_done(token, 0.0, _now(), CONNECTION_ERROR)
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
        token, written_at = connection.token, connection.written_at
        connection.token = None
        if self._pending and not self._closed:
            self._open_connection()
        self.on_done(token, written_at, _now(), outcome)

    def _sweep(self) -> None:
        """Time out what passed its deadline: on the wire (the connection is dropped) or still queued.

        A scan of the open connections every few milliseconds costs less than tracking each request's
        deadline as it is written, and a timeout a few milliseconds late does not matter.
        """
        now = _now()
        expired = [c for c in self._open if c.busy and c.deadline <= now]
        for connection in expired:
            self._on_broken(connection, TIMEOUT)
        pending = self._pending
        while pending and pending[0][2] <= now:
            _, token, _ = pending.popleft()
            self.on_done(token, 0.0, now, TIMEOUT)
        self._sweeper = (
            None if self._closed else asyncio.get_running_loop().call_later(_SWEEP_EVERY_S, self._sweep)
        )
