"""Shared pieces of the benchmarks: machine description, wrk runs, server processes, result files."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def machine_description() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import onnxruntime

    return (
        f"{cpu}, {cores} cores, {memory_gib:.0f} GiB RAM; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; onnxruntime {onnxruntime.__version__}"
    )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), then run this again")
    return path


@dataclass
class WrkResult:
    connections: int
    requests_per_s: float
    p50_s: float
    p99_s: float
    errors: int
    requests: int = 0  # answered in all, errors included

    @property
    def ok_per_s(self) -> float:
        """Successful answers per second: wrk's rate counts refusals (503s) as requests too."""
        return (
            self.requests_per_s * (1 - self.errors / self.requests) if self.requests else self.requests_per_s
        )


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match[1]) * _UNITS_S[match[2]]


def run_wrk(url: str, body: str, connections: int, duration_s: float, threads: int = 1) -> WrkResult:
    """POST `body` at `url` from `connections` keep-alive connections for `duration_s` (closed loop)."""
    script = (
        "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\nwrk.body = [==["
        + body
        + "]==]\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        output = subprocess.run(
            [
                require_wrk(),
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{duration_s:.0f}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", output)[1])  # type: ignore[index]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", output)[1])  # type: ignore[index]
    errors = 0
    if (match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)) is not None:
        errors += int(match[1])
    if (
        match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    ) is not None:
        errors += sum(int(g) for g in match.groups())
    total = int(match[1]) if (match := re.search(r"(\d+) requests in", output)) is not None else 0
    return WrkResult(connections, rate, p50, p99, errors, total)


def wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0, path: str = "/v2/health/ready"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


@contextlib.contextmanager
def server_process(
    command: list[str], url: str, ready_path: str = "/v2/health/ready", env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`env`: the server's whole environment (default: this process's)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(url, process, path=ready_path)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def write_result(name: str, command: str, body_markdown: str, path: Path | None = None) -> Path:
    """Write ``body_markdown`` under a header naming the command, the machine and the date.

    The file goes to ``path``, or to ``benchmarks/results/NAME.md`` when none is given.
    """
    path = path or RESULTS_DIR / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# {name}\n\n"
        f"- command: `{command}`\n- machine: {machine_description()}\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n{body_markdown}\n"
    )
    return path


def raise_open_files_limit(wanted: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted``, within the hard limit (children
    started afterwards inherit it). Returns the (soft, hard) limits now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
