"""When to retrain: decisions for drift, error rate and schedule (pure, `now` passed in), and the thin parts
that act on them: a DriftListener for the fleet's drift monitor and the supervisor's polling loop.

Every decision respects the model's `retrain.triggers`; drift and error-rate triggers also wait out
`cooldown_s` after the last run began (a schedule does not: it is its own spacing). Starting a run means a
background thread running `run_retrain`; a second start while one runs is recorded there as `skipped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from modelfleet.config.retrain import RetrainConfig, RetrainTriggers
from modelfleet.drift.retrain import Trigger, TriggerKind, last_run_at, run_retrain
from modelfleet.drift.types import DriftAssessment
from modelfleet.errors import ModelfleetError
from modelfleet.fleet.state import FleetPaths
from modelfleet.operate.alerting import parse_exposition

ROUTER_REQUESTS = "modelfleet_router_requests_total"
Runner = Callable[[str, Trigger], None]  # starts a run of a fleet model; must not block


@dataclass(frozen=True)
class Decision:
    start: bool
    reason: str


def cooled_down(triggers: RetrainTriggers, last_run: float | None, now: float) -> bool:
    return last_run is None or now - last_run >= triggers.cooldown_s


def drift_decision(
    assessment: DriftAssessment, triggers: RetrainTriggers, last_run: float | None, now: float
) -> Decision:
    """Start on a judged, drifted assessment when on_drift is set and the cooldown has passed."""
    if not triggers.on_drift:
        return Decision(False, "triggers.on_drift is off")
    if not (assessment.judged and assessment.drifted):
        return Decision(False, "not drifted" if assessment.judged else f"not judged: {assessment.reason}")
    if not cooled_down(triggers, last_run, now):
        return Decision(
            False, f"drifted, but within triggers.cooldown_s ({triggers.cooldown_s:g} s) of the last run"
        )
    return Decision(True, f"drift: {assessment.reason}")


def error_rate_decision(
    requests: int, errors: int, triggers: RetrainTriggers, last_run: float | None, now: float
) -> Decision:
    """Start when the window's 5xx share exceeds error_rate_percent, over at least min_requests requests."""
    if triggers.error_rate_percent is None:
        return Decision(False, "triggers.error_rate_percent is off")
    if requests < triggers.min_requests:
        return Decision(False, f"{requests} requests in the window, under triggers.min_requests")
    rate_percent = 100.0 * errors / requests
    if rate_percent <= triggers.error_rate_percent:
        return Decision(False, f"error rate {rate_percent:.2f} % within {triggers.error_rate_percent:g} %")
    if not cooled_down(triggers, last_run, now):
        return Decision(False, "error rate high, but within triggers.cooldown_s of the last run")
    return Decision(
        True,
        f"error rate {rate_percent:.2f} % over {triggers.error_window_s:g} s above "
        f"{triggers.error_rate_percent:g} % (triggers.error_rate_percent)",
    )


def schedule_decision(triggers: RetrainTriggers, last_run: float | None, now: float) -> Decision:
    """Start when the interval since the last run has passed, or today's daily time (UTC) has come since it."""
    if triggers.schedule_interval_s is not None and (
        last_run is None or now - last_run >= triggers.schedule_interval_s
    ):
        return Decision(True, f"schedule: every {triggers.schedule_interval_s:g} s")
    if triggers.schedule_daily_at is not None:
        hour, minute = (int(part) for part in triggers.schedule_daily_at.split(":"))
        today = datetime.fromtimestamp(now, UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
        due = today if today.timestamp() <= now else today - timedelta(days=1)
        if last_run is None or last_run < due.timestamp():
            return Decision(True, f"schedule: daily at {triggers.schedule_daily_at} UTC")
    return Decision(False, "not due")


def router_counts(exposition: str) -> dict[str, tuple[int, int]]:
    """Per model, (requests, 5xx responses) so far from the router's /metrics text."""
    counts: dict[str, tuple[int, int]] = {}
    for name, labels, value in parse_exposition(exposition):
        if name != ROUTER_REQUESTS or "model" not in labels:
            continue
        total, errors = counts.get(labels["model"], (0, 0))
        counts[labels["model"]] = (
            total + int(value),
            errors + int(value) * labels.get("code", "").startswith("5"),
        )
    return counts


def window_counts(history: deque[tuple[float, int, int]], now: float, window_s: float) -> tuple[int, int]:
    """(requests, errors) over the last ``window_s`` from cumulative (time, requests, errors) readings."""
    while len(history) > 1 and history[1][0] <= now - window_s:
        history.popleft()
    if len(history) < 2:
        return 0, 0
    (_, total0, errors0), (_, total1, errors1) = history[0], history[-1]
    return max(0, total1 - total0), max(0, errors1 - errors0)


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def thread_runner(spec_path: Path, state_root: Path, api_key: str | None = None) -> Runner:
    """Runs each start as `run_retrain` in a daemon thread (its errors are recorded by the run itself);
    ``api_key``: the supervisor's own key when auth is on (the rollout reads the router's status)."""

    def run(model: str, trigger: Trigger) -> None:
        def body() -> None:
            with contextlib.suppress(ModelfleetError):
                run_retrain(
                    spec_path,
                    model,
                    trigger,
                    state_root=state_root,
                    api_key=api_key,
                    actor="modelfleet-supervisor",
                )

        threading.Thread(target=body, name=f"retrain-{model}", daemon=True).start()

    return run


class DriftRetrainListener:
    """A DriftListener for the drift monitor: starts a run when an assessment calls for one; never blocks."""

    def __init__(
        self, paths: FleetPaths, configs: dict[str, RetrainConfig], runner: Runner, clock: Callable[[], float]
    ) -> None:
        self.paths, self.configs, self.runner, self.clock = paths, configs, runner, clock
        self.started: dict[str, float] = {}  # a run just started may not have written its last-run file yet

    def on_assessment(self, assessment: DriftAssessment) -> None:
        config = self.configs.get(assessment.model)
        if config is None:
            return
        decision = drift_decision(
            assessment, config.triggers, last_run_at(self.paths, assessment.model), self.clock()
        )
        if decision.start:
            details = {
                "window_items": assessment.window_items,
                "findings": [f.name for f in assessment.findings if f.drifted],
            }
            self.runner(assessment.model, Trigger("drift", decision.reason, details))


class RetrainScheduler:
    """The supervisor's loop: every poll it checks each model's schedule and its router error rate."""

    def __init__(
        self, paths: FleetPaths, configs: dict[str, RetrainConfig], runner: Runner, metrics_url: str
    ) -> None:
        self.paths, self.configs, self.runner, self.metrics_url = paths, configs, runner, metrics_url
        self.history: dict[str, deque[tuple[float, int, int]]] = {name: deque() for name in configs}
        self.started: dict[str, float] = {}  # a run just started may not have written its last-run file yet

    def step(self, now: float, counts: dict[str, tuple[int, int]] | None) -> list[tuple[str, Trigger]]:
        """Decide for every model at ``now`` given the router's cumulative counts (None: not read); start those due."""
        started = []
        for model, config in self.configs.items():
            last = _latest(last_run_at(self.paths, model), self.started.get(model))
            requests = errors = 0
            if counts is not None and model in counts:
                self.history[model].append((now, *counts[model]))
                requests, errors = window_counts(self.history[model], now, config.triggers.error_window_s)
            kind: TriggerKind = "schedule"
            decision = schedule_decision(config.triggers, last, now)
            if not decision.start:
                kind, decision = (
                    "error_rate",
                    error_rate_decision(requests, errors, config.triggers, last, now),
                )
            if decision.start:
                trigger = Trigger(kind, decision.reason, {"requests": requests, "errors": errors})
                self.started[model] = now
                self.runner(model, trigger)
                started.append((model, trigger))
        return started

    async def run(self, client: httpx.AsyncClient, clock: Callable[[], float]) -> None:
        interval_s = min(config.triggers.poll_interval_s for config in self.configs.values())
        while True:
            await asyncio.sleep(interval_s)
            counts = None
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(self.metrics_url)
                if response.status_code == 200:
                    counts = router_counts(response.text)
            self.step(clock(), counts)


def retrain_configs(spec_path: Path) -> dict[str, RetrainConfig]:
    """The fleet spec's models that have a `retrain:` section, by fleet model name."""
    from modelfleet.fleet.sizing import load_fleet_spec

    return {m.name: m.retrain for m in load_fleet_spec(spec_path).models if m.retrain is not None}


def retrain_scheduler(
    paths: FleetPaths, spec_path: str | Path, metrics_url: str, api_key: str | None = None
) -> RetrainScheduler | None:
    """The supervisor's scheduler for models with a schedule or an error-rate trigger; None when none has one."""
    configs = {
        name: config
        for name, config in retrain_configs(Path(spec_path)).items()
        if config.triggers.schedule_interval_s is not None
        or config.triggers.schedule_daily_at is not None
        or config.triggers.error_rate_percent is not None
    }
    if not configs:
        return None
    runner = thread_runner(Path(spec_path), paths.root.parent, api_key)
    return RetrainScheduler(paths, configs, runner, metrics_url)


def drift_listener(
    paths: FleetPaths, spec_path: str | Path, api_key: str | None = None
) -> DriftRetrainListener | None:
    """The listener the fleet's drift monitor registers, for models with `retrain.triggers.on_drift`."""
    configs = {name: c for name, c in retrain_configs(Path(spec_path)).items() if c.triggers.on_drift}
    if not configs:
        return None
    runner = thread_runner(Path(spec_path), paths.root.parent, api_key)
    return DriftRetrainListener(paths, configs, runner, time.time)
