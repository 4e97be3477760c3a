"""The canary's servers on a local fleet: `modelfleet serve` processes for the new version, run by the rollout.

Each serves the model under its fleet name (so the router forwards requests unchanged) pinned to the new
version (`NAME:VERSION`), with the settings of the server group that hosts the model, and there are as
many as that group has replicas: at 100 % the canary carries the whole load the baseline carried, so its
latency is judged at the same load per replica. (The price: the model's memory twice over during a rollout,
as in any blue/green switch.) Specs and logs live in the fleet's state folder, and each command line names
that folder, like every fleet process. They are the rollout's own children and live as long as it does
(until promotion moves the fleet's replicas to the new version, or rollback), so the supervisor, which
keeps the fleet's desired state, never restarts them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import yaml

from modelfleet.config.fleet import FleetModelConfig
from modelfleet.errors import Unavailable
from modelfleet.fleet.plan import FleetPlan, ServerGroup
from modelfleet.fleet.router_config import Upstream, replica_in_flight_limit
from modelfleet.fleet.state import FleetPaths, write_atomic

_HOST = "127.0.0.1"
_STOP_GRACE_S = 5.0


@dataclass
class CanaryServer:
    """A running canary process and the upstream the router's split names."""

    process: subprocess.Popen[bytes]
    upstream: Upstream
    log_file: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to its process group after a grace period (its workers go with it)."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(_STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(_STOP_GRACE_S)

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the canary answers ready; Unavailable when it exits or takes longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.upstream.url}/v2/health/ready"
        while True:
            if self.process.poll() is not None:
                raise Unavailable(
                    f"the canary server exited with code {self.process.returncode} before it was ready: "
                    f"{_tail(self.log_file)} (log {self.log_file})"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"the canary server was not ready within {timeout_s:g} s (gates.canary_ready_timeout_s); "
                    f"log {self.log_file}"
                )
            time.sleep(0.1)


def canary_group(
    plan: FleetPlan, model: FleetModelConfig, version_ref: str
) -> tuple[ServerGroup, ServerGroup]:
    """(the group that serves ``model`` now, a group of as many replicas serving it pinned to ``version_ref``)."""
    group = next(group for group in plan.groups if model.name in group.model_names)
    pinned = model.model_copy(update={"ref": version_ref, "path": None})
    index = group.model_names.index(model.name)
    canary = ServerGroup(
        name="canary",
        pool=group.pool,
        models=(pinned,),
        model_memory_mib=(group.model_memory_mib[index],),
        replicas=group.replicas,
    )
    return group, canary


def start_canaries(
    paths: FleetPaths, plan: FleetPlan, model: FleetModelConfig, version_ref: str
) -> list[CanaryServer]:
    """Start one canary per replica of the model's group (not yet ready: see ``CanaryServer.wait_ready``);
    if one cannot start, those already started are stopped."""
    _, group = canary_group(plan, model, version_ref)
    started: list[CanaryServer] = []
    try:
        for replica in range(group.replicas):
            started.append(_start_one(paths, plan, group, model, replica))
    except BaseException:
        for canary in started:
            canary.stop()
        raise
    return started


def _start_one(
    paths: FleetPaths, plan: FleetPlan, group: ServerGroup, model: FleetModelConfig, replica: int
) -> CanaryServer:
    spec = plan.fleet
    process_id = f"canary-{model.name}-{replica}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port = int(sock.getsockname()[1])
    keys_file = spec.auth.keys_file if spec.auth.enabled else None
    serve_spec = group.serve_spec(_HOST, port, keys_file=keys_file, protect_metrics=spec.auth.protect_metrics)
    if spec.audit.enabled:
        serve_spec.auth.audit_log = paths.root / "audit" / f"{process_id}.jsonl"
    spec_file = paths.specs_dir / f"{process_id}.yaml"
    write_atomic(
        spec_file, yaml.safe_dump(serve_spec.model_dump(mode="json", exclude_none=True), sort_keys=False)
    )
    log_file = paths.log_file(process_id)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelfleet.cli.main", "serve", "--spec", str(spec_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() takes its workers too
            env={**os.environ, "PYTHONUNBUFFERED": "1", "MODELFLEET_FLEET": spec.name},
        )
    if spec.local.server_nice > 0:  # like the fleet's own servers: the router keeps priority
        with contextlib.suppress(psutil.Error, OSError):
            proc = psutil.Process(process.pid)
            proc.nice(min(19, proc.nice() + spec.local.server_nice))
    upstream = Upstream(
        name=process_id,
        group="canary",
        url=f"http://{_HOST}:{port}",
        models=[model.name],
        max_in_flight=replica_in_flight_limit(plan, group),
    )
    return CanaryServer(process, upstream, log_file)


def _tail(path: Path, lines: int = 3) -> str:
    if not path.is_file():
        return "no output"
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "no output"
