"""The drift monitor's bookkeeping: history, drift_detected events on a change of verdict, listeners, scheduling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from modelfleet.config.drift import DriftConfig
from modelfleet.drift.monitor import DriftMonitor, append_history, for_fleet, history_file, read_history
from modelfleet.drift.types import DriftAssessment, DriftFinding
from modelfleet.fleet.state import FleetPaths, FleetState, ProcessRecord
from modelfleet.operate.events import read_events


def _assessment(judged: bool, drifted: bool, at: float = 1.0) -> DriftAssessment:
    finding = DriftFinding("input:input[2]", "ks", 0.4, 1e-9 if drifted else 0.5, 0.0125, drifted)
    reason = "drift in input:input[2]" if drifted else "no drift in 1 test(s)"
    return DriftAssessment("iris", 1, 200, 300, judged, drifted, reason, (finding,) if judged else (), at)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[DriftAssessment] = []

    def on_assessment(self, assessment: DriftAssessment) -> None:
        self.seen.append(assessment)


class Broken:
    def on_assessment(self, assessment: DriftAssessment) -> None:
        raise RuntimeError("listener bug")


def test_events_fire_once_and_resolve_and_every_assessment_reaches_listeners(tmp_path: Path) -> None:
    monitor = DriftMonitor("f", {"iris": DriftConfig()}, list, tmp_path / "drift", tmp_path / "events.jsonl")
    recorder = Recorder()
    monitor.add_listener(Broken())  # must not keep the next listener from hearing
    monitor.add_listener(recorder)
    sequence = [
        _assessment(False, False),
        _assessment(True, True),
        _assessment(True, True),
        _assessment(False, False),
        _assessment(True, False),
    ]
    for assessment in sequence:
        monitor.record(assessment)
    assert recorder.seen == sequence
    events, _ = read_events(tmp_path / "events.jsonl")
    assert [(e.kind, e.status, e.key) for e in events] == [
        ("drift_detected", "firing", "drift_detected:iris"),
        ("drift_detected", "resolved", "drift_detected:iris"),
    ]
    assert events[0].details["drifted"] == ["input:input[2]"] and events[0].model == "iris"
    history = read_history(history_file(tmp_path / "drift", "iris"))
    assert [h["drifted"] for h in history] == [True, True, False]  # judged ones only


def test_history_keeps_its_newer_half_past_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "iris.jsonl"
    for at in range(40):
        append_history(path, _assessment(True, False, at=float(at)), max_bytes=4000)
    kept = read_history(path)
    assert path.stat().st_size <= 4000 and kept[-1]["at"] == 39.0 and 5 < len(kept) < 40


def test_checks_are_due_per_model_interval_and_no_replica_is_not_judged(tmp_path: Path) -> None:
    configs = {"iris": DriftConfig(check_interval_s=10), "off": DriftConfig(sample_rate=0)}
    monitor = DriftMonitor("f", configs, list, tmp_path, tmp_path / "events.jsonl")
    assert set(monitor.configs) == {"iris"}  # a model that does not sample is never checked
    first = asyncio.run(monitor.poll_once(100.0))
    assert [(a.judged, a.reason) for a in first] == [(False, "no replica serves it")]
    assert asyncio.run(monitor.poll_once(105.0)) == []
    assert len(asyncio.run(monitor.poll_once(110.0))) == 1


def test_for_fleet_reads_the_replicas_specs_and_asks_only_ready_ones(tmp_path: Path) -> None:
    paths = FleetPaths(tmp_path / "fleet")
    paths.specs_dir.mkdir(parents=True)
    spec = {
        "models": [
            {"path": str(tmp_path), "name": "iris", "drift": {"sample_rate": 0.5, "check_interval_s": 2}}
        ]
    }
    (paths.specs_dir / "cpu-0-1.yaml").write_text(yaml.safe_dump(spec))
    (paths.specs_dir / "cpu-0-2.yaml").write_text(yaml.safe_dump(spec))
    records = [
        ProcessRecord(
            id=f"cpu-0-{i}",
            kind="server",
            models=["iris"],
            port=1,
            url=f"http://127.0.0.1:{i}",
            log_file="x",
            pid=i,
            state=state,
        )
        for i, state in ((1, "ready"), (2, "backoff"))
    ]
    state = FleetState(
        fleet="f",
        spec_path="s",
        state_dir=str(paths.root),
        router_url="http://127.0.0.1:9",
        models=["iris"],
        created_at=0,
        updated_at=0,
        processes=records,
    )
    monitor = for_fleet(paths, state)
    assert monitor.configs["iris"].sample_rate == 0.5 and monitor.tick_s == 2
    assert [r.id for r in monitor.replicas()] == ["cpu-0-1"]
    records[1].state = "ready"  # the supervisor updates its state in place; the monitor sees it
    assert [r.id for r in monitor.replicas()] == ["cpu-0-1", "cpu-0-2"]
