"""Shared plumbing of the chaos benchmark (benchmarks/chaos.py): verdicts, bounded HTTP helpers, load
runs with every request kept, the local fleet and what scenarios share."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import yaml

from modelfleet.bench import run_bench
from modelfleet.bench.requestlog import LatencyFigures, RequestLog, read_request_log
from modelfleet.bench.results import BenchResult
from modelfleet.config.bench import BenchSpec
from modelfleet.config.fleet import RouterConfig

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent

SCENARIOS = ("overload", "kill", "slow_model", "hostile", "slow_headers", "registry")
FLEET_MODEL = "minilm"
PY = sys.executable
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


@dataclass(frozen=True)
class Durations:
    capacity_s: float
    unloaded_s: float
    overload_s: float
    recovery_s: float
    kill_s: float
    slow_s: float
    hostile_s: float
    slow_headers_s: float
    names: int
    generated: int


FULL = Durations(5, 8, 20, 8, 15, 10, 40, 12, 300, 300)
QUICK = Durations(3, 4, 6, 5, 8, 4, 20, 6, 60, 60)


@dataclass
class Verdict:
    target: str
    status: str  # PASS, FAIL, NOT RUN
    figure: str


@dataclass
class Scenario:
    name: str
    title: str
    verdicts: list[Verdict] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def judge(self, target: str, passed: bool | None, figure: str) -> None:
        status = "NOT RUN" if passed is None else ("PASS" if passed else "FAIL")
        self.verdicts.append(Verdict(target, status, figure))
        say(f"  {status}: {target} — {figure}")


def say(text: str) -> None:
    print(text, flush=True)


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


# ----- small HTTP helpers (stdlib, bounded) ---------------------------------------------------------


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return check()


def metric_values(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Samples of one Prometheus metric: (labels, value)."""
    found = []
    for match in re.finditer(rf"^{re.escape(name)}(?:{{(.*?)}})? (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[1] or ""))
        found.append((labels, float(match[2])))
    return found


# ----- load -------------------------------------------------------------------------------------------


def run_load(
    url: str,
    models: list[str],
    points: list[dict[str, Any]],
    csv_path: Path,
    mode: str = "open",
    progress: Callable[[Any], None] | None = None,
) -> tuple[BenchResult, RequestLog]:
    """One run of modelfleet's generator against a V2 target; every request kept in a CSV."""
    spec = BenchSpec.model_validate(
        {
            "target": url,
            "models": [{"name": name} for name in models],
            "mode": mode,
            "points": points,
            "warmup_s": 1.0,
            "requests_csv": str(csv_path),
            "timeout_s": 10.0,
        }
    )
    result = run_bench(spec, progress=progress)
    return result, read_request_log(csv_path)


def latency_text(figures: LatencyFigures) -> str:
    return f"n={figures.count}, p50 {ms(figures.p50_ms)}, p99 {ms(figures.p99_ms)}, max {ms(figures.max_ms)}"


def within(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value <= limit


# ----- the fleet -------------------------------------------------------------------------------------


def router_setting(*words: str) -> str | None:
    """The fleet spec's router field whose name holds every word (e.g. a header-read timeout)."""
    for name in RouterConfig.model_fields:
        if all(word in name for word in words):
            return name
    return None


class Fleet:
    """examples/fleet-local.yaml with this run's artifacts, started with modelfleet.fleet.local."""

    def __init__(
        self, work: Path, artifact: Path, artifact_int8: Path, queue_wait_runs: float | None = None
    ) -> None:
        from modelfleet.fleet.local import start_fleet
        from modelfleet.fleet.state import FleetPaths

        document = yaml.safe_load((ROOT / "examples" / "fleet-local.yaml").read_text(encoding="utf-8"))
        document["name"] = "chaos-fleet"
        paths = {"minilm": artifact, "minilm-int8": artifact_int8}
        for model in document["models"]:
            model["path"] = str(paths[model["name"]])
            if queue_wait_runs is not None:
                model.setdefault("batching", {})["queue_wait_runs"] = queue_wait_runs
        document["router"]["port"] = 0
        self.header_timeout_field = router_setting("header", "timeout")
        if self.header_timeout_field is not None:
            default = RouterConfig.model_fields[self.header_timeout_field].default
            # The benchmark waits for the timeout; a long default is cut to keep the run short.
            document["router"][self.header_timeout_field] = min(float(default), 5.0)
        self.document = document
        self.spec_path = work / "fleet.yaml"
        self.spec_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        self.state_root = work / "state"
        self.paths = FleetPaths.for_fleet("chaos-fleet", self.state_root)
        started = time.monotonic()
        state = start_fleet(self.spec_path, state_root=self.state_root, wait_s=240.0)
        self.start_s = time.monotonic() - started
        self.router_url = state.router_url

    @property
    def header_timeout_s(self) -> float | None:
        if self.header_timeout_field is None:
            return None
        return float(self.document["router"][self.header_timeout_field])

    def state(self) -> Any:
        from modelfleet.fleet.state import read_state

        return read_state(self.paths)

    def replicas(self) -> list[Any]:
        return [p for p in self.state().processes if p.kind == "server"]

    def processes(self) -> dict[str, psutil.Process]:
        found = {}
        for record in self.state().processes:
            if record.pid is not None:
                with contextlib.suppress(psutil.Error):
                    found[record.id] = psutil.Process(record.pid)
        return found

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        def ready() -> bool:
            records = self.state().processes
            return all(r.state == "ready" for r in records) and all(
                http_get(r.url + ("/v2/health/ready" if r.kind == "server" else "/router/ready"))[0] == 200
                for r in records
            )

        return wait_until(ready, timeout_s, 0.25)

    def settle(self, timeout_s: float = 20.0) -> str:
        """Wait until no replica has queued work; kill -9 one that stays busy (the supervisor restarts it)."""

        def idle(record: Any) -> bool:
            status, body = http_get(record.url + "/metrics", timeout_s=2.0)
            if status != 200:
                return False
            return all(v == 0 for _, v in metric_values(body.decode(), "modelfleet_queue_depth"))

        if wait_until(lambda: all(idle(r) for r in self.replicas()), timeout_s, 0.25):
            return "idle"
        restarted = []
        for record in self.replicas():
            if not idle(record) and record.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(record.pid, signal.SIGKILL)
                restarted.append(record.id)
        time.sleep(1.0)
        self.wait_ready(180.0)
        return f"still busy after {timeout_s:g} s: restarted {', '.join(restarted)}"

    def stop(self) -> None:
        from modelfleet.fleet.local import stop_fleet

        with contextlib.suppress(Exception):
            stop_fleet("chaos-fleet", state_root=self.state_root, grace_s=5.0)


class Context:
    """What scenarios share: the work folder, the fleet (started once, on first use) and its capacity."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.d = QUICK if args.quick else FULL
        self._fleet: Fleet | None = None
        self._capacity: float | None = None
        self.capacity_figures: dict[str, Any] = {}
        self._runs = 0

    def csv(self, name: str) -> Path:
        self._runs += 1
        return self.work / f"{self._runs:02d}-{name}.csv"

    def fleet(self) -> Fleet:
        """The fleet, started on first use; later, once every process is ready and no replica has
        work queued from an earlier scenario."""
        if self._fleet is None:
            say("starting the fleet (examples/fleet-local.yaml: 2 replicas × MiniLM fp32 + int8, 1 router)")
            self._fleet = Fleet(
                self.work, self.args.artifact, self.args.artifact_int8, self.args.queue_wait_runs
            )
            say(f"  fleet ready in {self._fleet.start_s:.1f} s at {self._fleet.router_url}")
        else:
            self._fleet.wait_ready(180.0)
            say(f"  fleet: {self._fleet.settle()}")
        return self._fleet

    def capacity(self) -> float:
        """Closed loop, 64 users through the router: the most it answers per second."""
        if self._capacity is None:
            fleet = self.fleet()
            say(f"measuring capacity: closed loop, 64 users, {self.d.capacity_s:g} s")
            result, _ = run_load(
                fleet.router_url,
                [FLEET_MODEL],
                [{"concurrency": 64, "duration_s": self.d.capacity_s}],
                self.csv("capacity"),
                mode="closed",
            )
            summary = result.points[0].summary
            assert summary is not None
            self._capacity = float(summary.throughput_per_s)
            self.capacity_figures = {
                "capacity_rps": round(self._capacity, 1),
                "closed_loop_p99_ms": summary.latency.p99_ms,
                "errors": result.points[0].errors,
            }
            say(f"  capacity {self._capacity:.0f} requests/s")
            fleet.settle()
        return self._capacity

    def low_rate(self) -> float:
        """The 'unloaded' rate: a fifth of capacity (the issue's 150/s was 23 % of 655/s)."""
        return max(10.0, round(self.capacity() * 0.2))

    def close(self) -> None:
        if self._fleet is not None:
            say("stopping the fleet")
            self._fleet.stop()
