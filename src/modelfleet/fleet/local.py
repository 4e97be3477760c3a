"""Run a fleet on this machine: server processes on free ports and one router, kept alive by a supervisor.

The library calls behind `modelfleet fleet up/down`. `start_fleet` plans the fleet, writes every serve
spec and the router's table into the state folder (``modelfleet.fleet.state``), and starts the
supervisor (``modelfleet.fleet.supervisor``), detached by default. `stop_fleet` sends SIGTERM to the
supervisor, which stops the router and the servers in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from modelfleet.config.fleet import FleetSpec
from modelfleet.config.operate import OperateSettings
from modelfleet.errors import Conflict, NotFound, SpecError, Unavailable
from modelfleet.fleet.plan import FleetPlan
from modelfleet.fleet.router_config import (
    Upstream,
    replica_in_flight_limit,
    router_settings,
    write_router_settings,
)
from modelfleet.fleet.sizing import load_fleet_spec, plan_from_spec
from modelfleet.fleet.state import (
    FleetPaths,
    FleetState,
    ProcessRecord,
    owned_process,
    read_state,
    write_atomic,
    write_state,
)
from modelfleet.fleet.supervisor import Supervisor, kill_group
from modelfleet.operate.dashboard import grafana_dashboard
from modelfleet.operate.rules import objectives
from modelfleet.types import Progress

_CLI = [sys.executable, "-m", "modelfleet.cli.main"]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port_free(host: str, port: int, field: str = "router.port") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise Conflict(
                f"router port {host}:{port} is already in use; set {field} to another port, or 0 for a free one"
            ) from None


def resolve_fleet(fleet: str | Path, state_root: Path | None = None) -> FleetPaths:
    """A fleet named directly, or by its spec file."""
    candidate = Path(fleet)
    name = load_fleet_spec(candidate).name if candidate.is_file() else str(fleet)
    paths = FleetPaths.for_fleet(name, state_root)
    if not paths.state_file.is_file():
        raise NotFound(
            f"fleet {name!r} has no local state in {paths.root} (start it with `modelfleet fleet up SPEC`)"
        )
    return paths


def supervisor_alive(state: FleetState, paths: FleetPaths) -> bool:
    return owned_process(state.supervisor_pid, str(paths.root)) is not None


def prepare_fleet(plan: FleetPlan, spec_path: Path, paths: FleetPaths) -> FleetState:
    """Allocate ports and write serve specs, the router table, the plan and a fresh state file."""
    spec = plan.fleet
    if spec.auth.enabled and spec.auth.keys_file is None:
        raise SpecError(
            f"fleet {spec.name}: auth is on but auth.keys_file is not set; create keys with "
            "`modelfleet keys create` and point auth.keys_file at the store, or set auth.enabled: false"
        )
    if paths.state_file.is_file():
        previous = read_state(paths)
        if supervisor_alive(previous, paths):
            raise Conflict(
                f"fleet {spec.name!r} is already running (supervisor pid {previous.supervisor_pid}); "
                f"run `modelfleet fleet down {spec.name}` first"
            )
    for folder in (paths.specs_dir, paths.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    keys_file = spec.auth.keys_file if spec.auth.enabled else None
    host = "127.0.0.1"
    processes: list[ProcessRecord] = []
    upstreams: list[Upstream] = []
    for group in plan.groups:
        for replica in range(group.replicas):
            process_id = f"{group.name}-{replica}"
            port = _free_port(host)
            spec_file = paths.specs_dir / f"{process_id}.yaml"
            serve_spec = group.serve_spec(
                host,
                port,
                keys_file=keys_file,
                protect_metrics=spec.auth.protect_metrics,
                tracing=spec.tracing,
            )
            grpc_address = None
            if spec.router.grpc_port is not None:  # every replica serves gRPC for the router's front
                serve_spec.server.grpc_port = _free_port(host)
                grpc_address = f"{host}:{serve_spec.server.grpc_port}"
            if spec.audit.enabled:  # one file per process: no two writers share a log
                serve_spec.auth.audit_log = paths.root / "audit" / f"{process_id}.jsonl"
            write_atomic(
                spec_file,
                yaml.safe_dump(serve_spec.model_dump(mode="json", exclude_none=True), sort_keys=False),
            )
            url = f"http://{host}:{port}"
            processes.append(
                ProcessRecord(
                    id=process_id,
                    kind="server",
                    group=group.name,
                    models=list(group.model_names),
                    port=port,
                    url=url,
                    command=[*_CLI, "serve", "--spec", str(spec_file)],
                    log_file=str(paths.log_file(process_id)),
                )
            )
            upstreams.append(
                Upstream(
                    name=process_id,
                    group=group.name,
                    url=url,
                    models=list(group.model_names),
                    max_in_flight=replica_in_flight_limit(plan, group),
                    grpc_address=grpc_address,
                )
            )
    router_host = spec.router.host
    if spec.router.port == 0:
        router_port = _free_port(router_host)
    else:
        _check_port_free(router_host, spec.router.port)
        router_port = spec.router.port
    router_grpc_port = spec.router.grpc_port
    if router_grpc_port is not None:
        if router_grpc_port == 0:
            router_grpc_port = _free_port(router_host)
        else:
            _check_port_free(router_host, router_grpc_port, "router.grpc_port")
    cert, key = spec.router.tls_cert_file, spec.router.tls_key_file
    tls_files = None if cert is None or key is None else (cert, key)
    # A split left by an interrupted rollout names a canary that is no longer running.
    paths.split_file.unlink(missing_ok=True)
    write_router_settings(
        router_settings(
            plan,
            router_host,
            router_port,
            upstreams,
            keys_file,
            tls_files,
            paths.split_file,
            grpc_port=router_grpc_port,
            state_dir=paths.root,
        ),
        paths.router_file,
    )
    scheme = "http" if tls_files is None else "https"
    router_url = f"{scheme}://{'127.0.0.1' if router_host in ('0.0.0.0', '') else router_host}:{router_port}"
    processes.append(
        ProcessRecord(
            id="router",
            kind="router",
            models=list(plan.model_names),
            port=router_port,
            url=router_url,
            command=[*_CLI, "fleet", "router", str(paths.router_file)],
            log_file=str(paths.log_file("router")),
        )
    )
    write_atomic(paths.plan_file, _plan_json(plan))
    write_atomic(paths.operate_file, operate_settings(spec).model_dump_json(indent=2) + "\n")
    write_atomic(paths.dashboard_file, json.dumps(grafana_dashboard(spec), indent=1, sort_keys=True) + "\n")
    now = time.time()
    state = FleetState(
        fleet=spec.name,
        spec_path=str(spec_path.resolve()),
        state_dir=str(paths.root),
        router_url=router_url,
        models=list(plan.model_names),
        created_at=now,
        updated_at=now,
        processes=processes,
        local=spec.local,
    )
    if paths.restarts_file.is_file():
        # A new run starts a new restart log; the previous run's stays beside it for the record.
        paths.restarts_file.rename(paths.root / f"restarts-{time.time_ns()}.jsonl")
    write_state(paths, state)
    return state


def operate_settings(spec: FleetSpec) -> OperateSettings:
    """What the supervisor's notifier and alert evaluator need of the spec (saved as operate.json)."""
    return OperateSettings(
        fleet=spec.name, notifications=spec.notifications, alerts=spec.alerts, models=objectives(spec)
    )


def _plan_json(plan: FleetPlan) -> str:
    return json.dumps({"fleet": plan.fleet.name, "groups": plan.summary()}, indent=2) + "\n"


def run_supervisor(state_dir: Path) -> None:
    """Blocking entry point of the hidden `modelfleet fleet supervise` command."""
    paths = FleetPaths(state_dir.resolve())
    asyncio.run(Supervisor(paths).run())


def start_fleet(
    spec_path: Path,
    state_root: Path | None = None,
    foreground: bool = False,
    wait_s: float = 120.0,
    progress: Progress | None = None,
    spec: FleetSpec | None = None,
) -> FleetState:
    """Start a local fleet; returns once it is ready (detached) or after it stops (``foreground``)."""
    report = progress or (lambda _message: None)
    spec = spec if spec is not None else load_fleet_spec(spec_path)
    plan = plan_from_spec(spec)
    paths = FleetPaths.for_fleet(spec.name, state_root)
    state = prepare_fleet(plan, spec_path, paths)
    report(
        f"fleet {spec.name}: {len(plan.groups)} server group(s), {len(state.processes) - 1} server process(es), router on {state.router_url}"
    )
    if foreground:
        supervisor = Supervisor(paths, on_ready=lambda s: report(f"fleet {s.fleet} ready at {s.router_url}"))
        asyncio.run(supervisor.run())
        return read_state(paths)
    with paths.supervisor_log.open("ab") as log:
        supervisor_process = subprocess.Popen(
            [*_CLI, "fleet", "supervise", str(paths.root)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return wait_until_ready(paths, supervisor_process, wait_s, report)


def wait_until_ready(
    paths: FleetPaths, supervisor: subprocess.Popen[bytes], wait_s: float, report: Progress
) -> FleetState:
    deadline = time.monotonic() + wait_s
    last_line = ""
    while True:
        state = read_state(paths)
        if state.status == "running":
            report(f"fleet {state.fleet} ready at {state.router_url}")
            return state
        if supervisor.poll() is not None:
            tail = _tail(paths.supervisor_log, 5)
            raise Unavailable(
                f"the fleet supervisor exited with code {supervisor.returncode}: {tail or 'no output'}"
            )
        line = ", ".join(f"{r.id} {r.state}" for r in state.processes)
        if line != last_line:
            report(line)
            last_line = line
        if time.monotonic() > deadline:
            raise Unavailable(
                f"fleet {state.fleet} is not ready after {wait_s:g} s ({line}); it keeps trying: see "
                f"`modelfleet fleet status {state.fleet}` and `modelfleet fleet logs {state.fleet}`, or stop it with `fleet down`"
            )
        time.sleep(0.2)


def _tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def stop_fleet(fleet: str | Path, state_root: Path | None = None, grace_s: float | None = None) -> FleetState:
    """Stop a local fleet: SIGTERM to the supervisor, SIGKILL to anything of ours still alive after the grace period."""
    paths = resolve_fleet(fleet, state_root)
    state = read_state(paths)
    grace = state.local.stop_grace_s if grace_s is None else grace_s
    marker = str(paths.root)
    supervisor = owned_process(state.supervisor_pid, marker)
    if supervisor is not None:
        supervisor.terminate()
        # The supervisor itself waits `grace` for its children; allow it that plus a margin.
        _, alive = psutil.wait_procs([supervisor], timeout=grace + 5.0)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
    # Anything left (a supervisor killed earlier leaves orphans): terminate, then kill after the grace period.
    strays = [p for p in (owned_process(r.pid, marker) for r in read_state(paths).processes) if p is not None]
    strays += _canaries(paths)  # a rollout's canary servers, if the rollout itself was killed
    for process in strays:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(strays, timeout=grace)
    for process in alive:
        kill_group(process.pid)  # each supervised process leads its own group
    state = read_state(paths)
    if state.status != "stopped" or any(r.pid is not None for r in state.processes):
        for record in state.processes:
            record.state, record.pid = "stopped", None
        state.status = "stopped"
        write_state(paths, state)
    return state


def _canaries(paths: FleetPaths) -> list[psutil.Process]:
    """Canary servers of this fleet (modelfleet.operate.canary_server): their command line names their spec."""
    prefix = str(paths.specs_dir / "canary-")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(part.startswith(prefix) for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def fleet_endpoints(spec_path: Path | str, state_root: Path | None = None) -> tuple[str, list[str]]:
    """(router URL, model names) of a running local fleet: what `modelfleet bench --fleet SPEC` needs."""
    paths = resolve_fleet(Path(spec_path), state_root)
    state = read_state(paths)
    if not supervisor_alive(state, paths):
        raise Unavailable(
            f"fleet {state.fleet} is not running (start it with `modelfleet fleet up {spec_path}`)"
        )
    return state.router_url, list(state.models)
