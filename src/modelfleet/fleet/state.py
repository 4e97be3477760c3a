"""A local fleet's state folder, shared by the supervisor and every later CLI call.

``.modelfleet/fleets/NAME/`` holds::

    state.json        processes (id, pid, port, state, restarts), router URL, supervisor pid, status
    restarts.jsonl    one line per restart: time, process, exit code or signal, uptime, reason, back-off
    events.jsonl      availability events (modelfleet.operate.events); notify.offset: how far they are notified
    operate.json      notifications and alert settings; notifications-dead.jsonl: undeliverable notifications
    dashboard.json    the fleet's Grafana dashboard
                      (a new `fleet up` moves the previous run's log aside as restarts-NS.jsonl)
    plan.json         server groups and their models
    router.json       the router's configuration
    traffic.json      the router's traffic split while a rollout runs (canary upstreams, weights)
    rollout.json      the rollout in progress or last finished (steps, windows, outcome)
    specs/ID.yaml     the serve spec of each server replica
    logs/ID.log       output of each process; logs/supervisor.log for the supervisor itself

Writes are atomic (temporary file, then rename), so a reader never sees half a state file.
"""

from __future__ import annotations

import json
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, Field

from modelfleet import fileio
from modelfleet.config.fleet import LocalConfig
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.fleet.router_config import read_router_settings
from modelfleet.security.tls import client_ssl_context

DEFAULT_STATE_ROOT = Path(".modelfleet") / "fleets"

ProcessState = Literal["pending", "starting", "ready", "unready", "backoff", "stopping", "stopped"]
FleetStatus = Literal["starting", "running", "stopping", "stopped"]


class ProcessRecord(BaseModel):
    """One supervised process: a server replica or the router."""

    id: str = Field(description="Replica id GROUP-N (e.g. cpu-0-1), or 'router'.")
    kind: Literal["server", "router"]
    group: str | None = None
    models: list[str] = Field(default_factory=list)
    port: int
    url: str
    pid: int | None = None
    state: ProcessState = "pending"
    restarts: int = 0
    started_at: float | None = None
    ready_since: float | None = None
    last_exit: str | None = None
    command: list[str] = Field(default_factory=list)
    log_file: str


class FleetState(BaseModel):
    fleet: str
    spec_path: str
    state_dir: str
    status: FleetStatus = "starting"
    supervisor_pid: int | None = None
    router_url: str
    models: list[str]
    created_at: float
    updated_at: float
    processes: list[ProcessRecord]
    local: LocalConfig = Field(default_factory=LocalConfig)

    def process(self, process_id: str) -> ProcessRecord:
        for record in self.processes:
            if record.id == process_id:
                return record
        known = ", ".join(r.id for r in self.processes)
        raise NotFound(f"fleet {self.fleet} has no process {process_id!r} (processes: {known})")


@dataclass(frozen=True, slots=True)
class FleetPaths:
    root: Path

    @classmethod
    def for_fleet(cls, name: str, state_root: Path | None = None) -> FleetPaths:
        return cls((state_root or DEFAULT_STATE_ROOT).resolve() / name)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def restarts_file(self) -> Path:
        return self.root / "restarts.jsonl"

    @property
    def events_file(self) -> Path:
        """Availability events (see modelfleet.operate.events), one JSON line each."""
        return self.root / "events.jsonl"

    @property
    def operate_file(self) -> Path:
        """What the supervisor's notifier and alert evaluator run from (modelfleet.config.operate.OperateSettings)."""
        return self.root / "operate.json"

    @property
    def notify_offset_file(self) -> Path:
        """The event-log offset up to which every notification is delivered or dead-lettered."""
        return self.root / "notify.offset"

    @property
    def dead_letter_file(self) -> Path:
        """Notifications a sink never took (past its retries, or its queue full), one JSON line each."""
        return self.root / "notifications-dead.jsonl"

    @property
    def dashboard_file(self) -> Path:
        """The fleet's Grafana dashboard (JSON), for importing into a Grafana."""
        return self.root / "dashboard.json"

    @property
    def split_file(self) -> Path:
        """The router's traffic split (canary routes and weights), written by a rollout; see fleet/split.py."""
        return self.root / "traffic.json"

    @property
    def drift_dir(self) -> Path:
        """Drift assessments per model (`<model>.jsonl`, one DriftAssessment a line) and their HTML reports."""
        return self.root / "drift"

    @property
    def capture_dir(self) -> Path:
        """Sampled requests and responses per model (`<model>/capture-NNNNNN.jsonl`), rotated and size-capped."""
        return self.root / "capture"

    @property
    def retrain_dir(self) -> Path:
        """One folder per retraining run (hook input, hook output, build, gate results, log)."""
        return self.root / "retrain"

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

    @property
    def router_file(self) -> Path:
        return self.root / "router.json"

    @property
    def specs_dir(self) -> Path:
        return self.root / "specs"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.logs_dir / "supervisor.log"

    def log_file(self, process_id: str) -> Path:
        return self.logs_dir / f"{process_id}.log"


def write_atomic(path: Path, text: str) -> None:
    fileio.write_atomic(path, text.encode("utf-8"))


def write_state(paths: FleetPaths, state: FleetState) -> None:
    state.updated_at = time.time()
    write_atomic(paths.state_file, state.model_dump_json(indent=2) + "\n")


def read_state(paths: FleetPaths) -> FleetState:
    if not paths.state_file.is_file():
        raise NotFound(f"no local fleet state in {paths.root} (start it with `modelfleet fleet up SPEC`)")
    try:
        return FleetState.model_validate_json(paths.state_file.read_bytes())
    except ValueError as exc:
        raise InvalidInput(
            f"{paths.state_file} is not a valid fleet state file: {str(exc).splitlines()[0]}"
        ) from None


def router_trust(paths: FleetPaths, ca_file: Path | None = None) -> ssl.SSLContext | bool:
    """What a client of the fleet's router trusts (the supervisor's checks, `fleet status`): the system's
    CAs, plus the router's own certificate as the fleet spec names it, so a self-signed one (the usual
    local case) is verified rather than left unchecked, plus ``ca_file`` (a CA bundle that issued it)."""
    cert = read_router_settings(paths.router_file).tls_cert_file
    if cert is None and ca_file is None:
        return True  # httpx's default: the system's CAs
    if cert is not None and not cert.is_file():
        raise NotFound(f"the router's certificate {cert} (router.tls_cert_file) does not exist")
    try:
        # client_ssl_context(ca_file) checks the file exists and trusts only it; the system's CAs join it.
        context = client_ssl_context(ca_file)
        if ca_file is not None:
            context.load_default_certs()
        if cert is not None:
            context.load_verify_locations(cert)
    except ssl.SSLError as exc:
        files = " or ".join(str(path) for path in (ca_file, cert) if path is not None)
        raise InvalidInput(f"{files} is not a PEM certificate file ({exc.reason or exc})") from None
    return context


def append_restart(paths: FleetPaths, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    # One short line per append: O_APPEND writes of this size land whole even with concurrent readers.
    # A line cut short by an earlier crash gets its own line ended first, so it cannot swallow this one.
    with paths.restarts_file.open("ab") as handle:
        if handle.tell() > 0:
            with paths.restarts_file.open("rb") as reader:
                reader.seek(-1, 2)
                if reader.read(1) != b"\n":
                    line = "\n" + line
        handle.write(line.encode("utf-8"))


def read_restarts(paths: FleetPaths) -> list[dict[str, Any]]:
    if not paths.restarts_file.is_file():
        return []
    records = []
    for line in paths.restarts_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write; the others still count
    return records


def describe_exit(returncode: int | None) -> tuple[int | None, str | None]:
    """(exit code, signal name) from a subprocess return code (negative means killed by a signal)."""
    if returncode is None:
        return None, None
    if returncode < 0:
        try:
            return None, signal.Signals(-returncode).name
        except ValueError:
            return None, f"signal {-returncode}"
    return returncode, None


def owned_process(pid: int | None, marker: str) -> psutil.Process | None:
    """The process ``pid`` if it is alive and its command line mentions ``marker`` (our state folder).

    A recorded pid may have been reused by an unrelated process after a reboot; checking the command
    line keeps `down` from ever signalling a process this fleet did not start.
    """
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if any(marker in part for part in process.cmdline()):
            return process
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return None
