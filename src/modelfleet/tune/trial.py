"""One local trial: a real `modelfleet serve` process on a CPU set, probed in an open loop by the bench library.

The server runs with ``os.sched_setaffinity`` set to the hardware's CPUs before it starts (its worker
processes inherit the set). A memory limit is enforced only where a cgroup v2 folder is writable; the
trial says so either way. While a probe runs, this process (the generator) moves to the CPUs the server
does not use, when there are any, so the two do not measure each other.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import yaml

from modelfleet.bench.results import BenchResult, PointResult
from modelfleet.bench.runner import run_bench
from modelfleet.bench.slo import Gate, goodput_limit_ms
from modelfleet.config.bench import BenchSpec, LoadPoint, ModelTargetSpec, StabilitySpec
from modelfleet.config.serve import BatchingConfig, ModelConfig, ServerConfig, ServeSpec
from modelfleet.config.tune import CapacitySpec
from modelfleet.errors import (
    DeadlineExceeded,
    IntegrityError,
    InvalidInput,
    ModelfleetError,
    NotFound,
    Unavailable,
)
from modelfleet.tune.capacity import Probe
from modelfleet.tune.space import Candidate

_CGROUP_ROOT = Path("/sys/fs/cgroup")
STABILITY_MIN_PER_WINDOW = 1000  # responses a window needs before its p99 is worth comparing (as bench warns)
_ERROR_BY_EXIT: dict[int, type[ModelfleetError]] = {
    2: InvalidInput,
    3: NotFound,
    4: IntegrityError,
    5: Unavailable,
}


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def cpu_set(cpus: int, cpu_list: list[int], where: str) -> list[int]:
    """The CPU ids of a hardware: its list, else the first `cpus` this process may use."""
    available = usable_cpus()
    chosen = cpu_list or available[:cpus]
    missing = sorted(set(chosen) - set(available))
    if len(chosen) < cpus or missing:
        raise InvalidInput(
            f"{where}: needs CPUs {missing or cpus} but this process may use only {len(available)} "
            f"({','.join(map(str, available))})"
        )
    return chosen


def memory_limit_support() -> str | None:
    """None when a cgroup v2 memory limit can be set here, else why not."""
    if not (_CGROUP_ROOT / "cgroup.controllers").is_file():
        return "no cgroup v2 hierarchy at /sys/fs/cgroup"
    if not os.access(_CGROUP_ROOT, os.W_OK):
        return "/sys/fs/cgroup is not writable by this user"
    return None


def _limit_memory(pid: int, memory_mib: int) -> Path:
    group = _CGROUP_ROOT / f"modelfleet-tune-{pid}"
    group.mkdir(exist_ok=True)
    (group / "memory.max").write_text(f"{memory_mib * 1024 * 1024}\n")
    (group / "cgroup.procs").write_text(f"{pid}\n")
    return group


@dataclass
class TrialServer:
    process: subprocess.Popen[bytes]
    url: str
    model_name: str
    log_path: Path
    memory_enforced: bool

    def _family(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._family():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_mib(self) -> float:
        total = 0
        for proc in self._family():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total / (1024 * 1024)


def _serve_spec(candidate: Candidate, port_host: str = "127.0.0.1") -> ServeSpec:
    settings = candidate.settings
    model = ModelConfig(
        path=candidate.variant.path,
        batching=BatchingConfig(max_batch_size=settings.max_batch_size, max_delay_s=settings.max_delay_s),
        instances=settings.instances,
        intra_op_threads=settings.intra_op_threads,
        length_grouping=settings.length_grouping,
    )
    return ServeSpec(server=ServerConfig(host=port_host, port=0, workers=settings.workers), models=[model])


def _log_tail(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    meaningful = [line for line in lines if "error" in line.lower()] or lines
    return meaningful[-1].strip() if meaningful else "no output"


@contextlib.contextmanager
def run_server(
    candidate: Candidate, cpus: list[int], memory_mib: int | None, timeout_s: float
) -> Iterator[TrialServer]:
    """A ready server for ``candidate`` on ``cpus``; a server that exits first raises the error class its
    exit code stands for, with the last line it printed."""
    with tempfile.TemporaryDirectory(prefix="modelfleet-tune-") as folder:
        spec_path = Path(folder) / "serve.yaml"
        spec_path.write_text(yaml.safe_dump(_serve_spec(candidate).model_dump(mode="json")))
        port_file = Path(folder) / "port"
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelfleet.cli.main",
                    "serve",
                    "--spec",
                    str(spec_path),
                    "--port-file",
                    str(port_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.sched_setaffinity(0, cpus),  # the set is inherited by its workers
            )
        group: Path | None = None
        try:
            if memory_mib is not None and memory_limit_support() is None:
                group = _limit_memory(process.pid, memory_mib)
            url = _wait_ready(process, port_file, log_path, timeout_s, candidate)
            yield TrialServer(process, url, candidate.variant.name, log_path, group is not None)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if group is not None:
                with contextlib.suppress(OSError):
                    group.rmdir()


def _wait_ready(
    process: subprocess.Popen[bytes], port_file: Path, log_path: Path, timeout_s: float, candidate: Candidate
) -> str:
    deadline = time.monotonic() + timeout_s
    url: str | None = None
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            error = _ERROR_BY_EXIT.get(code, ModelfleetError)
            raise error(
                f"model {candidate.variant.path} failed to load (server exited with code {code}): "
                f"{_log_tail(log_path)}"
            )
        if url is None and port_file.is_file():
            with contextlib.suppress(ValueError):
                url = f"http://127.0.0.1:{int(port_file.read_text())}"
        if url is not None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return url
        time.sleep(0.05)
    raise DeadlineExceeded(
        f"the server for {candidate.variant.path} was not ready within {timeout_s:g} s "
        "(tune server_start_timeout_s)"
    )


@contextlib.contextmanager
def generator_beside(cpus: list[int]) -> Iterator[None]:
    """Run the load generator (this process) on CPUs the server does not use, when there are any."""
    before = os.sched_getaffinity(0)
    others = before - set(cpus)
    if others:
        os.sched_setaffinity(0, others)
    try:
        yield
    finally:
        if others:
            os.sched_setaffinity(0, before)


def probe_spec(
    server: TrialServer, rate_per_s: float, capacity: CapacitySpec, slo: str, seed: int
) -> BenchSpec:
    return BenchSpec(
        target=server.url,
        models=[ModelTargetSpec(name=server.model_name)],
        mode="open",
        arrival=capacity.arrival,
        points=[LoadPoint(rate_per_s=rate_per_s, duration_s=capacity.probe_duration_s)],
        warmup_s=capacity.warmup_s,
        window_s=capacity.window_s,
        stability=StabilitySpec(windows=2)
        if capacity.probe_duration_s < 3 * capacity.window_s
        else StabilitySpec(),
        late_send_threshold_s=capacity.late_send_threshold_s,
        max_late_fraction=capacity.max_late_fraction,
        slo=slo,
        seed=seed,
        timeout_s=max(1.0, 4 * capacity.probe_duration_s),
    )


def judge(result: BenchResult, gates: list[Gate], require_stable: bool, cpu_percent: float | None) -> Probe:
    """A bench result of one point as a passing or failing probe, with the first reason it failed."""
    point: PointResult = result.points[0]
    summary = point.summary
    if summary is None:
        raise ModelfleetError("a bench point came back without its summary")
    reasons = []
    if not summary.valid:
        reasons.append(f"invalid: {summary.late_fraction:.1%} late sends (the generator fell behind)")
    if result.slo is not None and summary.valid:  # an invalid point fails every gate: say why once
        reasons += [
            f"{v.gate} (measured {v.value:.4g})"
            for v in result.slo.verdicts
            if not v.passed and v.value is not None
        ]
        reasons += [
            f"{v.gate}: no successful responses"
            for v in result.slo.verdicts
            if not v.passed and v.value is None
        ]
    # A window's p99 from a few dozen responses is noise: stability is judged only on windows that hold
    # enough of them, and a shorter probe says it could not judge.
    per_window = (point.target_rate_per_s or 0.0) * point.window_s
    if require_stable and summary.stable is False and per_window >= STABILITY_MIN_PER_WINDOW:
        reasons.append(summary.stability_note)
    limit = goodput_limit_ms(gates)
    latency_metric = next((g.metric for g in gates if g.threshold == limit and g.op in ("<", "<=")), "p99")
    return Probe(
        rate_per_s=point.target_rate_per_s or 0.0,
        passed=not reasons,
        valid=summary.valid,
        goodput_per_s=summary.goodput_per_s,
        throughput_per_s=summary.throughput_per_s,
        p50_ms=summary.latency.p50_ms,
        p99_ms=summary.latency.p99_ms,
        error_rate=summary.error_rate,
        late_fraction=summary.late_fraction,
        reason="; ".join(reasons),
        latency_ms=summary.latency.get(latency_metric),
        cpu_percent=cpu_percent,
    )


def measure(
    server: TrialServer, rate_per_s: float, capacity: CapacitySpec, slo: str, gates: list[Gate], seed: int
) -> Probe:
    """One open-loop probe of ``server`` at ``rate_per_s``, with the server's CPU use over it."""
    spec = probe_spec(server, rate_per_s, capacity, slo, seed)
    cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
    result = run_bench(spec)
    wall = time.monotonic() - wall_before
    cpu_percent = 100.0 * (server.cpu_seconds() - cpu_before) / wall if wall > 0 else None
    return judge(result, gates, capacity.require_stable, cpu_percent)
