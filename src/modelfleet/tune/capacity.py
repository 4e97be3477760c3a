"""Capacity under the SLO, as a pure policy over an injected ``measure(rate) -> Probe``.

Double the open-loop rate from ``start_rate_per_s`` until a probe fails (or ``max_rate_per_s`` passes),
then bisect between the highest passing and the lowest failing rate until they are within
``resolution`` of each other. When the very first rate fails, halve down to ``min_rate_per_s`` first.
A probe whose generator fell behind (invalid) never counts as a pass: it bounds the search from above
like a failure, and the result says the generator, not the server, set that bound.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Probe:
    """One open-loop load point against one configuration, judged against the SLO."""

    rate_per_s: float
    passed: bool
    valid: bool
    goodput_per_s: float
    throughput_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float
    late_fraction: float
    reason: str = ""  # why it failed; empty when it passed
    latency_ms: float | None = None  # the SLO's latency metric (e.g. p99) as measured
    cpu_percent: float | None = None  # the server's CPU use during the probe, 100 = one core


@dataclass(frozen=True, slots=True)
class CapacityPolicy:
    start_rate_per_s: float
    min_rate_per_s: float
    max_rate_per_s: float
    resolution: float
    max_probes: int


@dataclass(frozen=True, slots=True)
class CapacityResult:
    capacity_per_s: float  # highest passing rate, 0 when none passed
    best: Probe | None  # the probe at that rate
    probes: tuple[Probe, ...]
    at_max: bool  # passed at max_rate_per_s: capacity is at least this
    generator_bound: bool  # an invalid probe set the upper bound


Measure = Callable[[float], Probe]


def search_capacity(
    measure: Measure, policy: CapacityPolicy, start_rate_per_s: float | None = None
) -> CapacityResult:
    """The highest rate at which ``measure`` passes, within ``policy.resolution``."""
    probes: list[Probe] = []
    best: Probe | None = None
    failing: Probe | None = None
    rate = min(max(start_rate_per_s or policy.start_rate_per_s, policy.min_rate_per_s), policy.max_rate_per_s)

    def run(at: float) -> Probe:
        probe = measure(at)
        probes.append(probe)
        return probe

    while len(probes) < policy.max_probes:  # doubling
        probe = run(rate)
        if not probe.passed:
            failing = probe
            break
        best = probe
        if rate >= policy.max_rate_per_s:
            break
        rate = min(rate * 2.0, policy.max_rate_per_s)
    while best is None and failing is not None and len(probes) < policy.max_probes:  # the start failed
        rate = failing.rate_per_s / 2.0
        if rate < policy.min_rate_per_s:
            break
        probe = run(rate)
        if probe.passed:
            best = probe
        else:
            failing = probe
    while (  # bisection
        best is not None
        and failing is not None
        and len(probes) < policy.max_probes
        and (failing.rate_per_s - best.rate_per_s) / failing.rate_per_s > policy.resolution
    ):
        probe = run((best.rate_per_s + failing.rate_per_s) / 2.0)
        if probe.passed:
            best = probe
        else:
            failing = probe
    return CapacityResult(
        capacity_per_s=best.rate_per_s if best else 0.0,
        best=best,
        probes=tuple(probes),
        at_max=best is not None and failing is None and best.rate_per_s >= policy.max_rate_per_s,
        generator_bound=failing is not None and not failing.valid,
    )


@dataclass(frozen=True, slots=True)
class RepeatedCapacity:
    """Several capacity searches of one configuration: the lowest sizes the fleet, the range is the spread."""

    runs: tuple[CapacityResult, ...]
    capacities_per_s: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "capacities_per_s", tuple(r.capacity_per_s for r in self.runs))

    @property
    def capacity_per_s(self) -> float:
        return min(self.capacities_per_s)

    @property
    def median_per_s(self) -> float:
        return statistics.median(self.capacities_per_s)

    @property
    def spread_per_s(self) -> tuple[float, float]:
        return min(self.capacities_per_s), max(self.capacities_per_s)

    @property
    def best(self) -> Probe | None:
        """The passing probe of the run whose capacity sized the fleet."""
        lowest = min(self.runs, key=lambda r: r.capacity_per_s)
        return lowest.best


def repeat_capacity(measure: Measure, policy: CapacityPolicy, repeats: int) -> RepeatedCapacity:
    """``repeats`` searches; after the first, each starts at half the first's capacity (fewer probes)."""
    runs: list[CapacityResult] = [search_capacity(measure, policy)]
    for _ in range(repeats - 1):
        if runs[0].capacity_per_s <= 0:
            break  # nothing passed: repeating the same failures tells nothing new
        runs.append(search_capacity(measure, policy, start_rate_per_s=runs[0].capacity_per_s / 2.0))
    return RepeatedCapacity(tuple(runs))


def closest_probe(probes: Sequence[Probe]) -> Probe | None:
    """The valid probe whose SLO latency came nearest its limit (for 'no configuration meets the SLO')."""
    measured = [p for p in probes if p.valid and p.latency_ms is not None]
    return min(measured, key=lambda p: p.latency_ms or 0.0) if measured else None
