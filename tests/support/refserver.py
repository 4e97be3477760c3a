"""Reference servers for the bench tests, on loopback.

The reference servers are `benchmarks/bench_refserver.py` run as separate processes (a V2 server with
a known service time, or a no-op server), so the generator under test shares nothing with them.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
REFSERVER = REPO / "benchmarks" / "bench_refserver.py"


@dataclass
class RefServer:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, float]:
        return dict(httpx.get(f"{self.url}/stats", timeout=5).json())


@contextlib.contextmanager
def refserver(kind: str = "v2", service_ms: float = 20.0, fail_every: int = 0) -> Iterator[RefServer]:
    args = [sys.executable, str(REFSERVER), "--kind", kind, "--port", "0", "--service-ms", str(service_ms)]
    if fail_every:
        args += ["--fail-every", str(fail_every)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError(f"reference server did not start: {line}{process.stdout.read()}")
        yield RefServer(process, int(line.split()[1]))
    finally:
        process.terminate()
        process.wait(timeout=10)
