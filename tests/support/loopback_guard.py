"""Fail any test that opens a connection off this machine.

Tests run against real servers on 127.0.0.1 only; a connection to anywhere else means a test depends on
the network (or leaks data to it). `install()` wraps `socket.socket.connect` and `connect_ex` (which
`socket.create_connection`, asyncio's default loop, httpx, aiohttp and `ssl` all go through): a connect
to an address outside 127.0.0.0/8 and ::1 (a unix socket is fine) raises at once and is recorded, and
conftest.py fails the test that made it, even when the code under test swallows the error.

Not covered: connections made by child processes, and by uvloop's own (libuv) sockets.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

_LOOPBACK_NAMES = ("localhost",)


class NonLoopbackConnection(RuntimeError):
    """A test tried to connect to an address that is not loopback."""


_violations: list[str] = []
_lock = threading.Lock()


def is_loopback(family: int, address: Any) -> bool:
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name other than localhost: resolving it is the network already
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _check(sock: socket.socket, address: Any) -> None:
    if not is_loopback(sock.family, address):
        message = (
            f"a test connected to {address!r}, which is not loopback (127.0.0.0/8, ::1 or a unix socket)"
        )
        with _lock:
            _violations.append(message)
        raise NonLoopbackConnection(message)


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]


def take_violations() -> list[str]:
    """The connections refused since the last call, and forget them."""
    with _lock:
        taken = list(_violations)
        _violations.clear()
    return taken
