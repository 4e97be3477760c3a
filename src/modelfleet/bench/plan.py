"""What the bench runner hands each load-generator process, and what it hears back: the plan of its
points (this process's share of each rate, concurrency and count), the live progress snapshot, and the
hooks for progress and coordinated stops. Split from loadgen.py, which runs a plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from modelfleet.bench.targets import PreparedEndpoint


@dataclass(frozen=True, slots=True)
class PointPlan:
    """One point as one process runs it: rates, concurrencies and counts are this process's share."""

    index: int
    label: str
    loop: Literal["open", "closed"]
    arrival: Literal["constant", "poisson", "none"]
    rate_per_s: float | None
    from_rate_per_s: float
    concurrency: int | None
    duration_s: float | None
    requests: int | None
    ramp_s: float
    warmup_s: float
    picker: Literal["weighted", "cycle"] = "weighted"


@dataclass(frozen=True, slots=True)
class GeneratorPlan:
    endpoints: tuple[PreparedEndpoint, ...]
    points: tuple[PointPlan, ...]
    timeout_s: float
    max_in_flight: int
    window_s: float
    late_send_threshold_s: float
    stability_windows: int
    stability_tolerance: float
    max_windows: int
    track_endpoints: bool
    seed: int
    host: str
    max_retry_wait_s: float | None = 1.0  # closed loop: the longest wait a 503 asks for; None resends at once
    proc_index: int = 0
    procs: int = 1
    requests_csv: str | None = None


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """A live snapshot for progress displays."""

    proc: int
    point_index: int
    point_label: str
    phase: str  # warmup, measure, drain
    elapsed_s: float
    sent: int
    ok: int
    errors: int
    in_flight: int
    window_rate_per_s: float | None
    window_p99_ms: float | None


@dataclass(slots=True)
class Hooks:
    """How a generator talks to whoever runs it.

    With several processes, process 0 leads: it decides when a run-until-stable point is stable
    (``announce_stop(point_index)``) and the others stop when ``stop_requested(point_index)`` says so.
    """

    progress: Callable[[ProgressSnapshot], None] | None = None
    stop_requested: Callable[[int], bool] = field(default=lambda index: False)
    announce_stop: Callable[[int], None] = field(default=lambda index: None)
    leader: bool = True
