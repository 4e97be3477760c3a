"""The local fleet's alerting loop: scrape its own /metrics, evaluate its rules, append `alert` events.

Every evaluation interval (scaled by `alerts.time_scale`, at least `MIN_INTERVAL_S`) it scrapes the
router and every server in parallel, keeps what the rules select (`SeriesStore`), adds the samples
only the supervisor knows (process restarts), and appends one `alert` event per firing or resolved
transition. A rise of a server's load-failure counter becomes a `model_load_failed` event as well.
Scrapes that fail are skipped (a server that is down is what the other alerts are for).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.config.operate import AlertsConfig
from modelfleet.operate.evaluator import LOOKBACK_S, RuleEvaluator, SeriesStore, Transition
from modelfleet.operate.events import Event, append_event
from modelfleet.operate.rules import SERVER_LOAD_FAILURES, AlertRule

MIN_INTERVAL_S = 0.1
Sample = tuple[str, dict[str, str], float]


def parse_exposition(text: str) -> list[Sample]:
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def alert_event(fleet: str, transition: Transition) -> Event:
    rule = transition.rule
    labels = rule.all_labels
    key = "alert:" + ",".join(f"{k}={v}" for k, v in sorted({"alertname": rule.name, **labels}.items()))
    details: dict[str, object] = {"alertname": rule.name, "labels": labels}
    if transition.value is not None:
        details["value"] = round(transition.value, 6)
    return Event(
        kind="alert",
        severity="critical" if rule.severity == "critical" else "warning",
        fleet=fleet,
        summary=rule.summary if transition.status == "firing" else f"resolved: {rule.summary}",
        key=key,
        status="firing" if transition.status == "firing" else "resolved",
        model=rule.model,
        details=details,
        at=transition.at,
    )


class AlertLoop:
    """Scrapes `targets()` ((process id, metrics URL) pairs), evaluates `rules`, appends events to `events_file`."""

    def __init__(
        self,
        fleet: str,
        rules: list[AlertRule],
        alerts: AlertsConfig,
        events_file: Path,
        targets: Callable[[], list[tuple[str, str]]],
        local_samples: Callable[[], list[Sample]],
    ) -> None:
        self.fleet = fleet
        self.events_file = events_file
        self.targets = targets
        self.local_samples = local_samples
        self.interval_s = max(alerts.evaluation_interval_s * alerts.time_scale, MIN_INTERVAL_S)
        longest_s = max((w for rule in rules for w in rule.windows_s), default=0.0) * alerts.time_scale
        self.store = SeriesStore(rules, retention_s=longest_s + 3 * self.interval_s)
        lookback_s = max(3 * self.interval_s, LOOKBACK_S * alerts.time_scale)
        self.evaluator = RuleEvaluator(rules, alerts.time_scale, lookback_s)
        self._load_failures: dict[str, float] = {}

    async def run(self, client: httpx.AsyncClient) -> None:
        """Evaluate until cancelled."""
        while True:
            started = time.monotonic()
            await self.step(client, time.time())
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def step(self, client: httpx.AsyncClient, now: float) -> None:
        targets = self.targets()
        texts = await asyncio.gather(*(self._scrape(client, url) for _, url in targets))
        for (process, _), text in zip(targets, texts, strict=True):
            if not text:
                continue
            for metric, labels, value in await asyncio.to_thread(parse_exposition, text):
                # `instance` keeps each server's counter its own series, as Prometheus's target labels do.
                self.store.add(now, metric, {**labels, "instance": process}, value)
                if metric == SERVER_LOAD_FAILURES:
                    if value > self._load_failures.get(process, 0.0):
                        append_event(self.events_file, _load_failed(self.fleet, process, value, now))
                    self._load_failures[process] = value  # a restarted server counts from 0 again
        for metric, labels, value in self.local_samples():
            self.store.add(now, metric, labels, value)
        for transition in self.evaluator.evaluate(self.store, now):
            append_event(self.events_file, alert_event(self.fleet, transition))

    async def _scrape(self, client: httpx.AsyncClient, url: str) -> str | None:
        try:
            response = await client.get(url, timeout=max(self.interval_s, 1.0))
        except (httpx.HTTPError, OSError):
            return None
        return response.text if response.status_code == 200 else None


def _load_failed(fleet: str, process: str, total: float, now: float) -> Event:
    return Event(
        kind="model_load_failed",
        severity="critical",
        fleet=fleet,
        summary=f"{process}: a model version failed to load ({total:g} so far; its log names the model)",
        key=f"model_load_failed:{process}",
        process=process,
        details={"failed_loads": total},
        at=now,
    )
