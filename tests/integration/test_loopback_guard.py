"""The loopback guard in conftest.py: a connect off loopback is refused at once, and fails the test that
made it even when the code under test swallows the error."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path

import httpx
import pytest
from tests.support import loopback_guard
from tests.support.ports import refused_port

pytest_plugins = ["pytester"]

# TEST-NET-1 and -3 (RFC 5737): never routed, so even an unguarded connect would reach nothing.
OFF_MACHINE = [("192.0.2.1", 80), ("203.0.113.7", 443)]


@pytest.mark.parametrize("address", OFF_MACHINE)
def test_a_connect_off_loopback_is_refused_and_recorded(address: tuple[str, int]) -> None:
    with socket.socket() as sock, pytest.raises(loopback_guard.NonLoopbackConnection, match="not loopback"):
        sock.connect(address)
    with socket.socket() as sock, pytest.raises(loopback_guard.NonLoopbackConnection):
        sock.connect_ex(address)
    assert len(loopback_guard.take_violations()) == 2  # taken here, so this test itself passes


def _swallowed_connect() -> None:
    with contextlib.suppress(loopback_guard.NonLoopbackConnection), socket.socket() as sock:
        sock.connect(("203.0.113.7", 80))


def test_clients_event_loops_and_threads_go_through_the_guard() -> None:
    with contextlib.suppress(Exception):
        httpx.get("http://192.0.2.1/", timeout=1)

    async def open_connection() -> None:
        with contextlib.suppress(Exception):
            await asyncio.open_connection("192.0.2.1", 80)

    asyncio.run(open_connection())
    thread = threading.Thread(target=_swallowed_connect)
    thread.start()
    thread.join(5)
    violations = loopback_guard.take_violations()
    assert len(violations) == 3 and all("192.0.2.1" in v or "203.0.113.7" in v for v in violations)


def test_loopback_and_unix_sockets_connect_as_usual(tmp_path: Path) -> None:
    with refused_port() as port:
        for host in ("127.0.0.1", "localhost"):
            with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
                sock.connect((host, port))  # reached the kernel: refused by it, not by the guard
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen()
        client.connect(path)
    assert loopback_guard.is_loopback(socket.AF_INET, ("127.8.9.10", 1))
    assert loopback_guard.is_loopback(socket.AF_INET6, ("::1", 1, 0, 0))
    assert loopback_guard.is_loopback(socket.AF_INET6, ("::ffff:127.0.0.1", 1, 0, 0))
    assert not loopback_guard.is_loopback(socket.AF_INET, ("10.0.0.1", 1))
    assert not loopback_guard.is_loopback(socket.AF_INET, ("0.0.0.0", 1))
    assert not loopback_guard.is_loopback(socket.AF_INET6, ("2001:db8::1", 1, 0, 0))
    assert not loopback_guard.is_loopback(socket.AF_INET6, ("::ffff:10.0.0.1", 1, 0, 0))
    assert not loopback_guard.is_loopback(socket.AF_INET, ("example.com", 80))
    assert loopback_guard.take_violations() == []


def test_a_test_that_swallows_the_error_still_fails_with_the_address(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest("from tests.conftest import _loopback_only  # noqa: F401\n")
    pytester.makepyfile(
        """
        import contextlib, socket

        def test_quietly_online():
            with contextlib.suppress(Exception), socket.socket() as sock:
                sock.connect(("192.0.2.1", 80))
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # the test body passed; its teardown failed it
    result.stdout.fnmatch_lines(["*192.0.2.1*not loopback*"])
