"""Real `modelfleet serve` and `modelfleet fleet router` processes on 127.0.0.1, for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.ports import port_from_file

MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main"]


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(
    url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None, verify: bool | str = True
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0, verify=verify).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"server at {url} not ready after {timeout_s}s")


@contextlib.contextmanager
def serve(
    args: list[str], tmp_path: Path, ready_timeout_s: float = 90.0, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *MODELFLEET,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not port_file.exists():
            if process.poll() is not None:
                raise RuntimeError(f"server exited with code {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        server = RunningServer(process, int(port_file.read_text()), log_path)
        scheme_url = server.url.replace("http://", "https://") if "--tls-cert" in args else server.url
        wait_ready(scheme_url, max(1.0, deadline - time.monotonic()), process, verify=False)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(url: str, timeout_s: float = 60.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == status:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s} s (last: {last})")


def start_server(artifacts: list[Path], folder: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """A real `modelfleet serve` process on 127.0.0.1 at a port of its choosing; returns once it listens,
    with the port it reported (not yet ready: wait for /v2/health/ready)."""
    port_file = folder / f"server-port-{time.monotonic_ns()}"
    args = [*MODELFLEET, "serve", "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file), *extra]
    for artifact in artifacts:
        args += ["--model", str(artifact)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, port_from_file(port_file, process)


def start_router(config_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A real `modelfleet fleet router` process; returns once it listens, with the port it reported.
    Its config's `port` is usually 0, so the router picks one."""
    port_file = config_file.with_name(f"{config_file.name}.port")
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [*MODELFLEET, "fleet", "router", str(config_file), "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port_from_file(port_file, process, what="router")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
