"""Loopback ports for tests, with no window in which another process can take them.

A server under test binds port 0 and reports the port it got (`serve --port-file`, `fleet router
--port-file`, or the bound socket's getsockname() in process): nothing is picked before it binds. A
port that must refuse connections is held bound, not listening, for as long as the test needs it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses every connection: bound by this process (so no one else can listen
    on it) but not listening, so the kernel answers a connect with a reset."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def port_from_file(
    path: Path, process: subprocess.Popen[bytes], timeout_s: float = 60.0, what: str = "server"
) -> int:
    """The port a process wrote to ``path`` once listening; raises if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text())
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it listened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen within {timeout_s} s")
        time.sleep(0.02)
