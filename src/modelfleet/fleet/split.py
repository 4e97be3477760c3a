"""Traffic split between a model's current version and a canary: pure parts (no sockets, no loop, no clock).

The router keeps one ``Split`` per model under rollout. Each request draws a uniform number in [0, 1)
(passed in, so tests drive the choice): below ``canary_percent`` / 100 it goes to a canary replica, else to
the fleet's own replicas; a second draw below ``shadow_percent`` / 100 also mirrors a baseline request to
the canary. ``ArmFigures`` counts every upstream attempt per version (status and upstream latency) so a
rollout compares the two versions over the same window; ``window`` turns two snapshots into that window.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from modelfleet.fleet.buckets import LATENCY_BUCKETS_S
from modelfleet.fleet.router_config import CanaryRoute
from modelfleet.fleet.routing import Replica, quantile_from_buckets

# The per-version windows keep the default edges: they compare a canary's p99 with its baseline's, both
# counted the same way; the SLO edges matter only to the alert rules, which read the router's own histograms.
BOUNDS_S = (*LATENCY_BUCKETS_S, float("inf"))


class ArmFigures:
    """Upstream attempts of one version: counts by status and a latency histogram (plain ints, one thread)."""

    __slots__ = ("buckets", "by_status", "sum_s")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * len(BOUNDS_S)
        self.sum_s = 0.0

    def observe(self, status: int, elapsed_s: float) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, elapsed_s)] += 1
        self.sum_s += elapsed_s

    def cumulative(self) -> list[int]:
        total, out = 0, []
        for count in self.buckets:
            total += count
            out.append(total)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Cumulative figures, JSON-ready (the router's /fleet/status `splits` section)."""
        return {
            "requests": sum(self.by_status.values()),
            "errors": sum(count for code, count in self.by_status.items() if code >= 500),
            "by_status": {str(code): count for code, count in sorted(self.by_status.items())},
            "buckets": self.buckets.copy(),
            "sum_s": round(self.sum_s, 6),
        }


class ShadowFigures:
    """Mirrored requests and how the canary's answers compared with the baseline's."""

    __slots__ = (
        "agreement_sum",
        "compared",
        "cosine_min",
        "cosine_sum",
        "failed",
        "in_flight",
        "labels_compared",
        "mirrored",
        "not_comparable",
        "skipped",
        "vectors_compared",
    )

    def __init__(self) -> None:
        self.mirrored = self.compared = self.failed = self.skipped = self.not_comparable = 0
        self.in_flight = 0
        self.labels_compared = self.vectors_compared = 0
        self.agreement_sum = self.cosine_sum = 0.0
        self.cosine_min: float | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "mirrored": self.mirrored,
            "compared": self.compared,
            "failed": self.failed,
            "skipped_busy": self.skipped,
            "not_comparable": self.not_comparable,
            "label_agreement": (
                round(self.agreement_sum / self.labels_compared, 6) if self.labels_compared else None
            ),
            "cosine_mean": round(self.cosine_sum / self.vectors_compared, 6)
            if self.vectors_compared
            else None,
            "cosine_min": None if self.cosine_min is None else round(self.cosine_min, 6),
        }


class Split:
    """One model's canary route as the router runs it. Weights change in place; the figures persist."""

    __slots__ = (
        "_canary_set",
        "_turn",
        "baseline",
        "baseline_version",
        "canary",
        "canary_percent",
        "canary_version",
        "model",
        "replicas",
        "shadow",
        "shadow_percent",
    )

    def __init__(self, route: CanaryRoute, replicas: list[Replica]) -> None:
        self.model = route.model
        self.baseline_version = route.baseline_version
        self.canary_version = route.canary_version
        self.canary_percent = route.canary_percent
        self.shadow_percent = route.shadow_percent
        self.replicas = replicas
        self._canary_set = {id(replica) for replica in replicas}
        self.baseline = ArmFigures()
        self.canary = ArmFigures()
        self.shadow = ShadowFigures()
        self._turn = 0

    def update(self, route: CanaryRoute, replicas: list[Replica]) -> None:
        self.canary_percent = route.canary_percent
        self.shadow_percent = route.shadow_percent
        self.replicas = replicas
        self._canary_set = {id(replica) for replica in replicas}

    def to_canary(self, draw: float) -> bool:
        """Whether a request with uniform ``draw`` in [0, 1) goes to the canary."""
        return draw * 100.0 < self.canary_percent

    def to_shadow(self, draw: float) -> bool:
        return draw * 100.0 < self.shadow_percent

    def is_canary(self, replica: Replica) -> bool:
        return id(replica) in self._canary_set

    def arm(self, replica: Replica) -> ArmFigures:
        return self.canary if id(replica) in self._canary_set else self.baseline

    def choose(self) -> Replica | None:
        """The ready canary replica with the fewest requests in flight below its limit; None if none."""
        best: Replica | None = None
        count = len(self.replicas)
        self._turn = (self._turn + 1) % count
        for offset in range(count):
            replica = self.replicas[(self._turn + offset) % count]
            if not replica.ready or replica.outstanding >= replica.limit:
                continue
            if best is None or replica.outstanding < best.outstanding:
                best = replica
        return best

    def snapshot(self) -> dict[str, Any]:
        return {
            "baseline_version": self.baseline_version,
            "canary_version": self.canary_version,
            "canary_percent": self.canary_percent,
            "shadow_percent": self.shadow_percent,
            "canary_ready_replicas": sum(1 for replica in self.replicas if replica.ready),
            "baseline": self.baseline.snapshot(),
            "canary": self.canary.snapshot(),
            "shadow": self.shadow.snapshot(),
        }


@dataclass(frozen=True, slots=True)
class Window:
    """One version's upstream attempts between two snapshots."""

    requests: int
    errors: int
    p99_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def window(before: dict[str, Any] | None, after: dict[str, Any]) -> Window:
    """The attempts between snapshot ``before`` (None: since the split began) and ``after`` of one arm."""
    previous = before or {"requests": 0, "errors": 0, "buckets": [0] * len(BOUNDS_S)}
    buckets = [max(0, now - then) for now, then in zip(after["buckets"], previous["buckets"], strict=True)]
    cumulative, total = [], 0
    for count in buckets:
        total += count
        cumulative.append(total)
    return Window(
        requests=max(0, after["requests"] - previous["requests"]),
        errors=max(0, after["errors"] - previous["errors"]),
        p99_s=quantile_from_buckets(0.99, BOUNDS_S, cumulative),
    )
