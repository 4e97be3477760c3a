"""Trigger decisions with `now` passed in (drift, error rate, schedule), the router counts they read, and the
drift listener and scheduler that start runs (with a runner that records what it was asked to start)."""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from modelfleet.config.retrain import RetrainConfig, RetrainTriggers
from modelfleet.drift.retrain import LAST_RUN_SUFFIX, Trigger
from modelfleet.drift.triggers import (
    DriftRetrainListener,
    RetrainScheduler,
    drift_decision,
    error_rate_decision,
    router_counts,
    schedule_decision,
    window_counts,
)
from modelfleet.drift.types import DriftAssessment, DriftFinding
from modelfleet.fleet.state import FleetPaths

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()


def _assessment(judged: bool = True, drifted: bool = True) -> DriftAssessment:
    finding = DriftFinding("input[2]", "ks", 0.6, 1e-9, 0.0125, drifted)
    return DriftAssessment(
        "iris", 1, 200, 64, judged, drifted, "input[2] drifted (ks p=1e-09)", (finding,), NOW
    )


def test_drift_decision_needs_a_judged_drifted_window_on_drift_and_the_cooldown() -> None:
    triggers = RetrainTriggers(cooldown_s=600)
    assert drift_decision(_assessment(), triggers, None, NOW).start
    assert "input[2] drifted" in drift_decision(_assessment(), triggers, NOW - 601, NOW).reason
    assert not drift_decision(_assessment(), triggers, NOW - 599, NOW).start
    assert not drift_decision(_assessment(drifted=False), triggers, None, NOW).start
    assert drift_decision(_assessment(judged=False, drifted=False), triggers, None, NOW).reason.startswith(
        "not judged"
    )
    assert not drift_decision(_assessment(), RetrainTriggers(on_drift=False), None, NOW).start


def test_error_rate_decision() -> None:
    triggers = RetrainTriggers(error_rate_percent=5, min_requests=100, cooldown_s=0)
    assert error_rate_decision(200, 11, triggers, None, NOW).start
    assert not error_rate_decision(200, 10, triggers, None, NOW).start  # 5 % is not above 5 %
    assert not error_rate_decision(99, 99, triggers, None, NOW).start  # too few to judge
    assert not error_rate_decision(200, 50, RetrainTriggers(), None, NOW).start  # off by default


def test_schedule_by_interval_and_daily_time() -> None:
    interval = RetrainTriggers(schedule_interval_s=3600)
    assert schedule_decision(interval, None, NOW).start
    assert not schedule_decision(interval, NOW - 3599, NOW).start
    assert schedule_decision(interval, NOW - 3600, NOW).start
    daily = RetrainTriggers(schedule_daily_at="11:30")
    assert schedule_decision(daily, NOW - 3600, NOW).start  # last run 11:00, 11:30 has passed since
    assert not schedule_decision(daily, NOW - 600, NOW).start  # ran 11:50, after today's 11:30
    later = RetrainTriggers(schedule_daily_at="13:00")  # today's not yet come: yesterday's 13:00 counts
    assert not schedule_decision(later, NOW - 20 * 3600, NOW).start
    assert schedule_decision(later, NOW - 24 * 3600, NOW).start
    assert not schedule_decision(RetrainTriggers(), None, NOW).start


def test_router_counts_and_the_window_over_cumulative_readings() -> None:
    text = (
        "# TYPE modelfleet_router_requests counter\n"
        'modelfleet_router_requests_total{fleet="f",model="iris",code="200"} 90\n'
        'modelfleet_router_requests_total{fleet="f",model="iris",code="503"} 10\n'
        'modelfleet_router_requests_total{fleet="f",model="other",code="200"} 5\n'
    )
    assert router_counts(text) == {"iris": (100, 10), "other": (5, 0)}
    history: deque[tuple[float, int, int]] = deque([(0.0, 0, 0), (50.0, 100, 1), (100.0, 300, 41)])
    assert window_counts(history, 100.0, 60.0) == (
        300,
        41,
    )  # the reading at 0 s is the last before the window
    assert window_counts(history, 120.0, 60.0) == (200, 40)
    assert window_counts(deque([(0.0, 5, 0)]), 1.0, 60.0) == (0, 0)


def _paths(tmp_path: Path, last_run: float | None) -> FleetPaths:
    paths = FleetPaths(tmp_path)
    if last_run is not None:
        paths.retrain_dir.mkdir(parents=True)
        (paths.retrain_dir / f"iris{LAST_RUN_SUFFIX}").write_text(json.dumps({"started_at": last_run}))
    return paths


def test_the_drift_listener_starts_a_run_for_a_drifted_model_once_per_cooldown(tmp_path: Path) -> None:
    started: list[tuple[str, Trigger]] = []
    config = RetrainConfig(command=["train"], triggers=RetrainTriggers(cooldown_s=600))
    listener = DriftRetrainListener(
        _paths(tmp_path, NOW - 60), {"iris": config}, lambda m, t: started.append((m, t)), lambda: NOW
    )
    listener.on_assessment(_assessment())
    assert started == []  # last run a minute ago
    listener.clock = lambda: NOW + 600
    listener.on_assessment(_assessment())
    listener.on_assessment(
        _assessment().__class__("other", 1, 200, 64, True, True, "x")
    )  # no retrain: section
    [(model, trigger)] = started
    assert model == "iris" and trigger.kind == "drift" and trigger.details["findings"] == ["input[2]"]


def test_the_scheduler_starts_scheduled_and_error_rate_runs(tmp_path: Path) -> None:
    started: list[tuple[str, Trigger]] = []
    configs = {
        "iris": RetrainConfig(
            command=["t"], triggers=RetrainTriggers(error_rate_percent=5, min_requests=10, cooldown_s=0)
        ),
        "other": RetrainConfig(command=["t"], triggers=RetrainTriggers(schedule_interval_s=3600)),
    }
    scheduler = RetrainScheduler(
        _paths(tmp_path, None), configs, lambda m, t: started.append((m, t)), "http://x"
    )
    scheduler.step(NOW, {"iris": (100, 0)})
    assert [(m, t.kind) for m, t in started] == [("other", "schedule")]
    scheduler.step(NOW + 30, {"iris": (200, 20)})
    assert [(m, t.kind) for m, t in started][-1] == ("iris", "error_rate")
    assert started[-1][1].details == {"requests": 100, "errors": 20}
