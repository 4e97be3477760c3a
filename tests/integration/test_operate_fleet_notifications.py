"""Notifications from a real local fleet to a real webhook receiver on loopback: a SIGKILLed replica is
told as healed within 2 s of its restart (signal, uptime), its model as unavailable and then resolved;
the embedded evaluator's alerts and the notifier's retries and dead letters against a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.fleet_specs import write_fleet_spec
from tests.support.linear_model import infer_body, make_artifact

from modelfleet.config.operate import AlertsConfig, NotificationsConfig, SinkConfig
from modelfleet.fleet.local import start_fleet, stop_fleet
from modelfleet.fleet.state import FleetPaths, read_restarts, read_state
from modelfleet.fleet.status import fleet_status
from modelfleet.operate.alerting import AlertLoop
from modelfleet.operate.events import Event, append_event
from modelfleet.operate.notify import Notifier
from modelfleet.operate.rules import build_rules

pytestmark = pytest.mark.timeout(120)


class Receiver:
    """A webhook receiver: records (arrival time, payload); answers `status` (settable)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status == 200:
                    receiver.received.append((time.time(), json.loads(body)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alerts(self, kind: str, status: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        return [
            (at, payload["alerts"][0])
            for at, payload in self.received
            if payload["alerts"][0]["labels"]["kind"] == kind
            and (status is None or payload["alerts"][0]["status"] == status)
        ]

    def wait_for(self, kind: str, status: str, timeout_s: float) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.alerts(kind, status)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {status} {kind} notification within {timeout_s} s: {self.received}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def test_sigkill_is_notified_as_healed_and_unavailable_then_resolved(
    tmp_path: Path, receiver: Receiver
) -> None:
    spec_file = write_fleet_spec(
        tmp_path / "fleet.yaml",
        {"alpha": make_artifact(tmp_path / "alpha", "alpha", 1)},
        local={"stable_after_s": 1.0},
        notifications={
            "group_interval_s": 5.0,
            "poll_interval_s": 0.1,
            "sinks": [
                {"kind": "webhook", "name": "hook", "url": receiver.url},
                {"kind": "file", "path": str(tmp_path / "notes.jsonl"), "kinds": ["replica_restarted"]},
            ],
        },
        alerts={"evaluation_interval_s": 60, "time_scale": 0.005, "symptom_for_s": 0},
    )
    state_root = tmp_path / "state"
    state = start_fleet(spec_file, state_root=state_root, wait_s=90)
    paths = FleetPaths.for_fleet("testfleet", state_root)
    try:
        httpx.post(
            f"{state.router_url}/v2/models/alpha/infer", json=infer_body(), timeout=5
        ).raise_for_status()
        victim = state.process("cpu-0-0")
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        at, healed = receiver.wait_for("replica_restarted", "firing", timeout_s=10)
        [restart] = read_restarts(paths)
        restarted_at = restart["time_unix"] + restart["backoff_s"]  # exit seen, then the back-off wait
        assert at - restarted_at < 2.0, f"healed notification {at - restarted_at:.2f} s after the restart"
        assert healed["labels"]["process"] == "cpu-0-0" and healed["labels"]["severity"] == "warning"
        assert healed["annotations"]["signal"] == "SIGKILL"
        assert 0 < float(healed["annotations"]["uptime_s"]) < time.time() - state.created_at
        assert healed["annotations"]["restarts"] == "1" and healed["endsAt"] == "0001-01-01T00:00:00Z"

        _, down = receiver.wait_for("model_unavailable", "firing", timeout_s=10)
        assert down["labels"]["model"] == "alpha" and down["labels"]["severity"] == "critical"
        _, back = receiver.wait_for("model_unavailable", "resolved", timeout_s=60)
        assert back["startsAt"] == down["startsAt"] and back["endsAt"] != "0001-01-01T00:00:00Z"
        _, stable = receiver.wait_for("replica_restarted", "resolved", timeout_s=30)
        assert stable["labels"]["process"] == "cpu-0-0"
        [(_, payload)] = [(a, p) for a, p in receiver.received if p["alerts"][0] is healed]
        assert payload["version"] == "4" and payload["receiver"] == "hook" and payload["truncatedAlerts"] == 0
        assert payload["status"] == "firing" and payload["commonLabels"] == healed["labels"]
        assert set(payload) == {
            "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
            "commonLabels", "commonAnnotations", "externalURL", "alerts",
        }  # fmt: skip
        # The file sink takes only replica_restarted, and got the same two.
        lines = [json.loads(line) for line in (tmp_path / "notes.jsonl").read_text().splitlines()]
        assert [(r["notification"]["kind"], r["notification"]["status"]) for r in lines] == [
            ("replica_restarted", "firing"),
            ("replica_restarted", "resolved"),
        ]
        # The embedded evaluator (1 h is 18 s at time_scale 0.005) saw the router's gauge drop to 0 ready
        # replicas and come back: its NoReadyReplica alert fired and resolved, as `alert` events.
        events = [json.loads(line) for line in paths.events_file.read_text().splitlines()]
        no_ready = [
            e["status"]
            for e in events
            if e["kind"] == "alert" and e["details"]["alertname"] == "ModelfleetNoReadyReplica"
        ]
        assert no_ready == ["firing", "resolved"], events
        assert read_state(paths).process("cpu-0-0").restarts == 1
        # `fleet status` shows the last events; `fleet events --json` prints them, one object a line.
        recent = fleet_status(spec_file, state_root)["events"]
        assert ("model_unavailable", "resolved") in [(e["kind"], e["status"]) for e in recent]
        shown = subprocess.run(
            [sys.executable, "-m", "modelfleet.cli.main", "fleet", "events", "testfleet", "--state-dir",
             str(state_root), "--json", "-n", "3"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        printed = [json.loads(line) for line in shown.stdout.splitlines()]
        logged = [json.loads(line) for line in paths.events_file.read_text().splitlines()]
        assert len(printed) == 3 and any(logged[i : i + 3] == printed for i in range(len(logged) - 2))
        # The local fleet's Grafana dashboard sits in its state folder.
        dashboard = json.loads(paths.dashboard_file.read_text())
        assert "alpha: p99 latency vs SLO 100 ms" in [panel["title"] for panel in dashboard["panels"]]
    finally:
        stop_fleet(spec_file, state_root, grace_s=10)
    # Everything was delivered: the saved offset is the end of the log.
    assert int(paths.notify_offset_file.read_text()) == paths.events_file.stat().st_size


def _event(key: str, status: str = "firing", at: float | None = None) -> Event:
    return Event(
        kind="replica_restarted",
        severity="warning",
        fleet="f",
        summary=f"{key} restarted",
        key=key,
        status=status,  # type: ignore[arg-type]
        process=key,
        at=at or time.time(),
    )


async def _run_for(notifier: Notifier, seconds: float) -> None:
    task = asyncio.create_task(notifier.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _run_until(notifier: Notifier, done: Callable[[], bool], limit_s: float) -> None:
    """Run until ``done()`` holds (or ``limit_s`` passed): a fixed 1 s window missed a dead letter on a
    busy CI-sized machine (retries and back-off ran late), though nothing was wrong."""
    task = asyncio.create_task(notifier.run())
    give_up = time.monotonic() + limit_s
    while not done() and time.monotonic() < give_up:
        await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_crash_loop_is_one_grouped_notification_and_a_down_sink_dead_letters(
    tmp_path: Path, receiver: Receiver
) -> None:
    log = tmp_path / "events.jsonl"
    config = NotificationsConfig(
        group_interval_s=0.6,
        poll_interval_s=0.05,
        sinks=[SinkConfig(kind="webhook", url=receiver.url, max_retries=2, retry_initial_s=0.05)],
    )
    notifier = Notifier(config, log, tmp_path / "offset", tmp_path / "dead.jsonl", tmp_path / "log")
    for _ in range(5):
        append_event(log, _event("cpu-0-0"))
    append_event(log, _event("cpu-0-1"))
    asyncio.run(_run_for(notifier, 1.2))
    counts = sorted(
        (p["alerts"][0]["labels"]["process"], p["alerts"][0]["annotations"]["count"])
        for _, p in receiver.received
    )
    # First event at once, the other four of the loop as one notification with their count.
    assert counts == [("cpu-0-0", "1"), ("cpu-0-0", "4"), ("cpu-0-1", "1")]
    assert int((tmp_path / "offset").read_text()) == log.stat().st_size

    # A restart resumes from the saved offset: nothing is sent twice.
    asyncio.run(_run_for(notifier, 0.3))
    assert len(receiver.received) == 3

    # The sink answers 503: 2 retries with back-off, then the dead-letter file; the offset moves on.
    receiver.status = 503
    append_event(log, _event("cpu-0-2"))

    def dead_lettered() -> bool:
        offset = (tmp_path / "offset").read_text().strip()
        return (tmp_path / "dead.jsonl").exists() and offset.isdigit() and int(offset) == log.stat().st_size

    asyncio.run(_run_until(notifier, dead_lettered, limit_s=15.0))
    [dead] = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert dead["sink"] == "webhook" and "HTTP 503" in dead["error"]
    assert dead["notification"]["key"] == "cpu-0-2"
    assert int((tmp_path / "offset").read_text()) == log.stat().st_size
    assert len(receiver.received) == 3


def test_alert_loop_scrapes_real_metrics_and_tells_a_load_failure(tmp_path: Path) -> None:
    exposition = {
        "text": "# TYPE modelfleet_model_load_failures counter\nmodelfleet_model_load_failures_total 0\n"
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition["text"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    alerts = AlertsConfig(evaluation_interval_s=60, symptom_for_s=0)
    rules = build_rules("f", [], alerts, "local", "", (0.1,))
    events_file = tmp_path / "events.jsonl"
    loop = AlertLoop("f", rules, alerts, events_file, lambda: [("cpu-0-0", url)], lambda: [])

    async def steps() -> None:
        async with httpx.AsyncClient() as client:
            for minute in range(4):
                if minute == 2:
                    exposition["text"] = exposition["text"].replace("_total 0", "_total 1")
                await loop.step(client, 1000.0 + 60 * minute)

    try:
        asyncio.run(steps())
    finally:
        server.shutdown()
        server.server_close()
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert [(e["kind"], e["status"], e.get("process")) for e in events] == [
        ("model_load_failed", "firing", "cpu-0-0"),
        ("alert", "firing", None),
    ]
    assert events[1]["details"]["alertname"] == "ModelfleetLoadFailures" and events[1]["at"] == 1120.0
