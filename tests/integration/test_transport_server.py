"""The router's server protocol against raw sockets on loopback: smuggling, pipelining, limits, slow clients.

The protocol runs on a real event loop in a thread with a small dispatcher (echo the path, some answers
later through the callback, as the router's forwarding does), so each limit is seen from the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest
from tests.support.transport_server import LIMITS, SLOW_ANSWER_S, Served

from modelfleet.transport.client import ConnectionPool, Origin
from modelfleet.transport.server import ServerLimits
from modelfleet.transport.wire import SEPARATE_BODY_BYTES, encode_request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served(LIMITS)
    yield server
    server.close()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection.

    A reset after the response counts as the close: a slow client whose last byte reached the server after it
    answered and closed gets an RST for that byte, and the response it already received is what the test checks.
    """
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _error(response: bytes) -> str:
    body = response.split(b"\r\n\r\n", 1)[1]
    return str(json.loads(body)["error"])


def _get(path: str = "/x") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode()


SMUGGLING = {
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Content-Length",
    ),
    "duplicate content-length": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "Duplicate Content-Length",
    ),
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
        "Duplicate Content-Length",
    ),
    "content-length list": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
        "Content-Length",
    ),
    "transfer-encoding gzip": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        "Transfer-Encoding",
    ),
    "transfer-encoding gzip, chunked": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "request smuggling",
    ),
    "transfer-encoding twice": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding",
    ),
    "chunked on HTTP/1.0": (
        b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "request smuggling",
    ),
}


@pytest.mark.parametrize("case", list(SMUGGLING), ids=list(SMUGGLING))
def test_smuggling_shapes_get_400_and_the_connection_closes(served: Served, case: str) -> None:
    request, named = SMUGGLING[case]
    with _connect(served.port) as sock:
        # A follow-up request in the same write must never be answered: the stream is not trusted.
        sock.sendall(request + _get("/smuggled"))
        received = _read_all(sock)
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in received
    assert named in _error(received)
    assert b"/smuggled" not in received


def test_plain_chunked_bodies_are_accepted(served: Served) -> None:
    with _connect(served.port) as sock:
        sock.sendall(
            b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200 OK") and b'"body_bytes": 5' in head


def test_pipelined_requests_in_one_write_are_answered_in_order(served: Served) -> None:
    paths = [f"/later/{i}" if i % 3 == 0 else f"/now/{i}" for i in range(20)]  # more than max_pipelined
    with _connect(served.port) as sock:
        sock.sendall(b"".join(_get(path) for path in paths))
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < len(paths):
            chunk = sock.recv(65536)
            assert chunk, f"closed early after {received.count(b'HTTP/1.1 200 OK')} answers"
            received += chunk
    answered = [
        json.loads(part.split(b"\r\n\r\n", 1)[1])["path"] for part in received.split(b"HTTP/1.1 ")[1:]
    ]
    assert answered == paths


@pytest.mark.parametrize(
    ("request_bytes", "status", "setting"),
    [
        (_get("/" + "u" * 2000), b"414", "router.max_url_bytes"),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\n",
            b"431",
            "router.max_header_count",
        ),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n", b"431", "router.max_header_bytes"),
        (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", b"413", "router.max_body_bytes"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1400\r\n" + b"b" * 5120 + b"\r\n0\r\n\r\n",
            b"413",
            "router.max_body_bytes",
        ),
    ],
    ids=["url", "header-count", "header-bytes", "content-length", "chunked-body"],
)
def test_limits_refuse_with_json_naming_the_setting(
    served: Served, request_bytes: bytes, status: bytes, setting: str
) -> None:
    with _connect(served.port) as sock:
        sock.sendall(request_bytes)
        received = _read_all(sock)
    assert received.startswith(b"HTTP/1.1 " + status)
    assert setting in _error(received)


def test_a_huge_header_is_cut_off_after_about_one_read() -> None:
    # 16 MB of one header value, sent as it would be by a hostile client: the server answers 431 and
    # closes long before the value ends; what it read stays within the limit plus one read.
    server = Served(LIMITS)
    sent = 0
    try:
        with _connect(server.port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nX-Huge: ")
            chunk = b"h" * 65536
            with pytest.raises(OSError):  # reset or broken pipe once the server has closed
                while sent < 16 * 1024 * 1024:
                    sock.sendall(chunk)
                    sent += len(chunk)
        time.sleep(0.1)  # the loop thread has counted its last read
        bytes_read = server.bytes_read
    finally:
        server.close()
    assert sent < 16 * 1024 * 1024
    # The head's limits, the in-progress slack for pipelined reads, and one more read of at most 256 KiB.
    assert bytes_read < LIMITS.max_header_bytes + LIMITS.max_url_bytes + 2 * 256 * 1024
    assert server.connections.refused == {"max_header_bytes": 1}


@pytest.mark.serial  # asserts answers within 0.5 s while 200 slow clients trickle: run alone
def test_slow_header_clients_are_closed_while_others_are_answered_fast() -> None:
    server = Served(LIMITS)
    try:
        slow = [_connect(server.port) for _ in range(200)]
        request = b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 100
        opened = time.monotonic()
        answered_in: list[float] = []
        for position in range(3):  # one byte per connection per half second: a slowloris client
            for sock in slow:
                # The last round can come after the header timeout: the server has closed the connection.
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    sock.sendall(request[position : position + 1])
            started = time.monotonic()
            with _connect(server.port) as sock:
                sock.sendall(_get("/ordinary"))
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            answered_in.append(time.monotonic() - started)
            time.sleep(0.5)
        closed: dict[int, bytes] = {}
        deadline = opened + LIMITS.header_timeout_s + 3.0
        while len(closed) < len(slow) and time.monotonic() < deadline:
            readable, _, _ = select.select([s for s in slow if s.fileno() not in closed], [], [], 0.2)
            for sock in readable:
                closed[sock.fileno()] = _read_all(sock)
        closed_after_s = time.monotonic() - opened
        for sock in slow:
            sock.close()
    finally:
        server.close()
    assert len(closed) == 200
    assert all(data.startswith(b"HTTP/1.1 408") for data in closed.values())
    assert "router.header_timeout_s" in _error(next(iter(closed.values())))
    assert closed_after_s < LIMITS.header_timeout_s + 3.0
    assert max(answered_in) < 0.5


TRICKLED_BODIES = {
    # (head, one body piece per send): a piece every 0.2 s for 4 s, and the body never ends.
    "content-length": (b"POST /trickle HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n", [b"b"] * 20),
    "chunked": (
        b"POST /trickle HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        [b"1\r\nb\r\n"] * 20,
    ),
}


@pytest.mark.parametrize("case", list(TRICKLED_BODIES), ids=list(TRICKLED_BODIES))
def test_a_trickled_body_gets_408_after_the_body_timeout(served: Served, case: str) -> None:
    head, pieces = TRICKLED_BODIES[case]
    with _connect(served.port) as sock:
        sock.sendall(head)
        started = time.monotonic()
        answered_in: list[float] = []
        for piece in pieces:  # one piece every 0.2 s until the server answers
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                break
            sock.sendall(piece)
            if not answered_in:  # the slow body holds only its own connection
                ordinary_started = time.monotonic()
                with _connect(served.port) as other:
                    other.sendall(_get("/ordinary"))
                    assert other.recv(65536).startswith(b"HTTP/1.1 200 OK")
                answered_in.append(time.monotonic() - ordinary_started)
        received = _read_all(sock)
        waited = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408")
    assert b"Connection: close" in received
    assert "router.body_timeout_s" in _error(received)
    assert LIMITS.body_timeout_s - 0.1 < waited < LIMITS.body_timeout_s + 1.5
    assert answered_in[0] < 0.5


def test_the_body_timeout_starts_when_the_headers_end(served: Served) -> None:
    # Head and body each take about half their timeout: together longer than either, yet both in time.
    head = b"POST /timed HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
    with _connect(served.port) as sock:
        for piece in (head[:10], head[10:20], head[20:]):
            sock.sendall(piece)
            time.sleep(LIMITS.header_timeout_s / 5)
        for piece in (b"ab", b"cd", b"e"):
            time.sleep(LIMITS.body_timeout_s / 5)
            sock.sendall(piece)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"body_bytes": 5' in answer


def test_a_body_cut_off_by_the_pipelining_pause_gets_its_time_from_when_reading_resumes(
    served: Served,
) -> None:
    # A slow answer, enough pipelined requests to pause reading, another slow one, then a body half
    # sent: reading stops for longer than body_timeout_s, which is the server's doing, not the client's.
    assert LIMITS.body_timeout_s < SLOW_ANSWER_S  # the test's premise
    quick = [_get(f"/now/{i}") for i in range(LIMITS.max_pipelined - 1)]
    post = b"POST /after HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab"
    with _connect(served.port) as sock:
        sock.sendall(_get("/slow/1") + b"".join(quick) + _get("/slow/2") + post)
        # Reading resumes once the first slow answer is out; the rest of the body comes more than one
        # scan later (scans run every body_timeout_s / 4), well inside body_timeout_s of resuming, and
        # while the second slow request is still being answered.
        time.sleep(SLOW_ANSWER_S + 0.5)
        sock.sendall(b"cd")
        received = b""
        while received.count(b"HTTP/1.1 ") < len(quick) + 3:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {received.count(b'HTTP/1.1 ')} answers: {received[-200:]!r}"
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == len(quick) + 3
    assert received.rstrip().rsplit(b"\r\n\r\n", 1)[1].startswith(b'{"path": "/after", "body_bytes": 4,')


def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(served: Served) -> None:
    with _connect(served.port) as used, _connect(served.port) as silent:
        used.sendall(_get())
        assert used.recv(65536).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        assert used.recv(65536) == b""  # closed by the server, with no answer
        assert silent.recv(65536) == b""  # a connection that never sends is idle from the start
        waited = time.monotonic() - started
    assert LIMITS.idle_timeout_s - 0.3 < waited < LIMITS.idle_timeout_s + 1.5


def test_connections_beyond_the_cap_get_503_at_once() -> None:
    server = Served(ServerLimits(max_connections=3, retry_after_s=2))
    try:
        held = [_connect(server.port) for _ in range(3)]
        for sock in held:  # each is registered once it has been answered
            sock.sendall(_get())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        with _connect(server.port) as extra:
            received = _read_all(extra)
        for sock in held:
            sock.close()
        time.sleep(0.2)
        with _connect(server.port) as again:  # room again once the others have gone
            again.sendall(_get())
            assert again.recv(65536).startswith(b"HTTP/1.1 200 OK")
    finally:
        server.close()
    assert received.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 2\r\n" in received
    assert "router.max_connections" in _error(received)
    assert server.connections.refused["max_connections"] == 1


def test_large_bodies_arrive_whole_read_into_one_buffer_and_sent_without_a_join() -> None:
    # LIMITS allow 4 KiB bodies; these are past SEPARATE_BODY_BYTES, so a server of their own.
    server = Served(dataclasses.replace(LIMITS, max_body_bytes=1 << 20))
    try:
        body = os.urandom(3 * SEPARATE_BODY_BYTES + 17)
        expected = {"body_bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        with _connect(server.port) as sock:  # Content-Length: one preallocated buffer, filled in place
            sock.sendall(
                b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            for offset in range(0, len(body), 10_000):  # many reads of the body
                sock.sendall(body[offset : offset + 10_000])
            answer = json.loads(_read_all(sock).split(b"\r\n\r\n", 1)[1])
        assert {key: answer[key] for key in expected} == expected
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:]))
        with _connect(server.port) as sock:  # chunked: no declared size, chunks joined once
            sock.sendall(
                b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            sock.sendall(chunked + b"0\r\n\r\n")
            answer = json.loads(_read_all(sock).split(b"\r\n\r\n", 1)[1])
        assert {key: answer[key] for key in expected} == expected

        payload = encode_request(b"POST", b"/x", b"x", [], body)
        assert isinstance(payload, tuple) and payload[1] is body  # head and body, not joined

        async def send() -> tuple[int, bytes]:
            done: list[tuple[int, bytes]] = []
            pool = ConnectionPool(
                Origin("127.0.0.1", server.port),
                max_connections=1,
                on_done=lambda token, written, finished, status, response: done.append(
                    (status, response.body if response is not None else b"")
                ),
                keep_responses=True,
            )
            pool.submit(payload, None, time.monotonic() + 5)
            while not done:
                await asyncio.sleep(0.01)
            await pool.close()
            return done[0]

        status, response_body = asyncio.run(send())
        assert status == 200
        assert {key: json.loads(response_body)[key] for key in expected} == expected
    finally:
        server.close()
