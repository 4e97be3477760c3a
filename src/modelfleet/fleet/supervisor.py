"""The local fleet's supervisor: keeps every server process and the router running until told to stop.

It starts each process (each leads its own process group), polls its health, and restarts a process
that exits, hangs or never becomes ready. The wait before a restart is the shared
`modelfleet.supervision.RestartPolicy` back-off, from the fleet spec's `local` settings; every restart
is appended to the fleet's restart log. SIGTERM or SIGINT stops the router first, then the servers.

It is also where a local fleet's availability events start: every restart is a `replica_restarted`
event (resolved once the process has stayed ready for `stable_after_s`), a model with no ready replica
is `model_unavailable` (resolved when one is back). Beside its own work it runs the notifier and the
alert evaluator (``modelfleet.operate``) as tasks that never hold it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import httpx

from modelfleet.config.fleet import LocalConfig
from modelfleet.config.operate import OperateSettings
from modelfleet.drift.capture import CAPTURE_DIR_ENV
from modelfleet.drift.monitor import for_fleet
from modelfleet.errors import ModelfleetError
from modelfleet.fleet.buckets import latency_edges_s
from modelfleet.fleet.sizing import load_fleet_spec
from modelfleet.fleet.state import (
    FleetPaths,
    FleetState,
    ProcessRecord,
    append_restart,
    describe_exit,
    read_state,
    router_trust,
    write_state,
)
from modelfleet.fleet.supervisor_key import SupervisorKey, open_supervisor_key
from modelfleet.operate.alerting import AlertLoop, Sample
from modelfleet.operate.events import Event, append_event
from modelfleet.operate.notify import Notifier
from modelfleet.operate.rules import LOCAL_RESTARTS, build_rules
from modelfleet.supervision import RestartPolicy

_HEALTH_TIMEOUT_S = 2.0
log = logging.getLogger("modelfleet.fleet")


def restart_policy(config: LocalConfig) -> RestartPolicy:
    return RestartPolicy(
        initial_s=config.restart_backoff_initial_s,
        max_s=config.restart_backoff_max_s,
        stable_after_s=config.stable_after_s,
    )


class Supervisor:
    """Keeps every process of one local fleet running until told to stop."""

    def __init__(self, paths: FleetPaths, on_ready: Callable[[FleetState], None] | None = None) -> None:
        self.paths = paths
        self.state = read_state(paths)
        self.config = self.state.local
        self.policy = restart_policy(self.config)
        self.on_ready = on_ready
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._kill_reason: dict[str, str] = {}
        self._live_failures: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._dirty = True
        self.operate = read_operate_settings(paths)
        self._unavailable: set[str] = set()  # models with no ready replica, told as model_unavailable
        self._healing: set[str] = set()  # restarted processes not yet stable again
        self._operate: list[asyncio.Task[None]] = []  # the notifier, the alert evaluator, the drift monitor
        # Judges the sampling models' windows once the fleet is up; listeners (retraining) register here.
        self.drift = for_fleet(paths, self.state)
        self.key: SupervisorKey | None = None  # opened by run(), with auth on

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stopping.set)
        self.state.supervisor_pid = os.getpid()
        self.state.status = "starting"
        self._save()
        self.key = self._open_key()
        try:
            await self._supervise()
        finally:
            if self.key is not None:
                with contextlib.suppress(ModelfleetError, OSError):
                    self.key.revoke()

    def _open_key(self) -> SupervisorKey | None:
        """The supervisor's `read` key when the fleet's auth is on (fleet/supervisor_key.py), else None."""
        try:
            auth = load_fleet_spec(self.state.spec_path).auth
            if not auth.enabled or auth.keys_file is None:
                return None
            return open_supervisor_key(auth.keys_file, self.state.fleet)
        except (ModelfleetError, OSError) as exc:  # the fleet still runs; its own reads get 401s, and say so
            log.error("no supervisor key (alerts, drift and retraining cannot read the fleet): %s", exc)
            return None

    async def _supervise(self) -> None:
        headers = {} if self.key is None else self.key.headers
        verify = router_trust(self.paths)
        async with httpx.AsyncClient(timeout=_HEALTH_TIMEOUT_S, verify=verify, headers=headers) as client:
            watchers = [asyncio.create_task(self._keep_running(record)) for record in self.state.processes]
            health = asyncio.create_task(self._health_loop(client))
            self._operate = self._notifier_tasks()
            await self._stopping.wait()
            self.state.status = "stopping"
            self._save()
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
            await self._terminate_all()
            for task in [*watchers, *self._operate]:
                task.cancel()
            await asyncio.gather(*watchers, *self._operate, return_exceptions=True)
        for record in self.state.processes:
            record.state, record.pid = "stopped", None
        self.state.status = "stopped"
        self._save()

    def _notifier_tasks(self) -> list[asyncio.Task[None]]:
        if self.operate is None:  # a state folder prepared before operate.json existed
            return []
        tasks = []
        if self.operate.notifications.enabled and self.operate.notifications.sinks:
            notifier = Notifier(
                self.operate.notifications,
                self.paths.events_file,
                self.paths.notify_offset_file,
                self.paths.dead_letter_file,
                self.paths.supervisor_log,
            )
            tasks.append(asyncio.create_task(notifier.run()))
        return tasks

    def _alert_task(self, client: httpx.AsyncClient) -> list[asyncio.Task[None]]:
        """The evaluator, started once the fleet is first up: a fleet still starting is not an alert."""
        if self.operate is None or not self.operate.alerts.enabled:
            return []
        rules = build_rules(
            self.state.fleet,
            self.operate.models,
            self.operate.alerts,
            "local",
            "",
            latency_edges_s(model.latency_ms / 1000 for model in self.operate.models),
        )
        loop = AlertLoop(
            self.state.fleet,
            rules,
            self.operate.alerts,
            self.paths.events_file,
            self._metrics_urls,
            self._restart_samples,
        )
        return [asyncio.create_task(loop.run(client))]

    def _retrain_task(self, client: httpx.AsyncClient) -> list[asyncio.Task[None]]:
        """Retraining of the models with `retrain:` (modelfleet.drift.triggers): the drift monitor's listener,
        and the loop for scheduled and error-rate triggers."""
        # Imported here, not above: the retraining pipeline imports the local fleet, which imports this module.
        from modelfleet.drift.triggers import drift_listener, retrain_scheduler

        api_key = None if self.key is None else self.key.key
        listener = drift_listener(self.paths, self.state.spec_path, api_key)
        if listener is not None:
            self.drift.add_listener(listener)
        scheduler = retrain_scheduler(
            self.paths, self.state.spec_path, f"{self.state.router_url}/metrics", api_key
        )
        return [] if scheduler is None else [asyncio.create_task(scheduler.run(client, time.time))]

    def _metrics_urls(self) -> list[tuple[str, str]]:
        return [
            (r.id, f"{r.url}/metrics")
            for r in self.state.processes
            if r.pid is not None and r.state in ("ready", "unready")
        ]

    def _restart_samples(self) -> list[Sample]:
        return [
            (LOCAL_RESTARTS, {"fleet": self.state.fleet, "process": r.id}, float(r.restarts))
            for r in self.state.processes
        ]

    def _emit(self, event: Event) -> None:
        with contextlib.suppress(OSError):  # a full disk must not stop the supervisor keeping processes up
            append_event(self.paths.events_file, event)

    def _save(self) -> None:
        write_state(self.paths, self.state)
        self._dirty = False

    def _log(self, record: ProcessRecord, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with open(record.log_file, "a", encoding="utf-8") as handle:
            handle.write(f"--- modelfleet supervisor {stamp}: {message}\n")

    async def _spawn(self, record: ProcessRecord) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MODELFLEET_FLEET": self.state.fleet}
        env[CAPTURE_DIR_ENV] = str(self.paths.capture_dir)  # models with drift.capture on write there
        self._log(record, f"starting {record.id}: {' '.join(record.command)}")
        with open(record.log_file, "ab") as log:
            # Each process leads its own process group, so a crashed server's worker processes can be
            # cleaned up with it, and a Ctrl-C on the terminal reaches only the supervisor, which stops
            # everything in order.
            process = await asyncio.create_subprocess_exec(
                *record.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
            )
        if record.kind == "server" and self.config.server_nice > 0:
            # Before the server forks its workers (it loads models first), so they inherit it. Under 3x
            # overload on 2 cores shared with the servers, the router's 503s at equal priority had p99 29 ms.
            with contextlib.suppress(OSError):  # gone already: the watcher sees it exit
                current = os.getpriority(os.PRIO_PROCESS, process.pid)
                os.setpriority(os.PRIO_PROCESS, process.pid, min(19, current + self.config.server_nice))
        self._procs[record.id] = process
        record.pid, record.state = process.pid, "starting"
        record.started_at, record.ready_since = time.time(), None
        self._live_failures[record.id] = 0
        self._save()
        return process

    async def _keep_running(self, record: ProcessRecord) -> None:
        failures = 0
        restarted: dict[str, object] | None = None  # the last exit, told once the process is back
        while not self._stopping.is_set():
            try:
                process = await self._spawn(record)
                if restarted is not None:
                    self._restarted(record, restarted)
                    restarted = None
            except OSError as exc:  # e.g. out of file descriptors: wait and try again, never give up
                self._log(
                    record,
                    f"could not start {record.id}: {exc}; retrying in {self.policy.max_s:g} s",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.policy.max_s)
                continue
            exited = asyncio.create_task(process.wait())
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if self._stopping.is_set():
                exited.cancel()
                return
            now = time.time()
            # The fleet never gives up on a process (see modelfleet.supervision): back-off alone.
            restart = self.policy.backoff(now - (record.ready_since or now), failures)
            backoff_s, failures = restart.delay_s, restart.failures
            kill_group(process.pid)  # workers orphaned by a killed server must not keep its port
            code, signal_name = describe_exit(process.returncode)
            exit_text = f"killed by {signal_name}" if signal_name else f"exited with code {code}"
            reason = self._kill_reason.pop(record.id, exit_text)
            uptime_s = now - (record.started_at or now)
            append_restart(
                self.paths,
                {
                    "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                    "time_unix": round(now, 3),
                    "process": record.id,
                    "pid": record.pid,
                    "exit_code": code,
                    "signal": signal_name,
                    "reason": reason,
                    "uptime_s": round(uptime_s, 3),
                    "backoff_s": backoff_s,
                },
            )
            self._log(
                record,
                f"{record.id} (pid {record.pid}) {reason} after {uptime_s:.1f} s; restarting in {backoff_s:g} s",
            )
            record.restarts += 1
            restarted = {
                "exit_code": code,
                "signal": signal_name,
                "reason": reason,
                "uptime_s": round(uptime_s, 3),
                "backoff_s": backoff_s,
                "restarts": record.restarts,
                "previous_pid": record.pid,
            }
            record.last_exit = reason
            record.state, record.pid, record.ready_since = "backoff", None, None
            self._save()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff_s)

    def _restarted(self, record: ProcessRecord, exit_details: dict[str, object]) -> None:
        self._healing.add(record.id)
        self._emit(
            Event(
                kind="replica_restarted",
                severity="warning",
                fleet=self.state.fleet,
                summary=f"{record.id} {exit_details['reason']} after {exit_details['uptime_s']} s up; "
                f"restarted (restart {record.restarts}, pid {record.pid})",
                key=f"replica_restarted:{record.id}",
                process=record.id,
                details={**exit_details, "pid": record.pid, "models": list(record.models)},
            )
        )

    def _availability_events(self, now: float) -> None:
        """model_unavailable on the way down and up; replica_restarted resolved once stable again."""
        for record in self.state.processes:
            if (
                record.id in self._healing
                and record.ready_since is not None
                and now - record.ready_since >= self.config.stable_after_s
            ):
                self._healing.discard(record.id)
                self._emit(
                    Event(
                        kind="replica_restarted",
                        severity="warning",
                        fleet=self.state.fleet,
                        summary=f"{record.id} healed: ready for {self.config.stable_after_s:g} s since its restart",
                        key=f"replica_restarted:{record.id}",
                        status="resolved",
                        process=record.id,
                        details={"restarts": record.restarts},
                    )
                )
        if self.state.status != "running":
            return  # before the fleet first came up, a model not ready yet is not an event
        for model in self.state.models:
            ready = [
                r.id
                for r in self.state.processes
                if r.kind == "server" and model in r.models and r.state == "ready"
            ]
            if not ready and model not in self._unavailable:
                self._unavailable.add(model)
                self._emit(self._unavailable_event(model, "firing", f"{model}: no ready replica"))
            elif ready and model in self._unavailable:
                self._unavailable.discard(model)
                text = f"{model}: available again ({len(ready)} ready replica(s))"
                self._emit(self._unavailable_event(model, "resolved", text))

    def _unavailable_event(self, model: str, status: Literal["firing", "resolved"], summary: str) -> Event:
        replicas = [r.id for r in self.state.processes if r.kind == "server" and model in r.models]
        return Event(
            kind="model_unavailable",
            severity="critical",
            fleet=self.state.fleet,
            summary=summary,
            key=f"model_unavailable:{model}",
            status=status,
            model=model,
            details={"replicas": replicas},
        )

    async def _health_loop(self, client: httpx.AsyncClient) -> None:
        last_save = time.monotonic()
        while True:
            records = [
                r
                for r in self.state.processes
                if r.pid is not None and r.state in ("starting", "ready", "unready")
            ]
            await asyncio.gather(*(self._check(client, record) for record in records))
            if (
                self.state.status == "starting"
                and all(r.state == "ready" for r in self.state.processes)
                # The router's own view too: `up` must not return before a request can be routed.
                and await self._get_ok(client, f"{self.state.router_url}/v2/health/ready")
            ):
                self.state.status = "running"
                self._dirty = True
                self._operate.extend(self._alert_task(client))
                self._operate.extend(self._retrain_task(client))
                if self.drift.configs:
                    self._operate.append(asyncio.create_task(self.drift.run(client)))
                if self.on_ready is not None:
                    self.on_ready(self.state)
            self._availability_events(time.time())
            # Save on change, and every few seconds as a heartbeat `status` can read.
            if self._dirty or time.monotonic() - last_save > 5.0:
                self._save()
                last_save = time.monotonic()
            await asyncio.sleep(self.config.health_interval_s)

    async def _get_ok(self, client: httpx.AsyncClient, url: str) -> bool:
        try:
            response = await client.get(url)
        except (httpx.HTTPError, OSError):
            return False
        return response.status_code == 200

    async def _check(self, client: httpx.AsyncClient, record: ProcessRecord) -> None:
        ready_path = "/v2/health/ready" if record.kind == "server" else "/router/ready"
        now = time.time()
        if await self._get_ok(client, record.url + ready_path):
            self._live_failures[record.id] = 0
            if record.state != "ready":
                record.state, record.ready_since = "ready", now
                self._dirty = True
            return
        if record.ready_since is None:
            if now - (record.started_at or now) > self.config.startup_timeout_s:
                self._kill(record, f"not ready within {self.config.startup_timeout_s:g} s")
            return
        if record.state == "ready":
            record.state = "unready"
            self._dirty = True
        if await self._get_ok(client, record.url + "/v2/health/live"):
            self._live_failures[record.id] = 0
            return
        self._live_failures[record.id] = self._live_failures.get(record.id, 0) + 1
        if self._live_failures[record.id] >= self.config.unhealthy_after_checks:
            self._kill(record, f"failed {self._live_failures[record.id]} liveness checks in a row")

    def _kill(self, record: ProcessRecord, reason: str) -> None:
        process = self._procs.get(record.id)
        if process is not None and process.returncode is None:
            self._kill_reason[record.id] = reason
            process.kill()

    async def _terminate_all(self) -> None:
        # Router first, so no new request reaches a server that is draining.
        ordered = sorted(self.state.processes, key=lambda r: r.kind != "router")
        for record in ordered:
            process = self._procs.get(record.id)
            if process is not None and process.returncode is None:
                record.state = "stopping"
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        self._save()
        running = [p for p in self._procs.values() if p.returncode is None]
        if not running:
            return
        await asyncio.wait([asyncio.create_task(p.wait()) for p in running], timeout=self.config.stop_grace_s)
        for process in running:
            kill_group(process.pid)  # stragglers past the grace period, and any leftover workers
        await asyncio.gather(*(p.wait() for p in running), return_exceptions=True)


def read_operate_settings(paths: FleetPaths) -> OperateSettings | None:
    if not paths.operate_file.is_file():
        return None
    return OperateSettings.model_validate_json(paths.operate_file.read_bytes())


def kill_group(pgid: int) -> None:
    """SIGKILL a process group (each supervised process leads its own), if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
