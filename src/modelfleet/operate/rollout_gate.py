"""Whether a canary may advance: its window against the baseline's over the same window. Pure.

The figures are the router's per-version upstream attempts (fleet/split.py), so both versions are
measured by the same clock at the same place, under the same load, and a canary failure the router
retried on the baseline still counts against the canary.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet.config.rollout import RolloutGates
from modelfleet.fleet.split import Window


@dataclass(frozen=True, slots=True)
class Verdict:
    """``passed`` True (advance), False (roll back now) or None (not enough requests yet); why, in words."""

    passed: bool | None
    reason: str


def judge(baseline: Window, canary: Window, gates: RolloutGates) -> Verdict:
    """Compare one window of both versions.

    Errors: the canary's 5xx rate may exceed the baseline's by ``max_error_rate_increase_percent``
    points. Latency: the canary's p99 may be at most the baseline's × ``max_p99_ratio`` + ``p99_slack_ms``,
    judged only when the baseline has ``min_requests`` too. Nothing is judged before the canary has
    ``min_requests``: a p99 or a rate from a handful of requests is noise.
    """
    if canary.requests < gates.min_requests:
        return Verdict(
            None,
            f"the canary has {canary.requests} of the {gates.min_requests} requests a verdict needs "
            "(gates.min_requests)",
        )
    allowed = baseline.error_rate + gates.max_error_rate_increase_percent / 100.0
    if canary.error_rate > allowed:
        return Verdict(
            False,
            f"canary error rate {canary.error_rate:.2%} ({canary.errors} of {canary.requests}) is over the "
            f"baseline's {baseline.error_rate:.2%} + {gates.max_error_rate_increase_percent:g} points "
            "(gates.max_error_rate_increase_percent)",
        )
    if baseline.requests >= gates.min_requests and baseline.p99_s is not None and canary.p99_s is not None:
        bound_s = baseline.p99_s * gates.max_p99_ratio + gates.p99_slack_ms / 1000.0
        if canary.p99_s > bound_s:
            return Verdict(
                False,
                f"canary p99 {canary.p99_s * 1000:.1f} ms is over the baseline's {baseline.p99_s * 1000:.1f} ms "
                f"× {gates.max_p99_ratio:g} + {gates.p99_slack_ms:g} ms (gates.max_p99_ratio, gates.p99_slack_ms)",
            )
    return Verdict(True, "passed")
