"""Operating a fleet: where its availability events are sent, and how its SLO alerts are built.

``notifications:`` lists the sinks (an Alertmanager-compatible webhook, a JSON-lines file, the log),
each with its own filter, and the notifier's grouping, queue and retry settings. ``alerts:`` sets the
multi-window, multi-burn-rate alerts built from each model's ``slo`` (the SRE workbook's table by
default), the symptom alerts, and the embedded evaluator that runs them on a local fleet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from modelfleet.config.base import SpecModel

SinkKind = Literal["webhook", "file", "log"]
SeverityName = Literal["info", "warning", "critical"]
SEVERITIES: tuple[SeverityName, ...] = ("info", "warning", "critical")
# The event kinds of modelfleet.operate.events (config sits below operate, so the names are repeated).
EVENT_KINDS = (
    "replica_restarted",
    "model_unavailable",
    "model_load_failed",
    "alert",
    "rollout_started",
    "rollout_advanced",
    "rollout_rolled_back",
    "rollout_finished",
    "drift_detected",
    "retraining",
)


class SinkConfig(SpecModel):
    """One place notifications go, with the events it takes."""

    name: str = Field(
        default="",
        description="Receiver name in the webhook payload and in the Alertmanager snippet; defaults to the kind.",
    )
    kind: SinkKind = Field(
        default="log",
        description="`webhook`: POST the Alertmanager webhook payload (version 4) to `url`; `file`: append one "
        "JSON line per notification to `path`; `log`: one line in the supervisor's log.",
    )
    url: str | None = Field(default=None, description="With kind webhook: the http(s) URL to POST to.")
    path: Path | None = Field(
        default=None, description="With kind file: the JSON-lines file (relative to the spec)."
    )
    severities: list[SeverityName] = Field(
        default_factory=lambda: list(SEVERITIES),
        description="Severities this sink takes.",
    )
    kinds: list[str] = Field(
        default_factory=list, description="Event kinds this sink takes; empty takes every kind."
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="Longest one webhook POST may take.")
    max_retries: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Retries of a failed delivery before it goes to the dead-letter file.",
    )
    retry_initial_s: float = Field(
        default=0.5, gt=0, le=600, description="Wait before the first retry; doubles per retry."
    )
    retry_max_s: float = Field(default=30.0, gt=0, le=3600, description="Cap on the doubling retry wait.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"sink url {value!r} is not an http(s) URL with a host (notifications.sinks[].url)"
            )
        return value

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        unknown = [kind for kind in value if kind not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"unknown event kind(s) {', '.join(unknown)}; use {', '.join(EVENT_KINDS)}")
        return value

    @model_validator(mode="after")
    def _target(self) -> SinkConfig:
        if self.kind == "webhook" and self.url is None:
            raise ValueError("a webhook sink needs `url` (notifications.sinks[].url)")
        if self.kind == "file" and self.path is None:
            raise ValueError("a file sink needs `path` (notifications.sinks[].path)")
        if not self.name:
            self.name = self.kind
        return self

    def takes(self, kind: str, severity: str) -> bool:
        return severity in self.severities and (not self.kinds or kind in self.kinds)


class NotificationsConfig(SpecModel):
    """The notifier: follows the fleet's event log and delivers grouped notifications to every sink."""

    enabled: bool = Field(default=True, description="Run the notifier in the local supervisor.")
    sinks: list[SinkConfig] = Field(
        default_factory=lambda: [SinkConfig(kind="log")],
        description="Where notifications go; several sinks each take the events their filter lets through.",
    )
    group_interval_s: float = Field(
        default=30.0,
        ge=0,
        le=86400,
        description="Events of one key (one condition) within this window after a notification are sent "
        "as one notification with a count when it ends; 0 sends every event.",
    )
    queue_max: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Notifications waiting per sink; past it the oldest goes to the dead-letter file.",
    )
    poll_interval_s: float = Field(
        default=0.2, gt=0, le=60, description="How often the notifier reads new events from the log."
    )
    external_url: str = Field(
        default="",
        description="`externalURL` of the webhook payload (where a receiver can look the fleet up).",
    )

    def resolve_paths(self, base: Path) -> None:
        for sink in self.sinks:
            sink.resolve_path_fields(base, "path")


class BurnRateConfig(SpecModel):
    """One row of the multi-window, multi-burn-rate table: alert when both windows burn this fast."""

    severity: SeverityName = Field(description="Severity of the alert (critical pages, warning tickets).")
    factor: float = Field(
        gt=0, le=1000, description="Burn rate: the error budget spent this many times faster than allowed."
    )
    long_window_s: float = Field(gt=0, le=30 * 86400, description="Long window in seconds, e.g. 3600.")
    short_window_s: float = Field(
        gt=0, le=30 * 86400, description="Short window in seconds (a twelfth of the long one, typically)."
    )
    for_s: float = Field(default=0.0, ge=0, le=86400, description="How long both must hold before it fires.")

    @model_validator(mode="after")
    def _short_shorter(self) -> BurnRateConfig:
        if self.short_window_s > self.long_window_s:
            raise ValueError(
                f"short_window_s ({self.short_window_s:g}) is longer than long_window_s ({self.long_window_s:g})"
            )
        return self


def _workbook_burn_rates() -> list[BurnRateConfig]:
    return [
        BurnRateConfig(severity="critical", factor=14.4, long_window_s=3600, short_window_s=300),
        BurnRateConfig(severity="critical", factor=6, long_window_s=6 * 3600, short_window_s=1800),
        BurnRateConfig(severity="warning", factor=1, long_window_s=3 * 86400, short_window_s=6 * 3600),
    ]


class AlertsConfig(SpecModel):
    """SLO and symptom alerts: rendered as a PrometheusRule, and evaluated by a local fleet itself."""

    enabled: bool = Field(default=True, description="Run the embedded evaluator in the local supervisor.")
    burn_rates: list[BurnRateConfig] = Field(
        default_factory=_workbook_burn_rates,
        description="Burn-rate rows for each model's error and latency SLOs (default: the SRE workbook's "
        "14.4x over 1h and 5m, 6x over 6h and 30m, critical; 1x over 3d and 6h, warning).",
    )
    restarts_per_hour_max: int = Field(
        default=3, ge=1, le=10000, description="Alert when a fleet's processes restart more often per hour."
    )
    queue_wait_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Alert when a model's mean queue wait over 5 minutes exceeds this fraction of its timeout_s.",
    )
    symptom_for_s: float = Field(
        default=60.0, ge=0, le=86400, description="How long a symptom must hold before its alert fires."
    )
    evaluation_interval_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often rules are evaluated (the PrometheusRule group's interval; locally the "
        "evaluator's, scaled by time_scale). Also how often the local evaluator scrapes /metrics.",
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Local evaluator only: every window, `for` and interval is multiplied by this, so 0.001 "
        "runs a 1-hour window in 3.6 s (for tests and demos).",
    )
    rule_labels: dict[str, str] = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description="Labels on the PrometheusRule that the Prometheus operator's ruleSelector matches.",
    )

    @model_validator(mode="after")
    def _windows_evaluate(self) -> AlertsConfig:
        # A rate over a window holding fewer than two evaluations (= scrapes) never has a value.
        for row in self.burn_rates:
            if row.short_window_s < 2 * self.evaluation_interval_s:
                raise ValueError(
                    f"burn rate {row.factor:g}x: short_window_s {row.short_window_s:g} is shorter than twice "
                    f"alerts.evaluation_interval_s ({self.evaluation_interval_s:g}); the rule would never evaluate"
                )
        return self


class ModelObjective(SpecModel):
    """What the alert rules need of one model of the fleet (its `slo` and `timeout_s`)."""

    name: str = Field(description="Model name.")
    latency_ms: float = Field(gt=0, description="slo.latency_ms of the model.")
    percentile: float = Field(gt=0, lt=100, description="slo.percentile of the model.")
    error_rate_percent: float = Field(ge=0, le=100, description="slo.error_rate_percent of the model.")
    timeout_s: float = Field(gt=0, description="timeout_s of the model.")


class OperateSettings(SpecModel):
    """What a local fleet's supervisor runs its notifier and evaluator from (operate.json in the state folder)."""

    fleet: str = Field(description="Fleet name.")
    notifications: NotificationsConfig = Field(description="The fleet spec's notifications section.")
    alerts: AlertsConfig = Field(description="The fleet spec's alerts section.")
    models: list[ModelObjective] = Field(description="Each model's objectives.")
