"""The shared HTTP/1.1 connection pool (load generator and router upstreams) against real sockets on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tests.support.ports import refused_port

from modelfleet.bench.targets import encode_request
from modelfleet.transport.client import (
    CONNECTION_ERROR,
    QUEUED_AT_CAP,
    RESPONSE_TOO_LARGE,
    SENT,
    TIMEOUT,
    ClientLimits,
    ConnectionPool,
    FetchPool,
    Origin,
)


async def _serve(handler: Any) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _response(body: bytes = b"{}", status: int = 200, close: bool = False) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s" % (
        status,
        len(body),
        connection,
        body,
    )


async def _read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return True


def _collect() -> tuple[list[tuple[Any, float, float, int]], Any]:
    done: list[tuple[Any, float, float, int]] = []
    return done, lambda token, written, finished, status, response: done.append(
        (token, written, finished, status)
    )


async def _wait_for(done: list[Any], count: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(done) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def test_keep_alive_reuses_one_connection_and_reports_statuses() -> None:
    async def scenario() -> None:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            statuses = iter([200, 503, 200, 404])
            try:
                while await _read_request(reader):
                    writer.write(_response(status=next(statuses)))
                    await writer.drain()
            except (asyncio.IncompleteReadError, StopIteration):
                writer.close()

        server, port = await _serve(handler)
        done, on_done = _collect()
        pool = ConnectionPool(Origin("127.0.0.1", port), 4, on_done)
        request = encode_request("POST", "h", "/x", {}, b'{"a":1}')
        for token in range(4):
            pool.submit(request, token, time.monotonic() + 5)
            await _wait_for(done, token + 1)
        await pool.close()
        server.close()
        assert [(t, s) for t, _, _, s in done] == [(0, 200), (1, 503), (2, 200), (3, 404)]
        assert connections == 1
        assert all(0 < written <= finished for _, written, finished, _ in done)

    asyncio.run(scenario())


def test_connection_close_responses_open_new_connections() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(_response(close=True))
            await writer.drain()
            writer.close()

        server, port = await _serve(handler)
        done, on_done = _collect()
        pool = ConnectionPool(Origin("127.0.0.1", port), 1, on_done)
        request = encode_request("GET", "h", "/", {}, None)
        codes = [pool.submit(request, token, time.monotonic() + 5) for token in range(3)]
        await _wait_for(done, 3)
        await pool.close()
        server.close()
        assert codes[1:] == [QUEUED_AT_CAP, QUEUED_AT_CAP]  # one connection allowed: the rest wait
        assert [s for *_, s in done] == [200, 200, 200]

    asyncio.run(scenario())


def test_timeouts_and_refused_connections_are_outcomes_not_exceptions() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(10)

        server, port = await _serve(silent)
        done, on_done = _collect()
        pool = ConnectionPool(Origin("127.0.0.1", port), 2, on_done)
        request = encode_request("GET", "h", "/", {}, None)
        started = time.monotonic()
        for token in range(3):  # two on the wire, one queued; all time out
            pool.submit(request, token, started + 0.2)
        await _wait_for(done, 3)
        assert sorted((t, s) for t, _, _, s in done) == [(0, TIMEOUT), (1, TIMEOUT), (2, TIMEOUT)]
        assert all(0.19 <= finished - started < 1.0 for _, _, finished, _ in done)
        await pool.close()
        server.close()

        refused_done, refused_on_done = _collect()
        with refused_port() as closed:
            refused = ConnectionPool(Origin("127.0.0.1", closed), 2, refused_on_done)
            refused.submit(request, "r", time.monotonic() + 5)
            await _wait_for(refused_done, 1)
        assert (
            refused_done[0][0] == "r" and refused_done[0][3] == CONNECTION_ERROR and refused_done[0][1] == 0.0
        )
        await refused.close()

    asyncio.run(scenario())


def test_send_now_when_a_connection_is_idle() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await _read_request(reader):
                writer.write(_response())

        server, port = await _serve(handler)
        done, on_done = _collect()
        pool = ConnectionPool(Origin("127.0.0.1", port), 8, on_done)
        request = encode_request("GET", "h", "/", {}, None)
        pool.submit(request, 0, time.monotonic() + 5)
        await _wait_for(done, 1)
        assert pool.submit(request, 1, time.monotonic() + 5) == SENT
        await _wait_for(done, 2)
        await pool.close()
        server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "garbage", [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n"]
)
def test_a_broken_response_is_a_connection_error(garbage: bytes) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(garbage)
            await writer.drain()
            await asyncio.sleep(1)

        server, port = await _serve(handler)
        done, on_done = _collect()
        pool = ConnectionPool(Origin("127.0.0.1", port), 1, on_done)
        pool.submit(encode_request("GET", "h", "/", {}, None), 0, time.monotonic() + 5)
        await _wait_for(done, 1)
        await pool.close()
        server.close()
        assert done[0][3] == CONNECTION_ERROR

    asyncio.run(scenario())


def test_prewarm_opens_connections_up_to_the_cap_before_any_request() -> None:
    async def scenario() -> None:
        accepted = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            while await _read_request(reader):
                writer.write(_response())

        server, port = await _serve(handler)
        done, on_done = _collect()
        pool = ConnectionPool(Origin("127.0.0.1", port), 6, on_done)
        await pool.prewarm(10)  # more than the cap: the cap wins
        assert pool.idle and pool.in_flight == 0
        deadline = time.monotonic() + 2.0
        while accepted < 6 and time.monotonic() < deadline:  # the server's side of each connect
            await asyncio.sleep(0.005)
        assert accepted == 6
        await pool.prewarm(4)  # already warm: opens nothing more
        request = encode_request("GET", "h", "/", {}, None)
        assert [pool.submit(request, token, time.monotonic() + 5) for token in range(6)] == [SENT] * 6
        await _wait_for(done, 6)
        assert accepted == 6 and [s for *_, s in done] == [200] * 6
        await pool.close()
        server.close()

    asyncio.run(scenario())


def test_prewarm_against_a_refused_port_counts_errors_and_returns() -> None:
    async def scenario() -> None:
        done, on_done = _collect()
        with refused_port() as closed:
            pool = ConnectionPool(Origin("127.0.0.1", closed), 4, on_done)
            await pool.prewarm(3)
            assert pool.connect_errors == 3 and not done and pool.idle
            pool.submit(encode_request("GET", "h", "/", {}, None), "r", time.monotonic() + 5)
            await _wait_for(done, 1)
        assert done[0][0] == "r" and done[0][3] == CONNECTION_ERROR
        await pool.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("answer", "limits"),
    [
        (_response(body=b"x" * 20_000), ClientLimits(max_response_bytes=10_000)),
        (
            b"HTTP/1.1 200 OK\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(50))
            + b"Content-Length: 0\r\n\r\n",
            ClientLimits(max_header_count=20),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 5000 + b"\r\nContent-Length: 0\r\n\r\n",
            ClientLimits(max_header_bytes=4096),
        ),
    ],
    ids=["body", "header-count", "header-bytes"],
)
def test_a_response_past_the_limits_ends_its_exchange(answer: bytes, limits: ClientLimits) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await _read_request(reader):
                writer.write(answer)
                await writer.drain()

        server, port = await _serve(handler)
        done: list[tuple[Any, int, Any]] = []
        pool = ConnectionPool(
            Origin("127.0.0.1", port),
            2,
            lambda token, written, finished, status, response: done.append((token, status, response)),
            limits=limits,
            keep_responses=True,
        )
        pool.submit(encode_request("GET", "h", "/", {}, None), "big", time.monotonic() + 5)
        await _wait_for(done, 1)
        await pool.close()
        server.close()
        assert done == [("big", RESPONSE_TOO_LARGE, None)]

    asyncio.run(scenario())


def test_kept_responses_carry_headers_and_body_and_a_stale_keep_alive_is_retried_once() -> None:
    async def scenario() -> None:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await _read_request(reader)
            writer.write(_response(body=b'{"n":%d}' % connections))
            await writer.drain()
            if connections == 1:  # the first connection reads the next request and closes unanswered
                await _read_request(reader)
            writer.close()

        server, port = await _serve(handler)
        done: list[tuple[Any, int, Any]] = []
        pool = ConnectionPool(
            Origin("127.0.0.1", port),
            1,
            lambda token, written, finished, status, response: done.append((token, status, response)),
            keep_responses=True,
        )
        request = encode_request("POST", "h", "/x", {}, b"{}")
        pool.submit(request, 0, time.monotonic() + 5)
        await _wait_for(done, 1)
        pool.submit(request, 1, time.monotonic() + 5)
        await _wait_for(done, 2)
        await pool.close()
        server.close()
        assert [(token, status) for token, status, _ in done] == [(0, 200), (1, 200)]
        assert [response.body for _, _, response in done] == [b'{"n":1}', b'{"n":2}']
        assert done[0][2].header(b"content-length") == b"7"
        assert connections == 2

    asyncio.run(scenario())


def test_fetch_returns_outcomes_instead_of_raising() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await _read_request(reader):
                writer.write(_response(body=b"ok", status=503))

        server, port = await _serve(handler)
        pool = FetchPool(Origin("127.0.0.1", port))
        status, response = await pool.fetch(encode_request("GET", "h", "/", {}, None), 2.0)
        assert status == 503 and response is not None and response.body == b"ok"
        await pool.close()
        server.close()
        with refused_port() as closed:
            refused = FetchPool(Origin("127.0.0.1", closed))
            assert await refused.fetch(encode_request("GET", "h", "/", {}, None), 2.0) == (
                CONNECTION_ERROR,
                None,
            )
        await refused.close()

    asyncio.run(scenario())
