"""The router's HTTP/1 server protocol on a real event loop in a thread, with a small dispatcher.

It echoes the path and a digest of the body, and answers some paths later through the callback, as the
router's forwarding does, so each limit of the protocol is seen from the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading

from modelfleet.transport.server import Answer, Connections, ServerLimits, ServerProtocol
from modelfleet.transport.wire import Request, Response

LIMITS = ServerLimits(
    max_url_bytes=1024,
    max_header_bytes=4096,
    max_header_count=20,
    max_body_bytes=4096,
    header_timeout_s=1.0,
    body_timeout_s=1.0,
    idle_timeout_s=1.5,
    max_connections=400,
    max_pipelined=8,
)


SLOW_ANSWER_S = 1.6


class _Counted(ServerProtocol):
    """Counts the bytes the server itself read: what a client sent is no measure, since the kernel's
    socket buffers (autotuned up to tens of MB on loopback) take bytes the server never reads."""

    def __init__(self, served: Served) -> None:
        super().__init__(served.dispatch, served.connections)
        self._served = served

    def data_received(self, data: bytes) -> None:
        self._served.bytes_read += len(data)
        super().data_received(data)


class Served:
    """A ServerProtocol listening on 127.0.0.1 in its own event-loop thread."""

    def __init__(self, limits: ServerLimits) -> None:
        self.loop = asyncio.new_event_loop()
        self.connections = Connections(limits)
        self.port = 0
        self.bytes_read = 0  # by every connection, read on the loop's thread
        ready = threading.Event()

        async def main() -> None:
            server = await self.loop.create_server(lambda: _Counted(self), "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.connections.start()
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(main(), self.loop).result(5)
        ready.wait(5)

    def dispatch(self, request: Request, answer: Answer) -> Response | None:
        digest = hashlib.sha256(request.body).hexdigest()
        body = json.dumps({"path": request.path, "body_bytes": len(request.body), "sha256": digest}).encode()
        response = Response(200, [(b"Content-Type", b"application/json")], body)
        if request.path.startswith("/later"):  # answered through the callback, as forwarding is
            self.loop.call_later(0.01, answer, response)
            return None
        if request.path.startswith("/slow"):  # an upstream slower than every client timeout
            self.loop.call_later(SLOW_ANSWER_S, answer, response)
            return None
        return response

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.connections.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
