"""A fleet model's retraining settings (`retrain:` on a fleet model): the hook, its inputs, triggers, gates, rollout.

The pipeline that runs them is modelfleet.drift.retrain; the trigger decisions are modelfleet.drift.triggers.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from modelfleet.config.base import SpecModel
from modelfleet.config.rollout import RolloutOptions

_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_DAILY_AT = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class RetrainTriggers(SpecModel):
    """What starts a retraining run besides `modelfleet retrain FLEET MODEL` (always allowed)."""

    on_drift: bool = Field(
        default=True,
        description="Retrain when the fleet's drift monitor judges the model's window drifted.",
    )
    error_rate_percent: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Retrain when the model's 5xx rate over the last error_window_s exceeds this, in percent "
        "(null: off).",
    )
    error_window_s: float = Field(
        default=300.0, gt=0, description="Window the error rate is measured over, in seconds."
    )
    min_requests: int = Field(
        default=100,
        ge=1,
        description="Requests the error-rate window needs before it is judged (fewer: no decision).",
    )
    schedule_interval_s: float | None = Field(
        default=None,
        ge=60,
        description="Retrain every this many seconds after the last run (null: no interval schedule).",
    )
    schedule_daily_at: str | None = Field(
        default=None,
        description="Retrain once a day at this UTC time, HH:MM (null: no daily schedule).",
    )
    cooldown_s: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds after a run's start during which drift and metric triggers start no new run "
        "(a schedule or `modelfleet retrain` still may).",
    )
    poll_interval_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often the supervisor checks the schedule and the error rate, in seconds.",
    )

    @field_validator("schedule_daily_at")
    @classmethod
    def _daily(cls, value: str | None) -> str | None:
        if value is not None and not _DAILY_AT.match(value):
            raise ValueError(f"schedule_daily_at {value!r} must be a UTC time HH:MM, e.g. 03:30")
        return value


class RetrainGates(SpecModel):
    """What the new version must show against the current one on the held-out recent data to be promoted."""

    min_accuracy_delta: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="Classifiers with labels: the new version's accuracy minus the current one's must be at "
        "least this (a fraction; 0 = not worse).",
    )
    min_agreement: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Classifiers without labels: the share of held-out items both versions label alike must "
        "be at least this (a fraction).",
    )
    max_error_ratio: float = Field(
        default=1.0,
        gt=0,
        description="Regressors with labels: the new version's mean squared error may be at most the current "
        "one's times this.",
    )
    min_cosine: float = Field(
        default=0.9,
        ge=-1,
        le=1,
        description="Embedders: the mean cosine similarity of both versions' vectors must be at least this.",
    )
    max_p99_latency_ratio: float = Field(
        default=2.0,
        ge=1,
        description="The new version's p99 latency per single-item run may be at most the current one's times "
        "this (plus p99_slack_ms).",
    )
    p99_slack_ms: float = Field(
        default=2.0, ge=0, description="Milliseconds added to the p99 bound, so a fast model's noise passes."
    )
    latency_runs: int = Field(
        default=200,
        ge=10,
        le=100_000,
        description="Single-item runs per version for the latency gate (held-out items, cycled).",
    )


class RetrainConfig(SpecModel):
    """One fleet model's retraining: hook → build → register → gates → rollout (modelfleet.drift.retrain)."""

    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The hook as an argv list (no shell); it reads MODELFLEET_WINDOW_FILE and "
        "MODELFLEET_LABELS_FILE and writes a model source into MODELFLEET_OUTPUT_DIR.",
    )
    entry_point: str | None = Field(
        default=None,
        description="The hook as a Python function `module:function` (no arguments; same environment), run "
        "in a child process with this interpreter.",
    )
    timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="Seconds the hook may run; past it the hook is killed, nothing promoted.",
    )
    labels: str | None = Field(
        default=None,
        description="Labels for the captured window: a JSON-lines file path, or an http(s) URL serving one "
        '(each line {"inputs": {...}, "label": ...}).',
    )
    max_labels_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Largest labels file read, in bytes."
    )
    holdout_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Most recent share of the window held out from the hook and used for the gates.",
    )
    min_window_items: int = Field(
        default=50, ge=2, description="Captured items a run needs at least; fewer is refused (exit 2)."
    )
    max_window_items: int = Field(
        default=100_000, ge=2, description="Most recent captured items a run reads at most."
    )
    alias: str | None = Field(
        default=None,
        description="Alias the new version is promoted to; defaults to the alias of the model's `ref`.",
    )
    triggers: RetrainTriggers = Field(default_factory=RetrainTriggers, description="What starts a run.")
    gates: RetrainGates = Field(default_factory=RetrainGates, description="What the new version must show.")
    rollout: RolloutOptions = Field(
        default_factory=RolloutOptions,
        description="How a passing version is rolled out when the fleet runs (else the alias moves at once).",
    )

    @field_validator("entry_point")
    @classmethod
    def _entry(cls, value: str | None) -> str | None:
        if value is not None and not _ENTRY_POINT.match(value):
            raise ValueError(f"entry_point {value!r} must be `module:function`, e.g. mypackage.train:main")
        return value

    @model_validator(mode="after")
    def _one_hook(self) -> RetrainConfig:
        if (self.command is None) == (self.entry_point is None):
            raise ValueError(
                "retrain: give exactly one of `command` (argv list) or `entry_point` (module:function)"
            )
        if self.min_window_items > self.max_window_items:
            raise ValueError("retrain: min_window_items must not exceed max_window_items")
        return self
