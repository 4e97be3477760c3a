"""A rollout's settings: the canary schedule (`fleet rollout` flags) and the gates each step must pass."""

from __future__ import annotations

import itertools

from pydantic import Field, field_validator

from modelfleet.config.base import SpecModel
from modelfleet.errors import InvalidInput


class RolloutGates(SpecModel):
    """What a canary must show against the baseline over the same window to advance."""

    min_requests: int = Field(
        default=50,
        ge=1,
        description="Upstream attempts the canary needs in a window before it is judged (and the baseline, "
        "else the baseline's figures since the rollout began stand in).",
    )
    max_error_rate_increase_percent: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="The canary's 5xx rate may exceed the baseline's by at most this many percentage points.",
    )
    max_p99_ratio: float = Field(
        default=1.5,
        ge=1,
        description="The canary's p99 upstream latency may be at most the baseline's times this (plus p99_slack_ms).",
    )
    p99_slack_ms: float = Field(
        default=5.0,
        ge=0,
        description="Milliseconds added to the p99 bound, so a fast baseline's noise is not a breach.",
    )
    check_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often the rollout reads the router's per-version figures during a step; a breach "
        "rolls back at the first check that sees it.",
    )
    canary_ready_timeout_s: float = Field(
        default=120.0, gt=0, description="How long the canary's server may take to load and become ready."
    )
    apply_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long the router may take to pick up a new split (it re-reads it every health_interval_s).",
    )
    promote_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="After promotion, how long the fleet's replicas may take to serve the new version "
        "(their registry watch_interval_s); the canary keeps its share until they do.",
    )


class RolloutOptions(SpecModel):
    """The schedule of one rollout: canary shares, how long each is held, shadowing."""

    canary_percent: float = Field(
        default=10.0,
        gt=0,
        le=100,
        description="First share of traffic sent to the new version, in percent (`--canary`).",
    )
    steps_percent: list[float] = Field(
        default_factory=lambda: [10.0, 50.0, 100.0],
        min_length=1,
        description="Shares the canary is raised through, in percent, strictly increasing and ending at 100 "
        "(`--steps`); shares at or below canary_percent are skipped.",
    )
    interval_s: float = Field(
        default=60.0, gt=0, description="How long each step is held and judged (`--interval`)."
    )
    shadow_percent: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Share of the baseline's requests mirrored to the new version, in percent (`--shadow`); "
        "with it a shadow step (no client traffic to the canary) runs first.",
    )
    gates: RolloutGates = Field(default_factory=RolloutGates, description="What each step must show.")

    @field_validator("steps_percent")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if any(not 0 < step <= 100 for step in steps):
            raise ValueError("every step must be a share in (0, 100]")
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError("steps must be strictly increasing")
        if steps[-1] != 100:
            raise ValueError("the last step must be 100 (the new version takes all traffic before promotion)")
        return steps

    @property
    def schedule_percent(self) -> list[float]:
        """The canary's shares in order: canary_percent, then every step above it."""
        return [self.canary_percent, *(step for step in self.steps_percent if step > self.canary_percent)]


_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_percent(text: str, flag: str, low_exclusive: bool = True) -> float:
    """``10%`` or ``10`` → 10.0, refusing anything outside (0, 100] (or [0, 100] when not ``low_exclusive``)."""
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{flag} {text!r} is not a share such as 10%") from None
    low_ok = value > 0 if low_exclusive else value >= 0
    if not (low_ok and value <= 100) or value != value:
        bounds = "(0, 100]" if low_exclusive else "[0, 100]"
        raise InvalidInput(f"{flag} {text!r}: a share must be in {bounds} percent")
    return value


def parse_steps(text: str) -> list[float]:
    """``10,50,100`` → [10.0, 50.0, 100.0]: shares in (0, 100], strictly increasing, ending at 100."""
    steps = [parse_percent(part, "--steps") for part in text.split(",") if part.strip()]
    if not steps:
        raise InvalidInput(f"--steps {text!r}: give shares such as 10,50,100")
    for earlier, later in itertools.pairwise(steps):
        if later <= earlier:
            raise InvalidInput(
                f"--steps {text!r}: steps must be strictly increasing ({later:g} after {earlier:g})"
            )
    if steps[-1] != 100:
        raise InvalidInput(
            f"--steps {text!r}: the last step must be 100 (the new version takes all traffic before promotion)"
        )
    return steps


def parse_duration_s(text: str, flag: str) -> float:
    """``60s``, ``2m``, ``500ms``, ``1h`` or a bare number of seconds → seconds (> 0)."""
    raw = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h") if raw.endswith(u)), "")
    try:
        value = float(raw.removesuffix(unit)) * _DURATION_UNITS_S.get(unit, 1.0)
    except ValueError:
        raise InvalidInput(f"{flag} {text!r} is not a duration such as 60s, 2m or 500ms") from None
    if not value > 0:
        raise InvalidInput(f"{flag} {text!r}: a duration must be above 0")
    return value
